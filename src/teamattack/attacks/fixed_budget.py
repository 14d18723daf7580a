"""TEAM with a fixed budget eps (L2 or Linf): the boundary walk, then two ascents inside the ball.

A fixed-budget attack answers "is there an adversarial example within eps?". TEAM answers it in
three phases that share one gradient budget per image (walk + `steps` + 2 <= 100, APGD-CE-100's):

1. The minimum-norm boundary walk (TEAM's default mode) finds, per image, a verified adversarial
   point at distance r. Where r <= eps the image is broken and its point is returned as it is; the
   walk lets an image go as soon as it holds such a point (`boundary_walk(stop_at=eps)`), so at
   budgets that break most images the walk costs a few gradients per image, not its full length.
2. The others start from the walk's point pulled into the eps-ball (Linf: clipped, which keeps
   the sign pattern of the walk's perturbation; L2: scaled toward x), which lies close to the
   boundary the walk found, and climb the margin loss (the largest other logit minus the true
   one; targeted: the target's logit minus the largest other) inside the ball and the [0, 1] box
   with APGD's step rule (Croce & Hein 2020: momentum 0.75, step size halved at checkpoints where
   too few steps improved, a restart from the best point), for up to WARM_STEPS of the `steps`.
   Its first step is WARM_STEP x eps, not APGD's 2 eps: the start lies next to the boundary, and a
   step of 2 eps jumps off it (tests/test_fixed_budget.py has a model where it does). An image
   leaves as soon as the network calls it adversarial, or at a checkpoint where its best margin has
   not improved since the previous one (stuck in a local maximum of the margin).
3. Images that gave up climb APGD-CE's loss (the cross-entropy of y; targeted: minus that of the
   target; logits divided by `ce_temperature`, 1 unless the softmax would underflow in float32,
   as on a defensively distilled model) from a fixed pseudo-random point of the ball, with the
   steps they have left: the cross-entropy sees every class through the softmax where the margin
   follows only the runner-up (tests/test_fixed_budget.py has a model on which the margin cannot
   move and the CE breaks it).

Every point returned as adversarial was verified by a forward pass of the network; points that
are not adversarial are the margin ascent's best point, inside the ball and the box. Images that
break early leave, so the average cost per image is below the budget.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..counting import CountingModel

WalkFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]

# The default split of the budget (docs/results/fixed-budget-*.md): a short screened walk
# (3 starts x 8 steps, the best walking 22 more: 46 gradients) and 50 ascent steps shared by the
# two ascents (52 gradients): at most 98 per image, APGD-CE-100 takes 101.
WALK_STEPS, WALK_STARTS, WALK_SCREEN, ASCENT_STEPS = 30, 3, 8, 50

# The margin ascent from the walk's point: at most WARM_STEPS of the ascent steps (its first
# checkpoint, where a stuck image gives up, after 5), first step WARM_STEP x eps. The point lies next
# to the boundary the walk found: APGD's first step of 2 eps, made for a start at x, jumps off it.
WARM_STEPS, WARM_STEP = 20, 0.25
MOMENTUM = 0.75  # APGD's alpha
RHO = 0.75       # APGD's fraction of improving steps below which the step size halves
LOSSES = ("margin", "ce")
# The cross-entropy ascent divides each example's logits by `ce_temperature`: the spread of its
# logits (largest minus smallest) is brought down to CE_SPREAD where it is larger, so that no
# class's softmax probability underflows in float32 (exp(-80) = 1.8e-35; the smallest normal
# float32 is 1.2e-38). The zoo's models stay at T = 1; a defensively distilled one does not
# (the spreads measured: docs/engine.md, "Modes").
CE_SPREAD = 80.0


def _view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (x.dim() - 1))


def _size(d: torch.Tensor, norm: str) -> torch.Tensor:
    return torch.linalg.vector_norm(d.reshape(d.shape[0], -1), ord=2 if norm == "l2" else float("inf"), dim=1)


def project(x: torch.Tensor, x_new: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x_new pulled into the eps-ball around x (Linf: clipped; L2: scaled), then into [0, 1].

    The box clip only shortens the perturbation (x lies in the box), so the result stays in the ball.
    """
    d = x_new - x
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = _size(d, "l2").clamp_min(1e-12)
        d = d * _view(torch.clamp(eps / n, max=1.0), d)
    return (x + d).clamp(0.0, 1.0)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per example, > 0 exactly where the example is adversarial (untargeted: misclassified;
    targeted: classified as the target); the quantity the ascent maximises."""
    anchor = y if target is None else target
    za = logits.gather(1, anchor[:, None])[:, 0]
    zo = logits.scatter(1, anchor[:, None], float("-inf")).max(1).values
    return zo - za if target is None else za - zo


def ce_temperature(logits: torch.Tensor) -> torch.Tensor:
    """Per example, the temperature T >= 1 that brings the spread of its logits (largest minus
    smallest) down to CE_SPREAD: T = 1 wherever the spread is at most that (the zoo's models), so
    the cross-entropy there is APGD-CE's. On a defensively distilled model the spread is in the
    hundreds, the softmax is 1.0 in float32 and the cross-entropy's gradient exactly 0; at T
    it is not (Carlini & Wagner 2016 divide the logits by the distillation temperature)."""
    spread = logits.max(1).values - logits.min(1).values
    return (spread / CE_SPREAD).clamp_min(1.0)


def _ce_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per example: the cross-entropy of y (untargeted) or minus that of the target (targeted)."""
    if target is None:
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")
    return -torch.nn.functional.cross_entropy(logits, target, reduction="none")


def _noise(x0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """A fixed pseudo-random start offset of size eps (the same for every image: batch independent)."""
    g = torch.Generator().manual_seed(0)
    if norm == "linf":
        return (eps * (2 * torch.rand(x0.shape, generator=g) - 1)).to(x0)
    t = torch.randn(x0.shape, generator=g)
    return (eps * t / t.norm()).to(x0)


def _checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints w_j = ceil(p_j * steps): p = 0, 0.22, then gaps shrinking by 0.03 to 0.06."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    w = (math.ceil(q * steps - 1e-9) for q in p[1:])
    return sorted({v for v in w if v < steps})


def _schedule(steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example with `steps` (B,) ascent steps: at[b, k], whether k + 1 is one of its checkpoints
    (`_checkpoints`), and span[b, k], the steps since its previous checkpoint (B, max steps) each."""
    K = int(steps.max())
    at = torch.zeros((len(steps), K), dtype=torch.bool, device=steps.device)
    span = torch.zeros((len(steps), K), device=steps.device)
    for n in steps.unique().tolist():
        rows, last = steps == n, 0
        for c in _checkpoints(n):
            at[rows, c - 1] = True
            span[rows, c - 1] = c - last
            last = c
    return at, span


class Budget(NamedTuple):
    """`fixed_budget`'s result per example: the point (inside eps and the box), whether the network
    called it adversarial, and the walk's distance (its verified minimum-norm point's; NaN: none)."""

    points: torch.Tensor
    adversarial: torch.Tensor
    walk_distance: torch.Tensor


class Ascent(NamedTuple):
    """`ascent`'s result per example: the point, whether it is adversarial, the gradients taken."""

    points: torch.Tensor
    adversarial: torch.Tensor
    gradients: torch.Tensor


def ascent(
    model: CountingModel,
    x: torch.Tensor,
    start: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    *,
    eps: float,
    norm: str,
    steps: int | torch.Tensor,
    loss: str = "margin",
    stall: bool = False,
    step: float = 2.0,
) -> Ascent:
    """APGD-style ascent of `loss` inside the eps-ball and the box, from `start`.

    loss: "margin" (`margin_loss`) or "ce" (the cross-entropy of y, untargeted; minus that of the
    target, targeted: APGD-CE's loss). For each example: its first verified adversarial point
    (judged by the margin of the same logits), or the highest-loss point seen; and the gradients it
    took, 1 + `steps` at most: an example stops once adversarial and, with `stall`, at a checkpoint
    where its best loss has not improved since the previous one (stuck: its budget is better spent
    elsewhere, `fixed_budget`). step: the first step's size in units of eps (APGD's: 2).
    steps: one number, or one per example (B,): each example follows the schedule of its own
    number of steps (its checkpoints, `_checkpoints`), as if it ran alone.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    use_ce = loss == "ce"
    B = x.shape[0]
    dev = x.device
    out = start.clone()
    adv = torch.zeros(B, dtype=torch.bool, device=dev)
    n_steps = torch.as_tensor(steps, dtype=torch.long, device=dev).expand(B).clamp_min(0)
    used = torch.where(n_steps > 0, 1 + n_steps, 0)
    idx = (n_steps > 0).nonzero().squeeze(1)   # examples without steps keep their start, untouched
    if not idx.numel():
        return Ascent(out, adv, used)
    at_ckpt, span = _schedule(n_steps[idx])
    n_steps = n_steps[idx]
    sub = lambda t, i: None if t is None else t[i]

    temp = torch.ones(B, device=dev, dtype=x.dtype)   # the cross-entropy's, from the start's logits
    first = [True]

    def loss_grad(p: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = p.detach().requires_grad_(True)
        logits = model(p)
        if first:   # the first call: every example that takes steps
            temp[idx] = ce_temperature(logits.detach())
            first.clear()
        m = margin_loss(logits, y[idx], sub(target, idx))
        value = _ce_loss(logits / temp[idx, None], y[idx], sub(target, idx)) if use_ce else m
        (g,) = torch.autograd.grad(value.sum(), p)
        return value.detach(), m.detach() > 0, g

    def direction(g: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return g.sign()
        # a float32 gradient of 1e-30 still points somewhere (ce_temperature), but its squares
        # underflow: such rows are scaled by their largest entry before the norm
        n, top = _size(g, "l2"), g.flatten(1).abs().amax(1)
        under = (n == 0) & (top > 0)
        if bool(under.any()):
            g = torch.where(_view(under, g), g / _view(torch.where(under, top, torch.ones_like(top)), g), g)
            n = _size(g, "l2")
        return torch.where(_view(n > 0, g), g / _view(torch.where(n > 0, n, torch.ones_like(n)), g), torch.zeros_like(g))

    cur = start[idx].clone()
    val, hit, g = loss_grad(cur, idx)
    best, best_loss, best_g = cur.clone(), val.clone(), g.clone()
    prev = cur.clone()
    eta = torch.full((len(idx),), step * eps, device=dev, dtype=x.dtype)
    improved = torch.zeros(len(idx), device=dev)
    best_at_ckpt, eta_at_ckpt = best_loss.clone(), eta.clone()
    stuck = torch.zeros(len(idx), dtype=torch.bool, device=dev)
    for k in range(int(n_steps.max()) + 1):
        if hit.any():  # verified adversarial (the loss came from the network's own logits)
            out[idx[hit]] = cur[hit].detach()
            adv[idx[hit]] = True
        ended = (n_steps == k) & ~hit & ~stuck     # its steps are spent: its best point
        if stuck.any() or ended.any():
            out[idx[stuck | ended]] = best[stuck | ended]
        keep = ~hit & ~stuck & ~ended
        used[idx[~keep]] = 1 + k
        if not keep.any():
            break
        if not keep.all():
            idx, cur, prev, g, val = idx[keep], cur[keep], prev[keep], g[keep], val[keep]
            best, best_loss, best_g = best[keep], best_loss[keep], best_g[keep]
            eta, improved = eta[keep], improved[keep]
            best_at_ckpt, eta_at_ckpt = best_at_ckpt[keep], eta_at_ckpt[keep]
            stuck, n_steps, at_ckpt, span = stuck[keep], n_steps[keep], at_ckpt[keep], span[keep]
        xs = x[idx]
        z = project(xs, cur + _view(eta, cur) * direction(g), eps, norm)
        if k > 0:
            z = project(xs, cur + MOMENTUM * (z - cur) + (1 - MOMENTUM) * (cur - prev), eps, norm)
        new_loss, hit, new_g = loss_grad(z, idx)
        improved += (new_loss > val).float()
        better = new_loss > best_loss
        prev, cur, val, g = cur, z.detach(), new_loss, new_g
        best[better], best_loss[better], best_g[better] = cur[better], val[better], g[better]
        at = at_ckpt[:, k]   # examples at a checkpoint of their schedule after this step
        if at.any():
            no_gain = best_loss <= best_at_ckpt
            if stall:
                stuck = at & no_gain & ~hit
            halve = ((improved < RHO * span[:, k]) | ((eta == eta_at_ckpt) & no_gain)) & ~hit & at
            if halve.any():  # smaller steps, restarted from the best point
                eta = torch.where(halve, eta / 2, eta)
                h = _view(halve, cur)
                cur, prev = torch.where(h, best, cur), torch.where(h, best, prev)
                g, val = torch.where(h, best_g, g), torch.where(halve, best_loss, val)
            improved = torch.where(at, torch.zeros_like(improved), improved)
            best_at_ckpt = torch.where(at, best_loss, best_at_ckpt)
            eta_at_ckpt = torch.where(at, eta, eta_at_ckpt)
    return Ascent(out, adv, used)


def fixed_budget(
    model: CountingModel,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    *,
    norm: str,
    eps: float,
    walk: WalkFn,
    steps: int,
    ascend_within: float | None = None,
) -> Budget:
    """Adversarial examples within eps (L2 or Linf) and the box: the walk, then two ascents sharing
    `steps` + 2 gradients per image (see the module docstring).

    walk(x, y, target) -> (points, distances): TEAM's minimum-norm walk (NaN distance: none found).
    ascend_within: only the images whose walk ended within this distance (or found nothing) climb;
    the others keep x (the target sweep's targeted phase, `TEAM.target_sweep`).
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"fixed_budget works in L2 or Linf, got {norm!r}")
    goal_t = (lambda i: None) if target is None else (lambda i: target[i])
    pts, dist = walk(x, y, target)
    found = torch.isfinite(dist)
    inside = found & (_size(pts - x, norm) <= eps)
    out = torch.where(_view(inside, x), pts, x)
    adv = inside.clone()
    rest = (~inside).nonzero().squeeze(1)
    if ascend_within is not None:
        rest = rest[~(dist[rest] > ascend_within)]
    if not rest.numel():
        return Budget(out, adv, dist)
    # the margin ascent from the walk's point pulled into the ball; a stuck image gives up early
    start = project(x[rest], torch.where(_view(found[rest], x[rest]), pts[rest], x[rest]), eps, norm)
    res = ascent(model, x[rest], start, y[rest], goal_t(rest), eps=eps, norm=norm,
                 steps=min(steps, WARM_STEPS), stall=True, step=WARM_STEP)
    out[rest] = res.points
    adv[rest] = res.adversarial
    left = (1 + steps) - res.gradients            # cross-entropy steps left (its first gradient aside)
    keep = ~res.adversarial & (left > 0)
    rest, left = rest[keep], left[keep]
    # the cross-entropy ascent (APGD-CE's loss) from a fixed pseudo-random point of the ball, with
    # each image's remaining budget (one batch; each image keeps the schedule of its own budget)
    if rest.numel():
        start = project(x[rest], x[rest] + _noise(x[0], eps, norm), eps, norm)
        res = ascent(model, x[rest], start, y[rest], goal_t(rest), eps=eps, norm=norm, steps=left, loss="ce")
        out[rest[res.adversarial]] = res.points[res.adversarial]
        adv[rest] = res.adversarial
    return Budget(out, adv, dist)
