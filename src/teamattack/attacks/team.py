"""TEAM: Taylor-expansion adversarial attack (SPEC sections 3-5).

The network's objective is replaced by its second-order expansion phi around the current point,
the quadratic subproblem is solved under the L2 / Linf / L0 budget and the [0, 1] box (exact dual
where the problem allows it, see teamattack.subproblems), and every candidate is judged by the
TRUE network. Three modes:

- "paper":    one expansion at x; the smallest budget C whose subproblem solution fools the
              network (the papers' algorithm; `search="paper"` is their C schedule).
- "iterated": (default) the paper's step first, then re-expansion: examples already adversarial
              are re-expanded at the boundary point toward x and searched below their best
              budget; the others take a trust-region step from the current point (the first
              success or the lowest TRUE objective wins). With `eps`: trust-region iterations
              inside the fixed budget, steps accepted by the ratio of actual to predicted decrease.
              L0 ends with a clean-up on the true network: the changed pixels it does not need
              go back to x (teamattack.attacks.pixel_pruning).
- "min-norm": (L2, Linf) a damped walk along the decision boundary toward x: at every step the
              minimum-norm subproblems of the margin's model (its boundary point closest to the
              current point and the one closest to x, with the box; exact dual), a step between
              them, and the true network's verdict; several starts toward the strongest other
              classes (see teamattack.attacks.boundary_walk).
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from .. import metrics
from .. import subproblems as sp
from ..counting import CountingModel
from ..curvature import Expansion, choose, expand
from ..objectives import Objective, get_objective
from .base import Attack
from . import fixed_budget as fb
from .boundary_walk import boundary_walk, segment_boundary
from .pixel_pruning import prune_pixels
from .search import bracket_and_refine, paper_schedule

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
        mode: "iterated" (default) | "paper" | "min-norm" (see module docstring).
        search: "bracket" (default: log-spaced bracketing then refinement) or "paper"
            (C = 0.5, 0.6, ... for L2; 0.01 steps for Linf; 1 pixel steps for L0).
        eps: fixed budget. When given, no radius search: the attack minimises the objective within
            eps (paper: one expansion; iterated: trust-region steps).
        max_radius: largest budget the search tries (default: 10 for L2, 0.5 for Linf, all
            pixels for L0).
        krylov_k: Lanczos steps (Hessian-vector products) for hessian="krylov".
        steps: expansions per run: iterated mode (default 10); min-norm mode, the length of the
            walk that goes on after the screening (default 40).
        starts: min-norm mode, untargeted: walks per image, toward the strongest other classes at
            x (default 6).
        screen: min-norm mode, untargeted: each start first walks `screen` steps (default 8), then
            only the best walk per image takes `steps - screen` more (default: 6 x 8 + 32 = 80
            gradients per image). 0: every start walks `steps`. Targeted: one walk of the same
            number of expansions (boundary_walk.walk_budget).
        per_pass: radii checked in one batched forward pass; rounds: refinement rounds.
        overshoot: min-norm mode: initial aim beyond the model's boundary (relative, adapted per
            example as the walk goes).
        box_iters: iterations of the box-constrained subproblem solvers.
        max_batch: examples processed together; larger batches are split, which bounds the memory
            of the curvature and the box solvers (64 MNIST images in min-norm mode with the exact
            Hessian: 315 MB peak).
    """

    name = "team"

    def __init__(
        self,
        model: nn.Module,
        norm: str = "l2",
        objective: str | None = None,
        targeted: bool = False,
        hessian: str = "auto",
        mode: str = "iterated",
        search: str = "bracket",
        eps: float | None = None,
        max_radius: float | None = None,
        krylov_k: int = 20,
        steps: int | None = None,
        starts: int = 6,
        screen: int = 8,
        per_pass: int = 8,
        rounds: int = 3,
        overshoot: float = 0.02,
        box_iters: int = 30,
        max_batch: int = 128,
    ) -> None:
        super().__init__(model, targeted)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if search not in ("bracket", "paper"):
            raise ValueError("search must be 'bracket' or 'paper'")
        if mode == "min-norm" and norm == "l0":
            raise ValueError("mode='min-norm' walks the boundary in L2 or Linf; for L0 use mode='iterated'")
        if mode == "min-norm" and norm == "linf" and hessian not in ("auto", "none"):
            raise ValueError("the Linf min-norm walk uses the first-order model: hessian='none' or 'auto'")
        if mode == "min-norm" and eps is not None:
            raise ValueError("mode='min-norm' finds the smallest perturbation; it takes no eps")
        objective = objective or ("T2" if targeted else "T1")
        self.objective: Objective = get_objective(objective)
        if self.objective.targeted != targeted:
            raise ValueError(f"objective {objective} is {'targeted' if self.objective.targeted else 'untargeted'}"
                             f" but targeted={targeted}")
        self.norm, self.mode, self.search, self.hessian = norm, mode, search, hessian
        self.eps, self.max_radius, self.krylov_k = eps, max_radius, krylov_k
        self.steps = int(steps if steps is not None else (40 if mode == "min-norm" else 10))
        self.starts, self.screen = max(1, int(starts)), max(0, int(screen))
        self.per_pass, self.rounds = per_pass, rounds
        self.overshoot, self.box_iters = overshoot, box_iters
        self.max_batch = max(1, int(max_batch))
        self.hessian_used: str | None = None
        self.name = f"team-{mode}-{norm}"

    # ------------------------------------------------------------------ curvature
    def _source(self, model, obj, x, y, target) -> str:
        if self.hessian != "auto":
            return self.hessian
        if self.hessian_used is None:
            src, why = choose(model, obj, x, y, target, mode=self.mode)
            self.hessian_used = src
            log.info("TEAM hessian='auto' picked %r: %s", src, why)
        return self.hessian_used

    def _expand(self, model, obj, x, y, target, other=None) -> Expansion:
        """The objective's expansion at x with this attack's curvature source."""
        src = self._source(model, obj, x, y, target)
        return expand(model, obj, x, y, target, other, source=src, k=self.krylov_k)

    # ------------------------------------------------------------------ subproblems under the budget
    def _solve_many(self, e: Expansion, x: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        """argmin phi(d) over the budget ball (per radius) and the box, for radii (B, K): (B, K, n).

        d is the total perturbation from x (e is centred on x, or re-centred there). All K radii
        are solved as one batch of B*K rows sharing the expansion's curvature (no copies); the
        L2 starts come from one eigen-decomposition of the reduced problem.
        """
        B, K = radii.shape
        n = e.n
        xf = _flat(x).repeat_interleave(K, dim=0)
        lower, upper = -xf, 1.0 - xf
        g = e.g.repeat_interleave(K, dim=0)
        mv = e.matvec_repeated(K)
        r = radii.reshape(-1).to(e.g.dtype)
        if e.rank == 0 and self.norm != "l0":
            # H = 0: closed forms. Linf: the FGSM vertex. L2: min g.d over ball and box is
            # d = clip(-g / mu, lower, upper) for the mu that meets the radius, i.e. the exact
            # ball-box projection of a far point along -g.
            if self.norm == "linf":
                d = sp.fgsm_vertex(g, torch.maximum(lower, -r[:, None]), torch.minimum(upper, r[:, None]))
            else:
                far = -g / g.norm(dim=1, keepdim=True).clamp_min(1e-30) * 1e6 * (n ** 0.5 + r[:, None])
                d = sp.project_ball_box(far, r, lower, upper)
            return d.reshape(B, K, n)
        if self.norm == "l2":
            P, g_hat, ev, W = e.small_eig()
            if "_Qfull" not in e.info:
                e.info["_Qfull"] = W if P is None else torch.bmm(P, W)
            d_trs = sp.trust_region_eig(g_hat, ev, e.info["_Qfull"], radii.to(e.g.dtype)).reshape(B * K, n)
            d = sp.trust_region_box(g, mv, r, lower, upper, iters=self.box_iters, trs=d_trs)
        elif self.norm == "linf":
            d = sp.box_qp(g, mv, torch.maximum(lower, -r[:, None]), torch.minimum(upper, r[:, None]),
                          iters=self.box_iters)
        else:
            d = sp.l0_search(g, mv, r.round().long(), lower, upper, groups=_pixel_groups(x), iters=self.box_iters)
        return d.reshape(B, K, n)

    def _succeeded(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return logits.argmax(1) == target if target is not None else logits.argmax(1) != y

    def _limits(self, x: torch.Tensor) -> tuple[float, float]:
        lo, hi = _RANGE[self.norm]
        if self.norm == "l0":
            hi = float(x[0, 0].numel() if (x.dim() == 4 and x.shape[1] > 1) else x[0].numel())
        return lo, float(self.max_radius or hi)

    # ------------------------------------------------------------------ modes
    def run(self, model: CountingModel, x, y, target):
        if x.shape[0] > self.max_batch:
            parts = [self.run(model, x[i:i + self.max_batch], y[i:i + self.max_batch],
                              None if target is None else target[i:i + self.max_batch])
                     for i in range(0, x.shape[0], self.max_batch)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if self.eps is not None:
            radius = torch.full((x.shape[0],), float(self.eps), device=x.device, dtype=x.dtype)
            if self.mode == "paper":
                e = self._expand(model, self.objective, x, y, target)
                d = self._solve_many(e, x, radius[:, None])[:, 0]
                return (x + d.reshape(x.shape)).clamp(0, 1), radius
            if self.norm != "l0":
                walk = lambda xx, yy, tt: boundary_walk(
                    model, self._expand, xx, yy, tt, norm=self.norm, steps=fb.WALK_STEPS,
                    starts=fb.WALK_STARTS, screen=fb.WALK_SCREEN, overshoot=self.overshoot)
                return fb.fixed_budget(model, x, y, target, norm=self.norm, eps=float(self.eps), walk=walk,
                                       steps=fb.ASCENT_STEPS), radius
            return self._trust_region_run(model, x, y, target, radius), radius
        if self.mode == "min-norm":
            return boundary_walk(model, self._expand, x, y, target, norm=self.norm, steps=self.steps,
                                 starts=self.starts, screen=self.screen, overshoot=self.overshoot)
        best, best_r = self._smallest_budget(model, x, y, target)
        if self.norm == "l0" and self.mode == "iterated":  # reset the pixels the network does not need
            best = prune_pixels(model, x, best, y, target, groups=_pixel_groups(x))
            best_r = torch.where(torch.isnan(best_r), best_r, self._distance(best, x).to(best_r.dtype))
        return best, best_r

    def _smallest_budget(self, model, x, y, target):
        """Radius search on the expansion; iterated: re-expand and search again.

        Every candidate is judged by the true network. Examples already adversarial are
        re-expanded at the boundary point between x and their best adversarial example (the
        model is accurate where smaller budgets' solutions land) and searched again below their
        best budget. Examples not yet adversarial take a trust-region step from the current point:
        K step radii solved at once, the first success or else the lowest TRUE objective wins.
        """
        B = x.shape[0]
        xf = _flat(x)
        obj = self.objective
        best = x.clone()
        best_r = torch.full((B,), float("inf"), device=x.device, dtype=torch.float64)
        centre = torch.zeros_like(xf)
        steps = 1 if self.mode == "paper" else self.steps
        sub = lambda t, i: None if t is None else t[i]
        for step in range(steps):
            if step == 0:
                e = self._expand(model, obj, x, y, target)
                self._budget_search(model, e, x, y, target, best, best_r)
                continue
            found = torch.isfinite(best_r)
            if found.any():  # re-expand at the boundary and search below the best budget
                idx = found.nonzero().squeeze(1)
                xb = self._boundary(model, xf[idx], _flat(best)[idx], y[idx], sub(target, idx), x.shape, iters=6)
                e = self._expand(model, obj, xb.reshape(-1, *x.shape[1:]), y[idx], sub(target, idx))
                e = e.recentred(xb - xf[idx])
                b_best, b_r = best[idx], best_r[idx]
                self._budget_search(model, e, x[idx], y[idx], sub(target, idx), b_best, b_r)
                best[idx], best_r[idx] = b_best, b_r
            if (~found).any():  # trust-region step from the current point
                idx = (~found).nonzero().squeeze(1)
                xc = (xf[idx] + centre[idx]).reshape(-1, *x.shape[1:])
                e = self._expand(model, obj, xc, y[idx], sub(target, idx))
                moved, b_best, b_r = self._local_step(model, obj, e, x[idx], xc, y[idx], sub(target, idx))
                centre[idx] = _flat(moved) - xf[idx]
                self._keep_into(best, best_r, idx, b_best, b_r)
        best_r = torch.where(torch.isfinite(best_r), best_r, torch.full_like(best_r, float("nan")))
        return best, best_r.to(x.dtype)

    def _distance(self, cand: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Distance in the attack's norm (L0: pixel positions), float64 (B,)."""
        fn = {"l2": metrics.l2, "linf": metrics.linf, "l0": metrics.l0}[self.norm]
        return fn(x, cand).double()

    def _budget_search(self, model, e: Expansion, x, y, target, best, best_r) -> None:
        """Smallest budget C around x whose subproblem solution fools the network (updates best)."""
        B = x.shape[0]
        lo_default, hi_default = self._limits(x)

        def evaluate(radii: torch.Tensor):
            K = radii.shape[1]
            cands = (x.unsqueeze(1) + self._solve_many(e, x, radii).reshape(B, K, *x.shape[1:])).clamp(0, 1)
            rep = lambda t: None if t is None else t.repeat_interleave(K)
            with torch.no_grad():
                logits = model(cands.reshape(B * K, *x.shape[1:]))
            return cands, self._succeeded(logits, rep(y), rep(target)).reshape(B, K)

        found = torch.isfinite(best_r)
        if self.search == "paper":
            start, step = _PAPER[self.norm]
            res = paper_schedule(evaluate, x, start, step, hi_default, per_pass=self.per_pass,
                                 integer=self.norm == "l0")
        else:
            hi = torch.where(found, best_r, torch.full_like(best_r, hi_default))
            lo = torch.where(found, (0.25 * best_r).clamp_min(lo_default), torch.full_like(best_r, lo_default))
            res = bracket_and_refine(evaluate, x, lo, hi, per_pass=self.per_pass, rounds=self.rounds,
                                     integer=self.norm == "l0")
        radius = res.radius.double()
        better = res.success & (radius < best_r)
        best[better] = res.x_adv[better]
        best_r[better] = radius[better]

    def _local_step(self, model, obj, e: Expansion, x, xc, y, target):
        """Trust-region step from xc: K step radii at once; returns (new centre, best, best_r)."""
        B = x.shape[0]
        lo_default, hi_default = self._limits(x)
        K = self.per_pass
        frac = torch.linspace(0, 1, K, device=x.device, dtype=torch.float64)
        radii = torch.exp(math.log(lo_default) + frac * (math.log(hi_default) - math.log(lo_default)))
        radii = radii.to(x.dtype).expand(B, K)
        if self.norm == "l0":
            radii = radii.round().clamp_min(1)
        cands = (xc.unsqueeze(1) + self._solve_many(e, xc, radii).reshape(B, K, *x.shape[1:])).clamp(0, 1)
        rep = lambda t: None if t is None else t.repeat_interleave(K)
        yy, tt = rep(y), rep(target)
        with torch.no_grad():
            logits = model(cands.reshape(B * K, *x.shape[1:]))
        ok = self._succeeded(logits, yy, tt).reshape(B, K)
        fv = obj(logits, yy, tt, obj.runner_up(logits, yy, tt) if obj.margin else None).reshape(B, K)
        dist = self._distance(cands.reshape(B * K, *x.shape[1:]), x.repeat_interleave(K, 0)).reshape(B, K)
        dist_ok = torch.where(ok, dist, torch.full_like(dist, float("inf")))
        best_r, k_ok = dist_ok.min(1)
        ar = torch.arange(B, device=x.device)
        best = cands[ar, k_ok]
        fmin, k_f = fv.min(1)
        move = fmin < e.f
        centre = torch.where(move.view(-1, *[1] * (x.dim() - 1)), cands[ar, k_f], xc)
        centre = torch.where(torch.isfinite(best_r).view(-1, *[1] * (x.dim() - 1)), best, centre)
        return centre, best, best_r

    @staticmethod
    def _keep_into(best, best_r, idx, cand, radius) -> None:
        better = torch.isfinite(radius) & (radius < best_r[idx])
        best[idx[better]] = cand[better]
        best_r[idx[better]] = radius[better]

    def _trust_region_run(self, model, x, y, target, radius: torch.Tensor) -> torch.Tensor:
        """Fixed budget: trust-region iterations of the second-order model within `radius`.

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
            idx = act.nonzero().squeeze(1)
            xa = (x + delta.reshape(x.shape))[idx]
            ya, ta = y[idx], None if target is None else target[idx]
            e = self._expand(model, obj, xa, ya, ta).recentred(delta[idx])
            new = self._solve_many(e, x[idx], radius[idx, None])[:, 0]
            step = new - delta[idx]
            if self.norm == "l2":
                s = step.norm(dim=1, keepdim=True)
                step = step * torch.clamp(trust[idx, None] / s.clamp_min(1e-12), max=1.0)
            elif self.norm == "linf":
                step = step.clamp(-trust[idx, None], trust[idx, None])
            cand = delta[idx] + step
            predicted = e.model(delta[idx]) - e.model(cand)
            with torch.no_grad():
                logits = model((x[idx] + cand.reshape(xa.shape)).clamp(0, 1))
            f_now = e.model(delta[idx])  # the re-centred model at the current point: the true f there
            f_new = obj(logits, ya, ta, obj.runner_up(logits, ya, ta) if obj.margin else None)
            rho = (f_now - f_new) / predicted.clamp_min(1e-12)
            accept = rho > 0.1
            delta[idx[accept]] = cand[accept]
            t = trust[idx]
            t = torch.where((rho > 0.75) & accept, torch.minimum(2 * t, radius[idx]), t)
            t = torch.where(rho < 0.25, 0.25 * t, t)
            trust[idx] = t
            done[idx[self._succeeded(logits, ya, ta) & accept]] = True
        return (x + delta.reshape(x.shape)).clamp(0, 1)

    def _boundary(self, model, x0, xa, y, target, shape, iters: int = 8) -> torch.Tensor:
        """Bisection on the segment [x0, xa] (flat rows, xa adversarial): the adversarial end closest to x0."""
        ok = lambda logits: self._succeeded(logits, y, target)
        xb = segment_boundary(model, x0.reshape(-1, *shape[1:]), xa.reshape(-1, *shape[1:]), ok, iters)
        return xb.reshape(len(x0), -1)
