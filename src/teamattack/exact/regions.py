"""ReLU networks: an attack's point improved by an exact search over the neighbouring linear regions.

A minimum-norm attack on a ReLU network ends on a boundary point that is optimal in its own
linear region (the walk solves that region's problem exactly) but not always globally: the
optimum can sit a few ReLU switches away (docs/bench.md, "The L2 judge"). `region_search` takes
the attack's point p and repeats: fix the phase of every hidden unit to its phase at p except the
`free` units nearest to switching (the smallest |pre-activation| relative to its bound's width),
solve the resulting small problem exactly (L2: a branch and bound over the free units, each node
the exact QP of `bnb.PhaseQP`; Linf: a MILP with only those binaries, HiGHS), and move to its point
if it is closer; until a round does not improve. Every phase fixing describes a set of true
network points, so every point found is adversarial (a 1e-5 logit margin across the boundary, as
the branch and bound's points) and never further than p. It is a local search: its result is not
proven optimal (the exact solvers are `miqp.min_l2_relu`, `milp.min_linf_relu`).

`polish(model, x, y, target, x_adv, norm)` is the tensor-level entry TEAM's min-norm mode calls
on the ReLU networks `applies` accepts (`TEAM(..., polish=...)`, docs/engine.md): the points it
returns are checked by a fresh forward pass of the model and kept only where they are adversarial
and closer.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .bnb import INSIDE, Frontier, PhaseQP, explore, goal_margin
from .encoding import encode
from .relu import INF, NotApplicable, forward_np, layer_bounds, leaves, relu_layers

FREE = 8             # units left free per round (2^FREE phase patterns at most, most pruned)
# `polish`'s (free, classes) per norm, chosen on the digits and MNIST MLPs (docs/bench.md): in Linf the
# optimum is more often another class's region, and further from the attack's point; a round tries
# 8 free units first and more only where that finds nothing closer (the MILP grows with them)
SETTINGS = {"l2": ((FREE,), 1), "linf": ((8, 16, 24), 3)}
ROUNDS = 10          # rounds at most (each moves to a closer point or stops)
MAX_NODES = 500      # QPs per L2 round (a deterministic cap; the rounds of docs/bench.md take < 100)
MAX_UNITS = 4096     # `applies`: hidden units at most (the problems have a row per unit)
_LINF_SECONDS = 30.0  # HiGHS time limit of one Linf round: a guard (digits rounds take a fraction of a second,
#                      MNIST-MLP rounds that improve 2-5 s; a wall-clock limit, so keep it well above those)
_AFFINE = (nn.Linear, nn.Conv2d, nn.Flatten)


@dataclass(frozen=True)
class RegionSearch:
    """One image's search: the point (flattened, float64), its distance, rounds that improved."""

    x: np.ndarray
    distance: float
    improved: int


@dataclass(frozen=True)
class Polished:
    """A batch after `polish`: the points, their distances, which rows moved, and the time spent."""

    x_adv: torch.Tensor
    distance: torch.Tensor
    moved: torch.Tensor        # bool per row: a closer adversarial point was found and verified
    seconds: float


def applies(model: nn.Module, x_shape: tuple[int, ...] | None = None, max_units: int = MAX_UNITS) -> bool:
    """Whether `polish` handles this model: an nn.Sequential of Linear / Conv2d / Flatten / ReLU,
    and with `x_shape`, at most `max_units` hidden units (a cheap check; no Jacobian is built)."""
    mods = leaves(model) if isinstance(model, nn.Sequential) else []
    if not mods or not all(isinstance(m, (*_AFFINE, nn.ReLU)) for m in mods):
        return False
    if not any(isinstance(m, nn.ReLU) for m in mods):
        return False
    if x_shape is None:
        return True
    p = next(model.parameters())
    units, h = 0, torch.zeros((1, *x_shape), dtype=p.dtype, device=p.device)
    with torch.no_grad():
        for m in mods:
            h = m(h)
            if isinstance(m, nn.ReLU):
                units += h[0].numel()
    return units <= max_units


def _pre(layers, p: np.ndarray) -> list[np.ndarray]:
    return forward_np(layers, p)[:-1]


def _free_units(unstable, pre, bounds, free: int) -> set[int]:
    """Indices (into `unstable`) of the `free` units nearest to switching at the point."""
    score = np.array([abs(pre[k][i]) / max(bounds[k][1][i] - bounds[k][0][i], 1e-12) for k, i, *_ in unstable])
    return set(np.argsort(score, kind="stable")[:free].tolist())


def _goal_classes(layers, x0: np.ndarray, p: np.ndarray, y: int, target: int | None, classes: int) -> list[int]:
    """The classes a round aims at: the target; untargeted, the class p reached, then the strongest
    other classes at x0 (`classes` in all)."""
    if target is not None:
        return [target]
    out = [int(np.argmax(np.where(np.arange(len(z := forward_np(layers, p)[-1])) == y, -np.inf, z)))]
    z0 = forward_np(layers, x0)[-1]
    for j in np.argsort(-z0, kind="stable").tolist():
        if len(out) >= classes:
            break
        if j != y and j not in out:
            out.append(int(j))
    return out


def _round_l2(layers, x0, y, target, c, p, best, free, max_nodes):
    """One L2 round around p: (point, distance) of the best point found, or None."""
    rad = best * (1 + 1e-4)
    lo, hi = np.maximum(0.0, x0 - rad), np.minimum(1.0, x0 + rad)
    bounds = layer_bounds(layers, lo, hi, lp=False, ball=(x0, rad))
    qp = PhaseQP(layers, bounds, x0, lo, hi, c)
    pre = _pre(layers, p)
    keep = _free_units(qp.unstable, pre, bounds, free)
    fix = {idx: int(pre[k][i] >= 0) for idx, (k, i, *_) in enumerate(qp.unstable) if idx not in keep}
    front = explore(Frontier(best ** 2, None, [(0.0, 0, c, fix)]), {c: qp}, layers, x0, lo, hi, y, target,
                    stop=lambda f: f.nodes >= max_nodes)
    return None if front.x_inc is None else (front.x_inc, float(np.sqrt(front.inc2)))


def _round_linf(layers, x0, y, target, c, p, best, free):
    """One Linf round around p: a MILP whose only binaries are the free units' phases."""
    from .milp import solve_highs

    lo, hi = np.maximum(0.0, x0 - best), np.minimum(1.0, x0 + best)
    bounds = layer_bounds(layers, lo, hi, lp=False)
    enc = encode(layers, bounds, x0, lo, hi, y, target)
    if enc is None:
        return None
    pre = _pre(layers, p)
    unstable = [(k, int(i), enc.d_offs[k] + t) for k, us in enumerate(enc.unstable) for t, i in enumerate(us)]
    keep = _free_units(unstable, pre, bounds, free)
    lb, ub = enc.lb.copy(), enc.ub.copy()
    for idx, (k, i, col) in enumerate(unstable):
        if idx not in keep:
            lb[col] = ub[col] = float(pre[k][i] >= 0)
    if enc.s_off is not None:   # untargeted: the goal class c
        if c not in enc.classes:
            return None
        for t, j in enumerate(enc.classes):
            lb[enc.s_off + t] = ub[enc.s_off + t] = float(j == c)
    enc.lb, enc.ub = lb, ub
    n, k_eps = enc.n, enc.nvar
    WL, bL = layers[-1]
    last = np.arange(enc.act_offs[-2], enc.act_offs[-1])
    rivals = [y] if target is None else [j for j in range(len(bL)) if j != c]

    def rows(r):
        for j in range(n):
            r.add([j, k_eps], [1.0, -1.0], -INF, x0[j])
            r.add([j, k_eps], [1.0, 1.0], x0[j], INF)
        for j in rivals:   # strictly across the boundary, as the L2 points
            r.add(last, WL[c] - WL[j], -(bL[c] - bL[j]) + INSIDE, INF)

    cost = np.zeros(enc.nvar + 1)
    cost[k_eps] = 1.0
    start = np.r_[enc.point(p), best]
    r = solve_highs(enc, np.array([0.0]), np.array([best]), rows, cost, start, _LINF_SECONDS, 1e-9)
    if r["x"] is None:
        return None
    cand = np.clip(r["x"][:n], lo, hi)
    d = float(np.abs(cand - x0).max())
    if d >= best * (1 - 1e-9) or goal_margin(layers, cand, y, target) < 0:
        return None
    return cand, d


def region_search(layers, x0: np.ndarray, y: int, target: int | None, start: np.ndarray, norm: str,
                  free: int | tuple[int, ...] = FREE, rounds: int = ROUNDS, classes: int = 1,
                  max_nodes: int = MAX_NODES) -> RegionSearch:
    """Improve the adversarial point `start` of the ReLU net `layers` (`relu.relu_layers`) in
    `norm` ("l2" | "linf") by exact searches over the phases of its `free` least settled units.

    `free`: a count, or growing counts tried in turn where the smaller finds nothing closer.
    Untargeted, a round aims at the class the current point reached and, where that does not
    improve, at the next of the `classes` - 1 strongest other classes at x0 (from the same point:
    their regions border it where the logits tie)."""
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    levels = (free,) if isinstance(free, int) else tuple(free)
    dist = (lambda v: float(np.linalg.norm(v - x0))) if norm == "l2" else (lambda v: float(np.abs(v - x0).max()))
    p, best, improved = start, dist(start), 0
    for _ in range(rounds):
        if best <= 0:
            break
        out = None
        for k, c in itertools.product(levels, _goal_classes(layers, x0, p, y, target, classes)):
            if norm == "l2":
                out = _round_l2(layers, x0, y, target, c, p, best, k, max_nodes)
            else:
                out = _round_linf(layers, x0, y, target, c, p, best, k)
            if out is not None and out[1] < best * (1 - 1e-6):
                break
            out = None
        if out is None:
            break
        p, best = out
        improved += 1
    return RegionSearch(p, best, improved)


def polish(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
           x_adv: torch.Tensor, norm: str, free: int | tuple[int, ...] | None = None, rounds: int = ROUNDS,
           classes: int | None = None, layers=None) -> Polished:
    """`region_search` on every row of `x_adv` that is adversarial; a row's new point is kept where
    a fresh forward pass of `model` finds it adversarial and it is closer than the old one.

    free, classes: default per norm (`SETTINGS`). layers: `relu.relu_layers(model, ...)` when the
    caller has it (or `model` is a wrapper, e.g. a CountingModel, whose forward passes should count).
    Raises NotApplicable when `model` is not a ReLU network of the class `relu.relu_layers` accepts.
    """
    from ..goal import Goal

    t0 = time.perf_counter()
    if norm not in SETTINGS:
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    free = SETTINGS[norm][0] if free is None else free
    classes = SETTINGS[norm][1] if classes is None else classes
    if layers is None:
        layers = relu_layers(model, tuple(x.shape[1:]), x.device)
    goal = Goal(y, target)
    N = x.shape[0]
    flat = lambda t: t.detach().reshape(N, -1).double().cpu().numpy()
    xs, ps = flat(x), flat(x_adv)
    order = 2 if norm == "l2" else float("inf")
    with torch.no_grad():
        ok = goal.reached(model(x_adv))
    old = (x_adv - x).reshape(N, -1).norm(p=order, dim=1)
    cand = x_adv.detach().clone()
    for i in torch.nonzero(ok).flatten().tolist():
        ti = None if target is None else int(target[i])
        r = region_search(layers, xs[i], int(y[i]), ti, ps[i], norm, free, rounds, classes)
        if r.improved:
            cand[i] = torch.from_numpy(r.x).to(device=x.device, dtype=x.dtype).reshape(x.shape[1:])
    with torch.no_grad():
        adv = goal.reached(model(cand))
    new = (cand - x).reshape(N, -1).norm(p=order, dim=1)
    moved = ok & adv & (new < old)
    view = (-1,) + (1,) * (x.dim() - 1)
    out = torch.where(moved.reshape(view), cand, x_adv)
    return Polished(out, torch.where(moved, new, old), moved, time.perf_counter() - t0)


__all__ = ["FREE", "MAX_NODES", "MAX_UNITS", "NotApplicable", "Polished", "ROUNDS", "RegionSearch", "SETTINGS",
           "applies", "polish", "region_search"]
