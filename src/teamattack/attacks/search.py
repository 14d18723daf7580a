"""Radius searches: the smallest budget C at which a candidate generator succeeds.

`evaluate(radii (B, K)) -> (candidates (B, K, ...), success (B, K))` produces one candidate per
radius and judges all of them with ONE batched forward pass of the true network. The searches only
decide which radii to ask for:

- `paper_schedule`: the papers' C = start, start + step, ... until the first success.
- `bracket_and_refine` (default): K log-spaced radii in [lo, hi] at once, then rounds of K radii
  inside the bracket [last failure, first success]: the bracket shrinks by K + 1 per round.

Success need not be monotone in C: both return the smallest radius at which success was SEEN.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Evaluate = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SearchResult:
    x_adv: torch.Tensor      # (B, ...) best candidate (the first-success one, else the last tried)
    radius: torch.Tensor     # (B,) radius of x_adv (NaN where no radius succeeded)
    success: torch.Tensor    # (B,) bool
    evaluations: int         # number of radii asked for per example


class _Best:
    def __init__(self, x: torch.Tensor) -> None:
        B = x.shape[0]
        self.x = x.clone()
        self.radius = torch.full((B,), float("nan"), device=x.device)
        self.success = torch.zeros(B, dtype=torch.bool, device=x.device)

    def update(self, radii: torch.Tensor, cands: torch.Tensor, ok: torch.Tensor) -> None:
        """Keep, per example, the successful candidate of the smallest radius."""
        r = torch.where(ok, radii, torch.full_like(radii, float("inf")))
        rmin, idx = r.min(dim=1)
        found = torch.isfinite(rmin)
        better = found & (~self.success | (rmin < self.radius))
        if better.any():
            pick = cands[torch.arange(len(idx), device=idx.device), idx]
            self.x[better] = pick[better]
            self.radius[better] = rmin[better].to(self.radius.dtype)
            self.success |= found


def paper_schedule(evaluate: Evaluate, x: torch.Tensor, start: float, step: float, stop: float,
                   per_pass: int = 8, integer: bool = False) -> SearchResult:
    """C = start, start + step, ... <= stop; every example stops at its first success."""
    B = x.shape[0]
    best = _Best(x)
    grid = torch.arange(start, stop + 1e-9, step, device=x.device, dtype=torch.float64)
    if integer:
        grid = grid.round()
    asked = 0
    for i in range(0, len(grid), per_pass):
        todo = ~best.success
        if not todo.any():
            break
        radii = grid[i:i + per_pass].to(x.dtype).expand(B, -1).contiguous()
        cands, ok = evaluate(radii)
        asked += radii.shape[1]
        ok = ok & todo[:, None]
        best.update(radii, cands, ok)
        if i + per_pass >= len(grid):
            last = cands[:, -1]
            best.x[~best.success] = last[~best.success]
    return SearchResult(best.x, best.radius, best.success, asked)


def bracket_and_refine(evaluate: Evaluate, x: torch.Tensor, lo: float | torch.Tensor, hi: float | torch.Tensor,
                       per_pass: int = 8, rounds: int = 3, integer: bool = False) -> SearchResult:
    """Log-spaced bracketing in [lo, hi], then `rounds` rounds of `per_pass` radii in the bracket."""
    B = x.shape[0]
    dev = x.device
    lo_t = torch.as_tensor(lo, dtype=torch.float64, device=dev).expand(B).clone()
    hi_t = torch.as_tensor(hi, dtype=torch.float64, device=dev).expand(B).clone()
    best = _Best(x)
    frac = torch.linspace(0, 1, per_pass, device=dev, dtype=torch.float64)
    radii = torch.exp(torch.log(lo_t)[:, None] + frac[None] * (torch.log(hi_t) - torch.log(lo_t))[:, None])
    if integer:
        radii = radii.round().clamp_min(1)
    cands, ok = evaluate(radii.to(x.dtype))
    asked = per_pass
    best.update(radii, cands, ok)
    best.x[~best.success] = cands[:, -1][~best.success]
    # bracket: [largest failing radius below the first success, first success]
    fail_below = torch.where(~ok & (radii < best.radius.double()[:, None]), radii, torch.zeros_like(radii)).amax(1)
    left, right = fail_below, best.radius.double()
    for _ in range(rounds):
        active = best.success & (right - left > (1.0 if integer else 1e-4) * right.clamp_min(1e-12))
        if not active.any():
            break
        inner = torch.linspace(0, 1, per_pass + 2, device=dev, dtype=torch.float64)[1:-1]
        l_ = torch.where(active, left, right)
        radii = l_[:, None] + inner[None] * (right - l_)[:, None]
        if integer:
            radii = radii.round().clamp_min(1)
        cands, ok = evaluate(radii.to(x.dtype))
        asked += per_pass
        ok = ok & active[:, None]
        best.update(radii, cands, ok)
        new_right = best.radius.double()
        new_left = torch.where(~ok & (radii < new_right[:, None]), radii, torch.zeros_like(radii)).amax(1)
        left = torch.where(active, torch.maximum(left, new_left), left)
        right = torch.where(active, new_right, right)
    return SearchResult(best.x, best.radius, best.success, asked)
