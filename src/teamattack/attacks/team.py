"""TEAM: Taylor-expansion adversarial attack (SPEC sections 3-5).

The network's objective is replaced by its second-order expansion phi around the current point,
the quadratic subproblem is solved under the L2 / Linf / L0 budget and the [0, 1] box (exact dual
where the problem allows it, see teamattack.subproblems), and every candidate is judged by the
TRUE network. Three modes:

- "paper":    one expansion at x; the smallest budget C whose subproblem solution fools the
              network (the papers' algorithm; `search="paper"` is their C schedule).
- "iterated": a trust-region method: re-expand at the current point, accept steps by the ratio of
              actual to predicted decrease; for a fixed `eps` or inside a bisection over C.
- "min-norm": (L2) minimise ||d|| subject to the quadratic model of the decision margin <= 0
              (one quadratic constraint, exact dual), iterate it to reach the boundary, then walk
              along the boundary toward x (boundary bisection, re-expansion, projection), judged
              by the true network at every step.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from .. import subproblems as sp
from ..counting import CountingModel
from ..curvature import Expansion, choose, expand
from ..objectives import Objective, decision_margin, get_objective
from ..validation import InputError
from .base import Attack
from .search import SearchResult, bracket_and_refine, paper_schedule

log = logging.getLogger(__name__)

NORMS = ("l2", "linf", "l0")
MODES = ("paper", "iterated", "min-norm")

# Radius ranges per norm: [lo, hi] for the default search, and the papers' schedule (start, step).
_RANGE = {"l2": (0.05, 10.0), "linf": (1 / 255, 0.5), "l0": (1.0, None)}
_PAPER = {"l2": (0.5, 0.1), "linf": (0.01, 0.01), "l0": (1.0, 1.0)}


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _pixel_groups(x: torch.Tensor) -> torch.Tensor | None:
    """Coordinate -> pixel position for colour images (L0 counts positions), None otherwise."""
    if x.dim() == 4 and x.shape[1] > 1:
        C, H, W = x.shape[1:]
        return torch.arange(H * W, device=x.device).repeat(C)
    return None


class TEAM(Attack):
    """Second-order Taylor-expansion attack.

    Args:
        model: classifier taking inputs in [0, 1], in eval mode.
        norm: "l2", "linf" or "l0" (L0 counts changed pixel positions).
        objective: "T1".."T6" or "margin" (SPEC 2); default T1 untargeted, T2 targeted.
        targeted: attack toward `target` passed at call time.
        hessian: "exact" | "krylov" | "ggn" | "none" | "auto" (see teamattack.curvature).
        mode: "paper" | "iterated" | "min-norm" (see module docstring).
        search: "bracket" (default: log-spaced bracketing then refinement) or "paper"
            (C = 0.5, 0.6, ... for L2; 0.01 steps for Linf; 1 pixel steps for L0).
        eps: fixed budget. When given, no radius search: the attack minimises the objective within
            eps (paper: one expansion; iterated: trust-region steps).
        max_radius: largest budget the search tries (default: 10 for L2, 0.5 for Linf, all
            pixels for L0).
        krylov_k: Lanczos steps (Hessian-vector products) for hessian="krylov".
        steps: expansions per run in the iterated and min-norm modes.
        per_pass: radii checked in one batched forward pass; rounds: refinement rounds.
        overshoot: relative step beyond the model's boundary in min-norm mode.
        box_iters: iterations of the box-constrained subproblem solvers.
    """

    name = "team"

    def __init__(
        self,
        model: nn.Module,
        norm: str = "l2",
        objective: str | None = None,
        targeted: bool = False,
        hessian: str = "auto",
        mode: str = "paper",
        search: str = "bracket",
        eps: float | None = None,
        max_radius: float | None = None,
        krylov_k: int = 20,
        steps: int = 10,
        per_pass: int = 8,
        rounds: int = 3,
        overshoot: float = 0.02,
        box_iters: int = 50,
    ) -> None:
        super().__init__(model, targeted)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if search not in ("bracket", "paper"):
            raise ValueError("search must be 'bracket' or 'paper'")
        if mode == "min-norm" and norm != "l2":
            raise ValueError("mode='min-norm' is the L2 minimum-norm attack; use norm='l2'")
        objective = objective or ("T2" if targeted else "T1")
        self.objective: Objective = get_objective(objective)
        if self.objective.targeted != targeted:
            raise ValueError(f"objective {objective} is {'targeted' if self.objective.targeted else 'untargeted'}"
                             f" but targeted={targeted}")
        self.norm, self.mode, self.search, self.hessian = norm, mode, search, hessian
        self.eps, self.max_radius, self.krylov_k = eps, max_radius, krylov_k
        self.steps, self.per_pass, self.rounds = steps, per_pass, rounds
        self.overshoot, self.box_iters = overshoot, box_iters
        self.hessian_used: str | None = None
        self.name = f"team-{mode}-{norm}"

    # ------------------------------------------------------------------ curvature
    def _source(self, model, obj, x, y, target) -> str:
        if self.hessian != "auto":
            return self.hessian
        if self.hessian_used is None:
            src, why = choose(model, obj, x, y, target)
            self.hessian_used = src
            log.info("TEAM hessian='auto' picked %r: %s", src, why)
        return self.hessian_used

    def _expand(self, model, obj, x, y, target, other=None) -> Expansion:
        src = self._source(model, obj, x, y, target)
        return expand(model, obj, x, y, target, other, source=src, k=self.krylov_k)

    # ------------------------------------------------------------------ subproblem under the budget
    def _solve(self, e: Expansion, x: torch.Tensor, radius: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """argmin phi(d) over the budget ball around x and the box; d is the TOTAL perturbation.

        `centre` (B, n): the current perturbation when e was taken away from x (e is then already
        re-centred on x, so the same solvers apply).
        """
        xf = _flat(x)
        lower, upper = -xf, 1.0 - xf
        if self.norm == "l2":
            return sp.trust_region_box(e.g, e.matvec, radius, lower, upper, iters=self.box_iters,
                                       reduced=e.reduced())
        if self.norm == "linf":
            r = radius[:, None]
            return sp.box_qp(e.g, e.matvec, torch.maximum(lower, -r), torch.minimum(upper, r), iters=self.box_iters)
        k = radius.round().long()
        return sp.l0_search(e.g, e.matvec, k, lower, upper, groups=_pixel_groups(x), iters=self.box_iters)

    def _succeeded(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return logits.argmax(1) == target if target is not None else logits.argmax(1) != y

    def _search(self, evaluate, x: torch.Tensor) -> SearchResult:
        lo, hi = _RANGE[self.norm]
        n_pos = x[0, 0].numel() if (x.dim() == 4 and x.shape[1] > 1) else x[0].numel()
        if self.norm == "l0":
            hi = float(n_pos)
        hi = self.max_radius or hi
        integer = self.norm == "l0"
        if self.search == "paper":
            start, step = _PAPER[self.norm]
            return paper_schedule(evaluate, x, start, step, hi, per_pass=self.per_pass, integer=integer)
        return bracket_and_refine(evaluate, x, lo, hi, per_pass=self.per_pass, rounds=self.rounds, integer=integer)

    # ------------------------------------------------------------------ modes
    def run(self, model: CountingModel, x, y, target):
        if self.mode == "min-norm":
            return self._min_norm(model, x, y, target)
        if self.eps is not None:
            radius = torch.full((x.shape[0],), float(self.eps), device=x.device, dtype=x.dtype)
            if self.mode == "paper":
                e = self._expand(model, self.objective, x, y, target)
                d = self._solve(e, x, radius)
                return (x + d.reshape(x.shape)).clamp(0, 1), radius
            return self._iterate(model, x, y, target, radius), radius
        if self.mode == "paper":
            e = self._expand(model, self.objective, x, y, target)

            def evaluate(radii: torch.Tensor):
                B, K = radii.shape
                cands = torch.stack([(x + self._solve(e, x, radii[:, k]).reshape(x.shape)).clamp(0, 1)
                                     for k in range(K)], dim=1)
                with torch.no_grad():
                    logits = model(cands.reshape(B * K, *x.shape[1:]))
                rep = lambda t: None if t is None else t.repeat_interleave(K)
                ok = self._succeeded(logits, rep(y), rep(target)).reshape(B, K)
                return cands, ok
        else:
            def evaluate(radii: torch.Tensor):
                B, K = radii.shape
                rep = lambda t: None if t is None else t.repeat_interleave(K)
                xr = x.repeat_interleave(K, dim=0)
                xa = self._iterate(model, xr, rep(y), rep(target), radii.reshape(-1))
                with torch.no_grad():
                    ok = self._succeeded(model(xa), rep(y), rep(target)).reshape(B, K)
                return xa.reshape(B, K, *x.shape[1:]), ok

        res = self._search(evaluate, x)
        return res.x_adv, res.radius

    def _iterate(self, model, x, y, target, radius: torch.Tensor) -> torch.Tensor:
        """Trust-region iterations of the second-order model within the budget `radius`.

        The step from the current perturbation is capped by a trust radius Delta, adapted by
        rho = (true decrease) / (model decrease); examples stop once they are adversarial.
        """
        B = x.shape[0]
        obj = self.objective
        delta = torch.zeros_like(_flat(x))
        trust = radius.clone().to(x.dtype)
        done = torch.zeros(B, dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            act = ~done
            if not act.any():
                break
            xa = (x + delta.reshape(x.shape))[act]
            ya, ta = y[act], None if target is None else target[act]
            e = self._expand(model, obj, xa, ya, ta).recentred(delta[act])
            new = self._solve(e, x[act], radius[act])
            step = new - delta[act]
            if self.norm == "l2":
                s = step.norm(dim=1, keepdim=True)
                step = step * torch.clamp(trust[act, None] / s.clamp_min(1e-12), max=1.0)
            elif self.norm == "linf":
                step = step.clamp(-trust[act, None], trust[act, None])
            cand = delta[act] + step
            predicted = e.model(delta[act]) - e.model(cand)
            with torch.no_grad():
                logits = model((x[act] + cand.reshape(xa.shape)).clamp(0, 1))
            f_now = e.model(delta[act])  # the re-centred model at the current point: the true f there
            f_new = obj(logits, ya, ta, obj.runner_up(logits, ya, ta) if obj.margin else None)
            rho = (f_now - f_new) / predicted.clamp_min(1e-12)
            accept = rho > 0.1
            idx = act.nonzero().squeeze(1)
            delta[idx[accept]] = cand[accept]
            grow = (rho > 0.75) & accept
            shrink = rho < 0.25
            t = trust[idx]
            t = torch.where(grow, torch.minimum(2 * t, radius[idx]), t)
            t = torch.where(shrink, 0.25 * t, t)
            trust[idx] = t
            won = self._succeeded(logits, ya, ta) & accept
            done[idx[won]] = True
        return (x + delta.reshape(x.shape)).clamp(0, 1)

    def _min_norm(self, model, x, y, target):
        """Second-order DeepFool to the boundary, then a boundary walk toward x (L2)."""
        B = x.shape[0]
        xf = _flat(x)
        obj = get_objective("T3" if target is not None else "margin")
        cur = xf.clone()
        best = xf.clone()
        best_norm = torch.full((B,), float("inf"), device=x.device, dtype=x.dtype)
        shape = x.shape

        def judge(points: torch.Tensor, yy, tt) -> torch.Tensor:
            with torch.no_grad():
                return self._succeeded(model(points.reshape(-1, *shape[1:])), yy, tt)

        def keep_best(points, ok, idx):
            nrm = (points - xf[idx]).norm(dim=1)
            better = ok & (nrm < best_norm[idx])
            best[idx[better]] = points[better]
            best_norm[idx[better]] = nrm[better]

        # phase 1: reach the decision boundary with model-projection steps from x
        for _ in range(self.steps):
            todo = ~torch.isfinite(best_norm)
            if not todo.any():
                break
            idx = todo.nonzero().squeeze(1)
            yy, tt = y[idx], None if target is None else target[idx]
            e = self._expand(model, obj, cur[idx].reshape(-1, *shape[1:]), yy, tt)
            P, gs, Hs = e.reduced()
            d_small = sp.min_norm(gs, Hs, e.f)
            d = d_small if P is None else torch.bmm(P, d_small.unsqueeze(-1)).squeeze(-1)
            step = cur[idx] + (1 + self.overshoot) * d
            cand = step.clamp(0, 1)
            ok = judge(cand, yy, tt)
            keep_best(cand, ok, idx)
            cur[idx] = cand
        # phase 2: walk along the boundary toward x
        for _ in range(self.steps):
            idx = torch.isfinite(best_norm).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            yy, tt = y[idx], None if target is None else target[idx]
            xb = self._boundary(model, xf[idx], best[idx], yy, tt, shape)
            delta_b = xb - xf[idx]
            e = self._expand(model, obj, xb.reshape(-1, *shape[1:]), yy, tt).recentred(delta_b)
            P, gs, Hs = e.reduced()
            d_small = sp.min_norm(gs, Hs, e.f)
            d = d_small if P is None else torch.bmm(P, d_small.unsqueeze(-1)).squeeze(-1)
            target_pt = xf[idx] + (1 + self.overshoot) * d
            # candidates on the segment from the boundary point to the model's projection
            alphas = (1.0, 0.5, 0.25)
            cands = torch.stack([(xb + a * (target_pt - xb)).clamp(0, 1) for a in alphas], 1)
            K = len(alphas)
            ok = judge(cands.reshape(-1, xf.shape[1]), yy.repeat_interleave(K),
                       None if tt is None else tt.repeat_interleave(K)).reshape(-1, K)
            for k in range(K):
                keep_best(cands[:, k], ok[:, k], idx)
        idx = torch.isfinite(best_norm).nonzero().squeeze(1)
        if len(idx):
            yy, tt = y[idx], None if target is None else target[idx]
            best[idx] = self._boundary(model, xf[idx], best[idx], yy, tt, shape, iters=12)
        radius = torch.where(torch.isfinite(best_norm), _flat(best - xf).norm(dim=1), torch.full_like(best_norm, float("nan")))
        return best.reshape(shape), radius

    def _boundary(self, model, x0, xa, y, target, shape, iters: int = 8) -> torch.Tensor:
        """Bisection on the segment [x0, xa] (xa adversarial): the adversarial end closest to x0."""
        lo = torch.zeros(len(x0), 1, device=x0.device, dtype=x0.dtype)
        hi = torch.ones_like(lo)
        for _ in range(iters):
            mid = (lo + hi) / 2
            with torch.no_grad():
                ok = self._succeeded(model((x0 + mid * (xa - x0)).reshape(-1, *shape[1:])), y, target)
            hi = torch.where(ok[:, None], mid, hi)
            lo = torch.where(ok[:, None], lo, mid)
        return x0 + hi * (xa - x0)
