"""TEAM's minimum-norm mode: a damped walk along the decision boundary toward x (L2 or Linf).

Every step expands the decision margin m at the current point p = x + d (one gradient with the
first-order model; more with curvature) and solves two minimum-norm subproblems of that model,
both with the [0, 1] box:

    d_b = the point of the model's boundary closest to p      (normal correction: back on the edge)
    d_x = the point of the model's boundary closest to x      (the full second-order DeepFool step)
    d  <- d_b + alpha_k (d_x - d_b)                           (a tangential move toward x)

Each step is capped by a trust radius (in the attack's norm): a step that left the true margin
worse without succeeding halves the next one, any other step doubles it (without it, walks far
from x on a hard target jumped between linear regions and never arrived). alpha_k follows a
cosine schedule from `alpha[0]` to `alpha[1]`: early steps jump (d_x is the
model's whole answer), late steps creep, which is what a piecewise-linear boundary needs (the
model is exact only inside the current linear region; docs/engine.md). The model's boundary is aimed a
little beyond the true one, by an overshoot that adapts per example: it grows while the true
network still says "not adversarial" and shrinks once it says "adversarial". Only points the true
network calls adversarial are kept; the smallest wins, and a final bisection on the segment from
x toward it removes the leftover overshoot.

Global phase: untargeted runs start `starts` walks per image, walk k on the margin Z_y - Z_{c_k}
of the k-th strongest other class at x (the local walks end in different basins; the smallest
verified result wins). Screening: every start first takes a short walk of its own (`screen`
steps), and only the best per image goes on. Targeted runs walk on the smooth max
tau log sum_{i!=t} exp(Z_i / tau) - Z_t (objective T3-lse), its temperature annealed over the walk
in units of the image's logit gap (max_i Z_i - Z_t at x): the plain max from the start follows
whichever competitor leads at the moment and zigzags between them; with a fixed tau the walk stops
on the smooth max's zero set, which lies inside the target's region (logsumexp > max), short of the
true boundary; a temperature in absolute logit units suits one model's logit scale and not
another's. Two walks per image (`TARGETED_WALKS`), a cold and a hot one: each wins on some models
and loses on others. docs/engine.md gives the measurements behind each of these choices.

With H = 0 both subproblems are solved exactly, in the attack's norm (`subproblems.min_norm_box`);
with curvature (L2 only) the quadratic constraint is solved exactly without the box
(`subproblems.min_norm_eig`, S-lemma) and then clipped to the box. Linf walks the first-order model
(with the box, the step toward the model's boundary in Linf is its FGSM-like vertex).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import subproblems as sp
from ..counting import CountingModel
from ..goal import Goal
from ..curvature import Expansion
from ..curvature.sources import _activation_numel
from ..objectives import get_objective

ExpandFn = Callable[..., Expansion]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def model_projection(e: Expansion, c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                     norm: str = "l2") -> torch.Tensor:
    """min ||d|| s.t. c + g.d + 1/2 d.H d <= 0 and lower <= d <= upper (exact for H = 0)."""
    if e.rank == 0:
        return sp.min_norm_box(e.g, c, lower, upper, norm)[0]
    if norm != "l2":
        raise ValueError("the Linf boundary walk uses the first-order model (hessian='none' or 'auto')")
    _, g_hat, ev, _ = e.small_eig()
    return sp.min_norm_eig(g_hat, ev, e.eigenvectors(), c).clamp(lower, upper)


def segment_boundary(model: CountingModel, x: torch.Tensor, xa: torch.Tensor, goal: Goal, iters: int) -> torch.Tensor:
    """Bisection on [x, xa] (xa reaches `goal`): the end closest to x that still reaches it."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    lo = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    hi = torch.ones_like(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        with torch.no_grad():
            ok = goal.reached(model(x + mid.view(shape) * (xa - x)))
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return x + hi.view(shape) * (xa - x)


class _Walks:
    """The state of R walks (rows) and their steps; `advance` moves a subset of rows."""

    def __init__(self, model, expand, obj, xr, yr, tr, other, goal: Goal, norm, overshoot, growth, alpha,
                 temperature: tuple[torch.Tensor, torch.Tensor] | None = None, stop_at: float | None = None):
        """Walk r minimises obj(., yr[r], tr[r], other[r]) and succeeds where goal[r] is reached;
        with `stop_at` a walk stops once it holds a verified point within that distance.
        alpha: the step fraction's schedule (first, last), numbers or one per walk (R,) each.
        temperature: a smooth max's (first, last) temperature, one per walk (R,) each."""
        R, dev, dt = xr.shape[0], xr.device, xr.dtype
        self.model, self.expand, self.obj, self.temperature = model, expand, obj, temperature
        self.stop_at, self.per_image = stop_at, 1   # per_image: consecutive rows that walk one image
        self.xr, self.yr, self.tr, self.other, self.goal = xr, yr, tr, other, goal
        self.norm, self.growth = norm, growth
        self.a0, self.a1 = (torch.as_tensor(a, device=dev, dtype=dt).expand(R) for a in alpha)
        self.p_norm, self.dual = (2, 2) if norm == "l2" else (float("inf"), 1)
        self.xf = _flat(xr)
        self.d = torch.zeros_like(self.xf)
        self.best = self.xf.clone()
        self.best_n = torch.full((R,), float("inf"), device=dev, dtype=torch.float64)
        self.ov = torch.full((R,), float(overshoot), device=dev, dtype=dt)
        self.trust = torch.full((R,), float("inf"), device=dev, dtype=dt)
        self.f_prev = torch.full((R,), float("inf"), device=dev, dtype=dt)
        self.step_len = torch.zeros((R,), device=dev, dtype=dt)
        self.chunk = chunk_rows(model, xr[:1])

    def size(self, v: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(v, ord=self.p_norm, dim=1)

    def screened(self, screen: int) -> Screened:
        """A copy of the state of every walk (per_image walks per image) after `screen` steps."""
        B, K = self.xr.shape[0] // self.per_image, self.per_image
        return Screened(screen, self.tr.view(B, K).clone(),
                        *(getattr(self, f).view(B, K, *getattr(self, f).shape[1:]).clone() for f in Screened._STATE))

    def take_over(self, screened: Screened, K0: int) -> None:
        """Walks 0..K0-1 of every image continue from `screened` (their classes set by the caller)."""
        K = self.per_image
        rows = torch.arange(self.xr.shape[0], device=self.xr.device)
        rows = rows[rows % K < K0]
        for f in Screened._STATE:
            v = getattr(screened, f)[:, :K0]
            getattr(self, f)[rows] = v.reshape(-1, *v.shape[2:]).to(getattr(self, f).dtype)

    def _keep(self, rows: torch.Tensor, xf: torch.Tensor, points: torch.Tensor, ok: torch.Tensor) -> None:
        """Record the verified adversarial `points` of walks `rows` (xf = their x) that are closer."""
        n = self.size(points - xf).double()
        better = ok & (n < self.best_n[rows])
        self.best[rows[better]] = points[better]
        self.best_n[rows[better]] = n[better]

    def _objective(self, k: int, steps: int, rows: torch.Tensor):
        """The objective of step k for walks `rows`: a smooth max's temperature moves geometrically
        (first -> last) over the `steps` steps of this advance."""
        if self.temperature is None:
            return self.obj
        t0, t1 = (t[rows] for t in self.temperature)
        tau = t0 * (t1 / t0) ** (k / max(steps - 1, 1))
        return dataclasses.replace(self.obj, temperature=tau)

    def advance(self, rows: torch.Tensor, steps: int) -> None:
        """`steps` steps of walks `rows` (alpha's cosine schedule over them), then the true
        network's verdict on where they stand; at most `self.chunk` rows at a time (walks are
        independent: the same result, cheaper per row on CPU, `chunk_rows`)."""
        if not len(rows):
            return
        for part in rows.tensor_split(-(-len(rows) // self.chunk)):   # equal parts of <= chunk rows
            self._advance(part, steps)

    def _save(self, rows, d, ov, trust, f_prev, step_len) -> None:
        self.d[rows], self.ov[rows], self.trust[rows] = d, ov, trust
        self.f_prev[rows], self.step_len[rows] = f_prev, step_len

    def _advance(self, rows: torch.Tensor, steps: int) -> None:
        xf, lower = self.xf[rows], -self.xf[rows]
        upper = 1.0 + lower
        d, ov, trust = self.d[rows], self.ov[rows], self.trust[rows]
        f_prev, step_len = self.f_prev[rows], self.step_len[rows]
        yr, tr, a0, a1 = self.yr[rows], self.tr[rows], self.a0[rows], self.a1[rows]
        other = None if self.other is None else self.other[rows]
        for k in range(steps):
            if self.stop_at is not None and k > 1:  # images judged within stop_at (last step) stop here
                done = (self.best_n.view(-1, self.per_image) <= self.stop_at).any(1)[rows // self.per_image]
                if done.any():
                    self._save(rows[done], d[done], ov[done], trust[done], f_prev[done], step_len[done])
                    live = ~done
                    if not live.any():
                        return
                    rows, xf, lower, upper, d, ov, trust, f_prev, step_len, yr, tr, a0, a1 = (
                        t[live] for t in (rows, xf, lower, upper, d, ov, trust, f_prev, step_len, yr, tr, a0, a1))
                    other = None if other is None else other[live]
            shape = (len(rows),) + tuple(self.xr.shape[1:])
            p = (xf + d).reshape(shape)
            e = self.expand(self.model, self._objective(k, steps, rows), p, yr, tr, other)
            if k > 0:  # judge the previous step (first order: by the expansion's own forward pass)
                logits = e.logits
                if logits is None:
                    with torch.no_grad():
                        logits = self.model(p)
                ok = self.goal[rows].reached(logits)
                self._keep(rows, xf, xf + d, ok)
                ov = torch.where(ok, ov / self.growth, ov * self.growth).clamp(1e-4, 100.0)
                # trust region on the step: a step that left the margin worse (and did not
                # succeed) halves the next step's length; a good one doubles it
                worse = ~ok & (e.f > f_prev)
                trust = torch.where(worse, 0.5 * step_len, 2.0 * trust)
            f_prev = e.f
            a = (a1 + (a0 - a1) * 0.5 * (1.0 + math.cos(math.pi * k / max(steps - 1, 1))))[:, None]
            # the model's margin is aimed at -aim: overshoot x (dual norm of g) x (size of d)
            aim = ov * torch.linalg.vector_norm(e.g, ord=self.dual, dim=1) * self.size(d).clamp_min(1e-3)
            if e.rank == 0:  # both first-order problems in one solve (rows are independent)
                R = d.shape[0]
                f_x = e.f - (e.g * d).sum(1)                             # the same model, around x
                both = sp.min_norm_box(e.g.repeat(2, 1), torch.cat((e.f, f_x)) + aim.repeat(2),
                                       torch.cat((lower - d, lower)), torch.cat((upper - d, upper)), self.norm)[0]
                d_b, d_x = d + both[:R], both[R:]
            else:
                d_b = d + model_projection(e, e.f + aim, lower - d, upper - d, self.norm)
                ex = e.recentred(d)                                      # the same model, around x
                d_x = model_projection(ex, ex.f + aim, lower, upper, self.norm)
            new = (d_b + a * (d_x - d_b)).clamp(lower, upper)
            s_len = self.size(new - d)
            scale = torch.clamp(trust / s_len.clamp_min(1e-12), max=1.0)
            d = (d + scale[:, None] * (new - d)).clamp(lower, upper)
            step_len = s_len * scale
        with torch.no_grad():
            ok = self.goal[rows].reached(self.model((xf + d).reshape((len(rows),) + tuple(self.xr.shape[1:]))))
        self._keep(rows, xf, xf + d, ok)
        self._save(rows, d, ov, trust, f_prev, step_len)


# CPU: activation bytes of one forward + backward pass of the walk. With one torch thread a pass
# past a few tens of MB costs more per row (the cache; docs/engine.md, "Speed"). With several
# threads every pass is split between them and smaller passes cost more than they save (each
# parallel region waits for every thread), so there the bound only caps the memory of a pass.
# The GPU takes any batch.
CHUNK_BYTES = 16e6
CHUNK_BYTES_THREADS = 256e6


def chunk_rows(model: nn.Module, x1: torch.Tensor) -> int:
    """Rows of the walk processed together: all on GPU; on CPU as many as keep one pass's
    activations (measured on the example x1, uncounted) under CHUNK_BYTES with one torch thread,
    under CHUNK_BYTES_THREADS with several, at least 8."""
    budget = CHUNK_BYTES if torch.get_num_threads() == 1 else CHUNK_BYTES_THREADS
    if x1.device.type != "cpu" or budget == float("inf"):
        return 1 << 30
    raw = model.model if isinstance(model, CountingModel) else model
    numel = _activation_numel(raw, x1)
    return max(8, int(budget // (numel * x1.element_size())))


@dataclass(frozen=True)
class SmoothMaxWalk:
    """One targeted walk on the smooth max T3-lse: its temperature (first, last), annealed
    geometrically, in units of the image's logit gap max_i Z_i - Z_t at x (the same walk for any
    logit scale), and the step fraction alpha's cosine schedule (first, last)."""

    temperature: tuple[float, float]
    alpha: tuple[float, float]


# Targeted: a cold walk (led by the strongest competitors from the start, long strides) and a hot
# one (every competitor pushed down at once, shorter strides); each image keeps the closer point.
# Neither alone is best on every model (docs/engine.md, "Targeted").
TARGETED_WALKS = (SmoothMaxWalk((0.03, 0.003), (0.5, 0.05)), SmoothMaxWalk((0.3, 0.003), (0.35, 0.03)))


@dataclass(frozen=True)
class Screened:
    """Untargeted walks right after their screening steps, per image: the classes they walk toward
    (B, K) and their state ((B, K, ...) each). A later walk with more starts and the same screen
    (the target sweep's full walk after the fixed-budget walk, `TEAM.target_sweep`) takes these
    walks over where it would screen them again: its result is the same, at K x screen fewer
    gradients per image."""

    screen: int
    classes: torch.Tensor
    d: torch.Tensor
    best: torch.Tensor
    best_n: torch.Tensor
    ov: torch.Tensor
    trust: torch.Tensor
    f_prev: torch.Tensor
    step_len: torch.Tensor

    _STATE = ("d", "best", "best_n", "ov", "trust", "f_prev", "step_len")

    def __getitem__(self, idx) -> Screened:
        """The walks of images `idx`."""
        return Screened(self.screen, self.classes[idx], *(getattr(self, f)[idx] for f in self._STATE))

    @staticmethod
    def cat(parts: list[Screened]) -> Screened:
        """The walks of consecutive batches, in order, as one."""
        if len({p.screen for p in parts}) != 1:
            raise ValueError("the batches were screened for different numbers of steps")
        return Screened(parts[0].screen, torch.cat([p.classes for p in parts]),
                        *(torch.cat([getattr(p, f) for p in parts]) for f in Screened._STATE))


def walk_budget(steps: int, starts: int, screen: int = 0, keep: int = 1) -> int:
    """Expansions per image of an untargeted boundary_walk (each walk of a targeted one takes this many)."""
    starts = max(1, int(starts))
    if starts > keep and 0 < screen < steps:
        return starts * screen + keep * (steps - screen)
    return starts * steps


def boundary_walk(
    model: CountingModel,
    expand: ExpandFn,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    norm: str = "l2",
    steps: int = 50,
    starts: int = 2,
    screen: int = 0,
    keep: int = 1,
    alpha: tuple[float, float] = (1.0, 0.05),
    overshoot: float = 0.02,
    growth: float = 1.5,
    bisection: int = 10,
    targeted_walks: tuple[SmoothMaxWalk, ...] = TARGETED_WALKS,
    stop_at: float | None = None,
    screened: Screened | None = None,
    on_screened: Callable[[Screened], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest verified adversarial example per image (L2 or Linf) and its norm (NaN: none found).

    expand(model, objective, x, y, target, other) -> Expansion of the margin at x (the caller's
    curvature source). Untargeted (`untargeted_walks`): `starts` walks of `steps` toward the
    strongest other classes; with `screen` > 0 every walk first takes `screen` steps (a walk of its
    own), then only the `keep` best per image (smallest verified distance so far) walk
    `steps - screen` more from where they stand. Targeted (`targeted_walk`): one walk per entry of
    `targeted_walks`, each as long as the untargeted walks cost together (`walk_budget`).
    Expansions per image: `walk_budget(...)` untargeted, `len(targeted_walks)` times that targeted;
    forward passes: one verdict per walk and phase and `bisection` for the winner.
    alpha: untargeted only, the step fraction's cosine schedule (first, last) (docs/engine.md).
    targeted_walks: targeted only, the walks per image and their schedules (`SmoothMaxWalk`).
    stop_at: the fixed-budget attack's eps (`fixed_budget`): a walk stops as soon as it holds a
    verified point within that distance, and an image with such a walk goes no further after the
    screening (nor through the final bisection: its point is returned as verified); the distances
    of the other images are the same as without it.
    screened, on_screened: untargeted and screened only. `on_screened` receives the walks right
    after their screening (`Screened`); `screened` (one per image of x, with this `screen`, walked
    with this overshoot) takes its walks over as the first starts instead of screening them again.
    """
    goal = Goal(y, target)
    if target is None:
        walks, K = untargeted_walks(model, expand, x, y, norm, steps, starts, screen, keep,
                                    alpha, overshoot, growth, stop_at, screened, on_screened)
    else:
        walks, K = targeted_walk(model, expand, x, goal, norm, walk_budget(steps, starts, screen, keep),
                                 targeted_walks, overshoot, growth, stop_at)
    return _closest(model, walks, x, goal, K, bisection, stop_at)


def untargeted_walks(model, expand: ExpandFn, x, y, norm, steps, starts, screen, keep, alpha, overshoot,
                     growth, stop_at: float | None = None, screened: Screened | None = None,
                     on_screened: Callable[[Screened], None] | None = None) -> tuple[_Walks, int]:
    """K = min(starts, classes - 1) walks per image, walk k on Z_y - Z_{c_k} (c_k the k-th strongest
    other class at x), screened (see `boundary_walk`; `screened`, `on_screened` there); returns the
    walks and K."""
    B = x.shape[0]
    with torch.no_grad():
        z = model(x)
    z = z.scatter(1, y[:, None], float("-inf"))
    K = max(1, min(int(starts), z.shape[1] - 1))
    screens = K > int(keep) and 0 < int(screen) < steps
    if screened is not None and (not screens or screened.screen != int(screen)):
        raise ValueError("screened walks are taken over by a walk that screens them for as many steps")
    K0 = 0 if screened is None else min(screened.classes.shape[1], K)
    if K0:  # the screened walks' classes first, then the strongest of the others
        z = z.scatter(1, screened.classes[:, :K0], float("-inf"))
        classes = torch.cat((screened.classes[:, :K0], z.topk(K - K0, dim=1).indices), 1).reshape(-1)
    else:
        classes = z.topk(K, dim=1).indices.reshape(-1)       # walk k: the k-th strongest other class
    xr, yr = x.repeat_interleave(K, 0), y.repeat_interleave(K)
    # Z_y - Z_c is T3 toward c with the competing class fixed to y
    walks = _Walks(model, expand, get_objective("T3"), xr, yr, classes, yr, Goal(yr), norm, overshoot, growth, alpha,
                   stop_at=stop_at)
    walks.per_image = K
    rows = torch.arange(B * K, device=x.device)
    if screens:
        if K0:
            walks.take_over(screened, K0)
            rows = rows[rows % K >= K0]
        walks.advance(rows, int(screen))
        if on_screened is not None:
            on_screened(walks.screened(int(screen)))
        # the `keep` best walks per image go on: verified distance first, then the current margin
        score = torch.where(torch.isfinite(walks.best_n), walks.best_n, 1e30 + walks.f_prev.double())
        top = score.view(B, K).topk(int(keep), dim=1, largest=False).indices
        rows = (top + K * torch.arange(B, device=x.device)[:, None]).reshape(-1).sort().values
        if stop_at is not None:  # images already broken within stop_at go no further
            rows = rows[~(walks.best_n.view(B, K) <= stop_at).any(1)[rows // K]]
        walks.advance(rows, steps - int(screen))
    else:
        walks.advance(rows, steps)
    return walks, K


def targeted_walk(model, expand: ExpandFn, x, goal: Goal, norm, steps, schedules: tuple[SmoothMaxWalk, ...],
                  overshoot, growth, stop_at: float | None = None) -> tuple[_Walks, int]:
    """K = len(schedules) walks per image of `steps` steps each on the smooth max
    tau log sum_{i!=t} exp(Z_i / tau) - Z_t (T3-lse: every competitor at once), walk k with the
    k-th schedule (`SmoothMaxWalk`); returns the walks and K."""
    B, K = x.shape[0], len(schedules)
    if K == 0:
        raise ValueError("targeted_walks must name at least one walk")
    with torch.no_grad():
        z = model(x)
    gap = (z.max(1).values - z.gather(1, goal.target[:, None])[:, 0]).clamp_min(1e-3).repeat_interleave(K)

    def per_row(values) -> torch.Tensor:   # walk k's value on every row k, K + k, 2K + k, ...
        return torch.tensor(values, device=x.device, dtype=x.dtype).repeat(B)
    temperature = tuple(per_row([w.temperature[i] for w in schedules]) * gap for i in (0, 1))
    alpha = tuple(per_row([w.alpha[i] for w in schedules]) for i in (0, 1))
    gr = goal.repeat_interleave(K)
    walks = _Walks(model, expand, get_objective("T3-lse"), x.repeat_interleave(K, 0), gr.y, gr.target, None, gr,
                   norm, overshoot, growth, alpha, temperature, stop_at)
    walks.per_image = K
    walks.advance(torch.arange(B * K, device=x.device), steps)
    return walks, K


def _closest(model, walks: _Walks, x, goal: Goal, K: int, bisection: int,
             stop_at: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest verified point over each image's K walks, then a bisection on its segment from
    x (not where that point already lies within `stop_at`: the fixed-budget attack needs no closer one)."""
    B, dev = x.shape[0], x.device
    best_n = walks.best_n.view(B, K)
    k_best = best_n.argmin(1)
    ar = torch.arange(B, device=dev)
    out = walks.best.reshape(B, K, *x.shape[1:])[ar, k_best]
    dist = best_n[ar, k_best]
    found = torch.isfinite(dist)
    closer = found if stop_at is None else found & ~(dist <= stop_at)
    if closer.any() and bisection > 0:
        idx = closer.nonzero().squeeze(1)
        out[idx] = segment_boundary(model, x[idx], out[idx], goal[idx], bisection)
        dist[idx] = walks.size(_flat(out[idx] - x[idx])).double()
    out = torch.where(found.view(-1, *[1] * (x.dim() - 1)), out, x)
    return out, torch.where(found, dist, torch.full_like(dist, float("nan"))).to(x.dtype)
