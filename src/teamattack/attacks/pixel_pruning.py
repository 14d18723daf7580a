"""L0 clean-up on the true network: reset the changed pixels the adversarial example does not need.

The L0 subproblem (`subproblems.l0_search`) picks pixels on the quadratic model, which is exact
only near the expansion point; the network often needs fewer. Each round takes the gradient of
the decision margin at the adversarial point, scores every changed pixel position by the
first-order change of the margin if that position went back to x (its change dotted with the
gradient, summed over channels), sorts the positions by it, and bisects on the TRUE network for
the longest prefix of the cheapest positions that can go back at once with the example still
adversarial. Rounds repeat with a fresh gradient until a round resets nothing. Only verified
adversarial points are kept, so the result is never worse than the input.

What it buys is measured in docs/engine.md (L0 section).
"""
from __future__ import annotations

import math

import torch

from ..goal import Goal


def prune_pixels(
    model,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    rounds: int = 4,
) -> torch.Tensor:
    """x_adv with as many changed pixel positions reset to x as the network allows.

    groups: coordinate -> pixel position (colour images: one position for all channels); None:
    every coordinate is a position. Rows of x_adv that are not adversarial are returned unchanged.
    Cost per round: one gradient and ceil(log2(P + 1)) forward passes per example (P positions).
    """
    B = x.shape[0]
    xf, af = x.reshape(B, -1), x_adv.reshape(B, -1).clone()
    n = xf.shape[1]
    pos = groups if groups is not None else torch.arange(n, device=x.device)
    P = int(pos.max()) + 1

    goal = Goal(y, target)

    def adversarial(flat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return goal.margin(model(flat.reshape(x.shape))) < 0

    active = adversarial(af)
    for _ in range(int(rounds)):
        if not bool(active.any()):
            break
        p = af.reshape(x.shape).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(goal.margin(model(p)).sum(), p)
        delta = af - xf
        # the margin's first-order change if each position went back to x, and which positions moved
        cost = torch.zeros(B, P, device=x.device, dtype=x.dtype).index_add_(1, pos, -(g.reshape(B, -1) * delta))
        moved = torch.zeros(B, P, device=x.device, dtype=x.dtype).index_add_(1, pos, delta.abs()) > 0
        cost = torch.where(moved, cost, torch.full_like(cost, float("inf")))
        rank = torch.empty_like(cost, dtype=torch.long)
        rank.scatter_(1, cost.argsort(1), torch.arange(P, device=x.device).expand(B, P))
        lo = torch.zeros(B, dtype=torch.long, device=x.device)          # resetting lo positions: verified
        hi = torch.where(active, moved.sum(1), lo)
        for _ in range(math.ceil(math.log2(P + 1))):
            mid = (lo + hi + 1) // 2
            cand = torch.where((rank < mid[:, None])[:, pos], xf, af)
            ok = adversarial(cand) & (mid > lo)
            lo = torch.where(ok, mid, lo)
            hi = torch.where(ok | (mid <= lo), hi, mid - 1)
        af = torch.where((rank < lo[:, None])[:, pos], xf, af)
        active = active & (lo > 0)
    return af.reshape(x.shape)
