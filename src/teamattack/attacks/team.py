"""TEAM: Taylor-expansion adversarial attack (Qian et al., "TEAM: We Need More Powerful Adversarial Examples for DNNs"; docs/engine.md).

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
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import metrics
from .. import subproblems as sp
from ..counting import CountingModel
from ..goal import Goal
from ..curvature import SOURCES, Expansion, choose, expand
from ..exact import regions
from ..objectives import Objective, get_objective
from ..validation import check_number
from .base import Attack
from . import fixed_budget as fb
from .boundary_walk import TARGETED_WALKS, ExpandFn, Screened, boundary_walk, segment_boundary

Walk = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]
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


# Examples per call of the engine (`TEAM.batch_rows`, unless max_batch is given): with curvature
# (dense, Krylov or GGN factors per example) or on an accelerator, and first order on CPU
MAX_BATCH, FIRST_ORDER_CPU_BATCH = 128, 512

# The target sweep (`TEAM.target_sweep`) takes the images the untargeted fixed-budget attack leaves
# whose walk ended within SWEEP_RANGE x eps (or found no point); its targeted phase, those of them
# whose full walk then ended within TARGETED_RANGE x eps (or found no point), and of its (image,
# target) pairs only those whose targeted walk ended within that range climb inside the ball
SWEEP_RANGE = 1.25
TARGETED_RANGE = 1.15

# TEAM's L0 subproblem with l0_search's best-single-coordinate safeguard (docs/engine.md, "L0")
L0_SAFEGUARD = True


def _hessian_diagonal(e: Expansion) -> torch.Tensor:
    """diag(H) (B, n) of an expansion: dense, factored Q Hs Q^T, or zero (first order)."""
    if e.H is not None:
        return torch.diagonal(e.H, dim1=1, dim2=2)
    if e.Q is None or e.Q.shape[2] == 0:
        return torch.zeros_like(e.g)
    return (torch.bmm(e.Q, e.Hs) * e.Q).sum(2)


def _chunked(rows: int, x, y, target, fn: Callable) -> tuple[torch.Tensor, ...]:
    """fn(x, y, target) -> a tuple of per-example tensors, run over chunks of at most `rows` examples."""
    parts = []
    for i in range(0, x.shape[0], rows):
        goal = Goal(y, target)[i:i + rows]
        parts.append(fn(x[i:i + rows], goal.y, goal.target))
    return tuple(torch.cat(p) for p in zip(*parts))


def _pixel_groups(x: torch.Tensor) -> torch.Tensor | None:
    """Coordinate -> pixel position for colour images (L0 counts positions), None otherwise."""
    if x.dim() == 4 and x.shape[1] > 1:
        C, H, W = x.shape[1:]
        return torch.arange(H * W, device=x.device).repeat(C)
    return None


@dataclass(frozen=True)
class SearchConfig:
    """Paper and iterated modes (no eps): the radius search on each expansion."""

    search: str = "bracket"             # "bracket" | "paper" (the papers' C schedule)
    max_radius: float | None = None     # largest budget tried (default per norm: _RANGE, all pixels)
    per_pass: int = 8                   # radii judged in one batched forward pass
    rounds: int = 3                     # refinement rounds of the bracket
    box_iters: int = 30                 # iterations of the box-constrained subproblem solvers

    def __post_init__(self) -> None:
        if self.search not in ("bracket", "paper"):
            raise ValueError(f"search must be 'bracket' or 'paper', got {self.search!r}")
        _checked(self, max_radius=dict(strict=True, allow_none=True), per_pass=_COUNT, rounds=_COUNT0,
                 box_iters=_COUNT)


@dataclass(frozen=True)
class WalkConfig:
    """Min-norm mode: the boundary walk (teamattack.attacks.boundary_walk)."""

    steps: int = 40                     # the length of the walk that goes furthest
    starts: int = 6                     # untargeted walks per image (strongest other classes)
    screen: int = 8                     # steps every start walks before only the best goes on
    overshoot: float = 0.02             # initial aim beyond the model's boundary (adapted per example)
    polish: bool = False                # ReLU networks: the exact search over neighbouring regions after the walk

    def __post_init__(self) -> None:
        _checked(self, steps=_COUNT, starts=_COUNT, screen=_COUNT0, overshoot={})
        if not isinstance(self.polish, bool):
            raise ValueError(f"polish must be True or False, got {self.polish!r}")


@dataclass(frozen=True)
class BudgetConfig:
    """Fixed budget (eps given, every mode but paper): the objective minimised inside eps."""

    eps: float
    steps: int = 10                     # L0: trust-region iterations; L2 / Linf: ascent steps after the walk
    box_iters: int = 30
    targets: int = 0                    # L2 / Linf untargeted: the target sweep's classes (`TEAM.target_sweep`)

    def __post_init__(self) -> None:
        _checked(self, eps=dict(strict=True), steps=_COUNT, box_iters=_COUNT, targets=_COUNT0)


_COUNT, _COUNT0 = dict(low=1, integer=True), dict(low=0, integer=True)


def _checked(config: object, **rules: dict) -> None:
    """Validate (and normalise: ints for counts) the named fields of a frozen config (check_number)."""
    for name, rule in rules.items():
        object.__setattr__(config, name, check_number(name, getattr(config, name), **rule))


# the keyword arguments each mode takes (besides model, norm, objective, targeted, hessian, mode, eps,
# krylov_k, max_batch); any other one given explicitly is rejected
_MODE_ARGS = {
    "paper": ("search", "max_radius", "per_pass", "rounds", "box_iters"),
    "iterated": ("steps", "search", "max_radius", "per_pass", "rounds", "box_iters"),
    "min-norm": ("steps", "starts", "screen", "overshoot", "polish"),
    "paper+eps": ("box_iters",),
    "budget": ("steps", "starts", "screen", "overshoot", "targets"),   # L2 / Linf: walk, then ascents
    "budget-l0": ("steps", "box_iters"),                     # L0: trust-region iterations
}


def default_mode(norm: str) -> str:
    """The strongest minimum-norm mode for a norm: the boundary walk (L2, Linf), iterated (L0)."""
    return "iterated" if norm == "l0" else "min-norm"


class TEAM(Attack):
    """Second-order Taylor-expansion attack (see the module docstring and docs/engine.md).

    `TEAM(model, norm)` is the strongest minimum-norm attack the library has for that norm (the
    boundary walk for L2 / Linf, the iterated search with the pixel clean-up for L0); the papers'
    algorithm is `mode="paper"`; with `eps` it is a fixed-budget attack. Arguments that do not
    apply to the chosen mode are rejected.

    Args:
        model: classifier taking inputs in [0, 1], in eval mode.
        norm: "l2", "linf" or "l0" (L0 counts changed pixel positions).
        objective: "T1".."T6" or "margin" (teamattack.objectives); default T1 untargeted, T2 targeted. Paper and
            iterated modes (the walk uses the decision margin).
        targeted: attack toward `target` passed at call time.
        hessian: "exact" | "krylov" | "ggn" | "none" | "auto" (see teamattack.curvature); "auto"
            is decided for each call and recorded in `result.info["hessian"]`.
        mode: None (default: `default_mode(norm)`) | "paper" | "iterated" | "min-norm".
        eps: fixed budget. Paper mode: one expansion, its subproblem solved at eps; every other
            mode: the fixed-budget attack (`TEAM.fixed_budget`).
        steps: iterations of the mode's outer loop: iterated, the expansions (default 10);
            min-norm, the length of the longest walk (default 40); with eps in L2 / Linf, the
            ascent steps after the walk (default 50; teamattack.attacks.fixed_budget); with eps in
            L0, the trust-region iterations (default 10). Not taken by paper mode (one expansion).
        starts, screen, overshoot: min-norm (and the walk of the L2 / Linf fixed-budget attack),
            see `WalkConfig` and teamattack.attacks.boundary_walk: 6 starts screened for 8 steps,
            then the best walks on (6 x 8 + 32 = 80 gradients per image untargeted; targeted, two
            walks of that length, a cold and a hot smooth max: 160). The fixed-budget walk: 3 starts,
            8 screened, 30 long (targeted: the cold walk alone, as long as those cost together).
        polish: min-norm on a ReLU network (an nn.Sequential of Linear / Conv2d / Flatten / ReLU):
            after the walk, the exact search over the linear regions next to its point
            (teamattack.exact.regions; no gradients, QPs / MILPs on the CPU, seconds per image on
            an MNIST MLP; `result.info["polish"]`). Default False.
        targets: L2 / Linf fixed budget, untargeted: after the attack, the images it leaves whose walk
            ended near eps get TEAM's full walk and then the targeted fixed-budget attack toward
            each of their `targets` most likely other classes (`TEAM.target_sweep`; default 0, off:
            more gradients on those images, the strength of AutoAttack's targeted attacks).
        search, max_radius, per_pass, rounds: paper and iterated radius search (`SearchConfig`).
        box_iters: iterations of the box-constrained subproblem solvers (paper, iterated, L0 eps).
        krylov_k: Lanczos steps (Hessian-vector products) for hessian="krylov" (or "auto").
        max_batch: examples processed together; larger batches are split (bounds the memory of
            the curvature and the box solvers; results do not depend on it, up to float rounding).
            Default: `batch_rows` (MAX_BATCH, or FIRST_ORDER_CPU_BATCH on CPU without curvature).
    """

    name = "team"

    def __init__(
        self,
        model: nn.Module,
        norm: str = "l2",
        objective: str | None = None,
        targeted: bool = False,
        hessian: str = "auto",
        mode: str | None = None,
        eps: float | None = None,
        *,
        steps: int | None = None,
        starts: int | None = None,
        screen: int | None = None,
        overshoot: float | None = None,
        polish: bool | None = None,
        search: str | None = None,
        targets: int | None = None,
        max_radius: float | None = None,
        per_pass: int | None = None,
        rounds: int | None = None,
        box_iters: int | None = None,
        krylov_k: int | None = None,
        max_batch: int | None = None,
    ) -> None:
        super().__init__(model, targeted)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        mode = default_mode(norm) if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (or None), got {mode!r}")
        if hessian not in SOURCES:
            raise ValueError(f"hessian must be one of {SOURCES}, got {hessian!r}")
        eps = check_number("eps", eps, low=0.0, strict=True, allow_none=True)
        if mode == "min-norm" and norm == "l0":
            raise ValueError("mode='min-norm' walks the boundary in L2 or Linf; for L0 use mode='iterated'")
        if mode == "min-norm" and eps is None and norm == "linf" and hessian not in ("auto", "none"):
            raise ValueError("the Linf min-norm walk uses the first-order model: hessian='none' or 'auto'")
        given = {k: v for k, v in dict(steps=steps, starts=starts, screen=screen, overshoot=overshoot,
                                      polish=polish, search=search, targets=targets, max_radius=max_radius, per_pass=per_pass,
                                      rounds=rounds, box_iters=box_iters).items() if v is not None}
        kind = mode
        if eps is not None:
            kind = "paper+eps" if mode == "paper" else "budget-l0" if norm == "l0" else "budget"
        wrong = sorted(set(given) - set(_MODE_ARGS[kind]))
        if wrong:
            what = {"paper+eps": "mode='paper' with eps", "budget": f"the {norm} fixed-budget attack (eps)",
                    "budget-l0": "the l0 fixed-budget attack (eps)"}.get(kind, f"mode={mode!r}")
            raise ValueError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to {what}")
        if krylov_k is not None and hessian not in ("krylov", "auto"):
            raise ValueError("krylov_k applies to hessian='krylov' (or 'auto') only")
        if targets and targeted:
            raise ValueError("targets (the target sweep) applies to the untargeted fixed-budget attack")
        if polish and not regions.applies(model):
            raise ValueError("polish searches the linear regions of a ReLU network: the model must be an "
                             "nn.Sequential of Linear / Conv2d / Flatten / ReLU (teamattack.exact.regions)")
        if objective is not None and mode == "min-norm" and eps is None:
            raise ValueError("the min-norm walk uses the decision margin: objective does not apply")
        # the numbers in `given` are checked by the configs they go into (SearchConfig, WalkConfig, BudgetConfig)
        self.krylov_k = check_number("krylov_k", 20 if krylov_k is None else krylov_k, low=1, integer=True)
        self.max_batch = check_number("max_batch", max_batch, low=1, integer=True, allow_none=True)

        objective = objective or ("T2" if targeted else "T1")
        self.objective: Objective = get_objective(objective)
        if self.objective.targeted != targeted:
            raise ValueError(f"objective {objective} is {'targeted' if self.objective.targeted else 'untargeted'}"
                             f" but targeted={targeted}")
        self.norm, self.mode, self.hessian, self.eps = norm, mode, hessian, eps
        pick = lambda cls, skip=(): cls(**{k: v for k, v in given.items() if k in cls.__dataclass_fields__ and k not in skip})
        self.search_config = pick(SearchConfig)
        self.walk_config = pick(WalkConfig)
        self.budget_config = pick_budget = None
        if kind == "budget":  # L2 / Linf: a short screened walk, then `steps` ascent steps (fixed_budget.py)
            self.walk_config = WalkConfig(steps=fb.WALK_STEPS, starts=given.get("starts", fb.WALK_STARTS),
                                          screen=given.get("screen", fb.WALK_SCREEN),
                                          overshoot=given.get("overshoot", WalkConfig.overshoot))
            self.budget_config = pick_budget = BudgetConfig(eps, steps=given.get("steps", fb.ASCENT_STEPS),
                                                            targets=given.get("targets", 0))
        elif kind == "budget-l0":
            self.budget_config = pick_budget = BudgetConfig(eps, **{k: v for k, v in given.items() if k in ("steps", "box_iters")})
        # steps: the outer loop's iterations in this mode (one expansion each)
        self.steps = (pick_budget.steps if pick_budget is not None else
                      {"paper": 1, "iterated": self.walk_config.steps if "steps" in given else 10, "min-norm": self.walk_config.steps}[mode])
        self.name = f"team-{mode}-{norm}"

    # ------------------------------------------------------------------ curvature
    def curvature_source(self, model, x, y, target) -> tuple[str, str]:
        """The curvature source this call uses and why: `hessian`, or what "auto" picks for this batch."""
        if self.hessian != "auto":
            return self.hessian, "requested"
        src, why = choose(model, self.objective, x, y, target, mode=self.mode)
        log.info("TEAM hessian='auto' picked %r: %s", src, why)
        return src, why

    def _expander(self, source: str) -> ExpandFn:
        """expand(model, objective, x, y, target, other) with this call's curvature source."""
        def expand_fn(model, obj, x, y, target, other=None) -> Expansion:
            return expand(model, obj, x, y, target, other, source=source, k=self.krylov_k)
        return expand_fn

    # ------------------------------------------------------------------ subproblems under the budget
    @staticmethod
    def _box(x: torch.Tensor, cap: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds (B, n) of a step d from x: x + d in [0, 1], and |d_i| <= cap (B,) where given."""
        xf = _flat(x)
        lower, upper = -xf, 1.0 - xf
        if cap is not None:
            c = cap.to(xf.dtype)[:, None]
            lower, upper = torch.maximum(lower, -c), torch.minimum(upper, c)
        return lower, upper

    def _l0_path(self, e: Expansion, x: torch.Tensor, cap: torch.Tensor | None = None) -> sp.L0Path:
        """The L0 subproblem's pruning around x, shared by every budget k asked of this expansion."""
        lower, upper = self._box(x, cap)
        return sp.l0_path(e.g, e.matvec, lower, upper, groups=_pixel_groups(x), iters=self._box_iters)

    def _solve_many(self, e: Expansion, x: torch.Tensor, radii: torch.Tensor,
                    l0_path: sp.L0Path | None = None, cap: torch.Tensor | None = None) -> torch.Tensor:
        """argmin phi(d) over the budget ball (per radius) and the box, for radii (B, K): (B, K, n).

        d is the total perturbation from x (e is centred on x, or re-centred there). All K radii
        are solved as one batch of B*K rows sharing the expansion's curvature (no copies); the
        L2 starts come from one eigen-decomposition of the reduced problem; L0 prunes once
        (`l0_path`, pass it to reuse it across calls with the same e, x and cap). cap (B,): a bound
        on every coordinate of d as well (L0's trust-region steps).
        """
        B, K = radii.shape
        n = e.n
        lower, upper = (b.repeat_interleave(K, dim=0) for b in self._box(x, cap))
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
            _, g_hat, ev, _ = e.small_eig()
            d_trs = sp.trust_region_eig(g_hat, ev, e.eigenvectors(), radii.to(e.g.dtype)).reshape(B * K, n)
            d = sp.trust_region_box(g, mv, r, lower, upper, iters=self._box_iters, trs=d_trs)
        elif self.norm == "linf":
            d = sp.box_qp(g, mv, torch.maximum(lower, -r[:, None]), torch.minimum(upper, r[:, None]),
                          iters=self._box_iters)
        else:
            # diag: l0_search's safeguard, never worse on the model than the best single-coordinate move
            d = sp.l0_search(g, mv, r.round().long(), lower, upper, iters=self._box_iters,
                             diag=_hessian_diagonal(e).repeat_interleave(K, dim=0) if L0_SAFEGUARD else None,
                             path=l0_path if l0_path is not None else self._l0_path(e, x, cap))
        return d.reshape(B, K, n)

    def _limits(self, x: torch.Tensor) -> tuple[float, float]:
        lo, hi = _RANGE[self.norm]
        if self.norm == "l0":
            hi = float(x[0, 0].numel() if (x.dim() == 4 and x.shape[1] > 1) else x[0].numel())
        return lo, float(self.search_config.max_radius or hi)

    # ------------------------------------------------------------------ modes
    def run(self, model: CountingModel, x, y, target):
        source, why = self.curvature_source(model, x, y, target)
        expand_fn = self._expander(source)
        info = {"hessian": source, "hessian_reason": why}
        rows = self.batch_rows(source, x.device)
        if self._sweeps(target):   # the fixed-budget attack, then a second look at the near misses
            screens: list[Screened] = []   # its walk's screened starts, taken over by the sweep's walk
            res = _chunked(rows, x, y, None, lambda xs, ys, ts: self._budget_l2_linf(
                model, expand_fn, xs, ys, ts, on_screened=screens.append))
            out = self.target_sweep(model, expand_fn, x, y, fb.Budget(*res), rows,
                                    Screened.cat(screens) if screens else None)
            return out, torch.full((x.shape[0],), float(self.eps), device=x.device, dtype=x.dtype), info
        out, radius = _chunked(rows, x, y, target, lambda xs, ys, ts: self._run_batch(model, expand_fn, xs, ys, ts))
        if self.mode == "min-norm" and self.eps is None and self.walk_config.polish:
            out, radius, info["polish"] = self._polish(model, x, y, target, out, radius)
        return out, radius, info

    def _polish(self, model: CountingModel, x, y, target, out, radius):
        """The walk's points improved by `exact.regions.polish` (ReLU networks); what it did, for info."""
        if not regions.applies(self.model, tuple(x.shape[1:])):
            raise ValueError(f"polish: the network has more than {regions.MAX_UNITS} hidden units")
        layers = regions.relu_layers(self.model, tuple(x.shape[1:]), x.device)
        p = regions.polish(model, x, y, target, out, self.norm, layers=layers)
        radius = torch.where(p.moved, p.distance.to(radius.dtype), radius)
        return p.x_adv, radius, {"moved": int(p.moved.sum()), "seconds": p.seconds}

    def batch_rows(self, source: str, device: torch.device) -> int:
        """Examples processed together in a call with this curvature source: `max_batch` if given;
        else MAX_BATCH, or FIRST_ORDER_CPU_BATCH for a first-order call on CPU (no per-example
        curvature to hold, and the walk keeps its passes' activations small itself,
        `boundary_walk.CHUNK_BYTES`; a split costs every step's Python overhead once more)."""
        if self.max_batch is not None:
            return self.max_batch
        return FIRST_ORDER_CPU_BATCH if source == "none" and device.type == "cpu" else MAX_BATCH

    def _sweeps(self, target) -> bool:
        """Whether this call ends with `target_sweep` (L2 / Linf fixed budget, untargeted, targets > 0)."""
        return (self.budget_config is not None and self.norm != "l0" and target is None
                and self.budget_config.targets > 0)

    def _run_batch(self, model: CountingModel, expand_fn: ExpandFn, x, y, target):
        if self.mode == "paper" and self.eps is not None:   # one expansion, its subproblem at eps
            radius = torch.full((x.shape[0],), float(self.eps), device=x.device, dtype=x.dtype)
            e = expand_fn(model, self.objective, x, y, target)
            d = self._solve_many(e, x, radius[:, None])[:, 0]
            return (x + d.reshape(x.shape)).clamp(0, 1), radius
        if self.eps is not None:
            radius = torch.full((x.shape[0],), float(self.eps), device=x.device, dtype=x.dtype)
            return self.fixed_budget(model, expand_fn, x, y, target), radius
        if self.mode == "min-norm":
            return self.walk(model, expand_fn)(x, y, target)
        if self.norm == "l0" and self.mode == "iterated":
            return self._l0_search(model, expand_fn, x, Goal(y, target))
        return self._smallest_budget(model, expand_fn, x, Goal(y, target))

    def _l0_search(self, model, expand_fn: ExpandFn, x, goal: Goal) -> tuple[torch.Tensor, torch.Tensor]:
        """TEAM-L0's minimum-norm search: the iterated radius search, then the pixels the network
        does not need reset (`prune_pixels`); (x_adv, changed pixels), NaN where none was found."""
        best, best_r = self._smallest_budget(model, expand_fn, x, goal)
        best = prune_pixels(model, x, best, goal.y, goal.target, groups=_pixel_groups(x))
        best_r = torch.where(torch.isnan(best_r), best_r, self._distance(best, x).to(best_r.dtype))
        return best, best_r

    def walk(self, model: CountingModel, expand_fn: ExpandFn) -> Walk:
        """TEAM's minimum-norm walk bound to this attack's settings: walk(x, y, target) -> (x_adv, distance).

        L2 / Linf only; distance is NaN where no adversarial point was found (then x_adv = x).
        """
        c = self.walk_config

        def walk_fn(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            return boundary_walk(model, expand_fn, x, y, target, norm=self.norm, steps=c.steps,
                                 starts=c.starts, screen=c.screen, overshoot=c.overshoot)

        return walk_fn

    def fixed_budget(self, model: CountingModel, expand_fn: ExpandFn, x, y, target) -> torch.Tensor:
        """The fixed-budget attack (eps given, every mode but paper): x_adv inside eps and the box.

        The one seam of the eps path. L2 / Linf: a short screened walk, then an APGD-style
        margin ascent inside the ball from the walk's point (teamattack.attacks.fixed_budget).
        L0: the minimum-norm search (iterated, with the pixel clean-up) thresholded at eps; the
        images it leaves above eps get trust-region iterations of the second-order model inside
        the budget (`_trust_region_run`). Why the search comes first: docs/engine.md, "Modes".
        """
        if self.norm != "l0":
            return self._budget_l2_linf(model, expand_fn, x, y, target).points
        goal = Goal(y, target)
        best, best_r = self._l0_search(model, expand_fn, x, goal)
        inside = torch.isfinite(best_r) & (best_r <= float(self.eps))
        out = torch.where(inside.view(-1, *[1] * (x.dim() - 1)), best, x)
        rest = (~inside).nonzero().squeeze(1)
        if len(rest):
            radius = torch.full((len(rest),), float(self.eps), device=x.device, dtype=x.dtype)
            out[rest] = self._trust_region_run(model, expand_fn, x[rest], goal[rest], radius)
        return out

    def _budget_walk(self, model: CountingModel, expand_fn: ExpandFn,
                     on_screened: Callable[[Screened], None] | None = None) -> Walk:
        """The fixed-budget attack's walk: short and screened, images leave once within eps
        (`on_screened`: see `boundary_walk`)."""
        c = self.walk_config

        def walk(xx: torch.Tensor, yy: torch.Tensor, tt: torch.Tensor | None):
            # targeted: one walk (the cold one), so that the ascents keep their share of the budget
            return boundary_walk(model, expand_fn, xx, yy, tt, norm=self.norm, steps=c.steps,
                                 starts=c.starts, screen=c.screen, overshoot=c.overshoot,
                                 targeted_walks=TARGETED_WALKS[:1], stop_at=float(self.eps),
                                 on_screened=None if tt is not None else on_screened)

        return walk

    def _budget_l2_linf(self, model: CountingModel, expand_fn: ExpandFn, x, y, target,
                        on_screened: Callable[[Screened], None] | None = None) -> fb.Budget:
        """The L2 / Linf fixed-budget attack: the walk, then the ascents (teamattack.attacks.fixed_budget)."""
        return fb.fixed_budget(model, x, y, target, norm=self.norm, eps=float(self.eps),
                               walk=self._budget_walk(model, expand_fn, on_screened), steps=self.budget_config.steps)

    def target_sweep(self, model: CountingModel, expand_fn: ExpandFn, x, y, res: fb.Budget, rows: int,
                     screened: Screened | None = None) -> torch.Tensor:
        """A second look at the images the untargeted fixed-budget attack `res` leaves robust whose
        walk ended within SWEEP_RANGE x eps (or found nothing): TEAM's full minimum-norm walk
        (`WalkConfig`'s 6 starts and 40 steps, with the fixed-budget walk's screen and overshoot;
        it takes over the starts that walk screened, `screened`, instead of screening them again),
        then, for the images it leaves whose walk ended within TARGETED_RANGE x eps or found nothing
        (the full walk ends near the minimal distance, a tighter bound than the short walk's), the
        targeted fixed-budget attack toward each of their
        `targets` most likely other classes at x (as APGD-T and FAB-T sweep the top classes; a
        targeted success is an untargeted one), every (image, target) pair a row of one batch, the
        most likely class that broke the image kept; a pair's ascents run only where its targeted
        walk ended within TARGETED_RANGE x eps (or found nothing). Images far beyond eps are not looked at again:
        each phase costs about a fixed-budget attack, and they are there for the images near the
        boundary. Every point kept was verified by the network. rows: examples per call (`batch_rows`)."""
        out, eps = res.points.clone(), float(self.eps)
        left = (~res.adversarial & ~(res.walk_distance > SWEEP_RANGE * eps)).nonzero().squeeze(1)
        if not left.numel():
            return out
        c = WalkConfig(screen=self.walk_config.screen, overshoot=self.walk_config.overshoot)
        pts, dist = torch.empty_like(x[left]), torch.empty(len(left), device=x.device, dtype=x.dtype)
        for part in torch.arange(len(left), device=x.device).split(rows):
            i = left[part]
            pts[part], dist[part] = boundary_walk(
                model, expand_fn, x[i], y[i], None, norm=self.norm, steps=c.steps, starts=c.starts, screen=c.screen,
                overshoot=c.overshoot, stop_at=eps, screened=None if screened is None else screened[i])
        hit = dist <= eps   # NaN (nothing found) is not
        out[left[hit]] = pts[hit]
        left = left[~hit & ~(dist > TARGETED_RANGE * eps)]
        if not left.numel():
            return out
        with torch.no_grad():
            ranked = model(x[left]).scatter(1, y[left, None], float("-inf")).argsort(1, descending=True)
        k = min(self.budget_config.targets, ranked.shape[1] - 1)
        # every (image, target) pair is a row of one batch (rows of an image side by side)
        pairs = left.repeat_interleave(k)
        pts, adv, _ = _chunked(rows, x[pairs], y[pairs], ranked[:, :k].reshape(-1), lambda xs, ys, ts: fb.fixed_budget(
            model, xs, ys, ts, norm=self.norm, eps=eps, walk=self._budget_walk(model, expand_fn),
            steps=self.budget_config.steps, ascend_within=TARGETED_RANGE * eps))
        first = torch.where(adv.view(-1, k), torch.arange(k, 0, -1, device=x.device), 0).argmax(1)
        won = adv.view(-1, k).any(1)
        pick = torch.arange(len(left), device=x.device) * k + first
        out[left[won]] = pts[pick[won]]
        return out

    @property
    def _box_iters(self) -> int:
        return (self.budget_config or self.search_config).box_iters

    def _smallest_budget(self, model, expand_fn: ExpandFn, x, goal: Goal):
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
        # L0's steps change whole pixels (the radii count them): a per-example bound on every
        # coordinate of the step, halved after a step that found nothing better on the network
        # (else the next expansion is the same and so is every later step), doubled after one that did
        cap = torch.ones(B, device=x.device, dtype=x.dtype) if self.norm == "l0" else None
        for step in range(self.steps):
            if step == 0:
                e = expand_fn(model, obj, x, goal.y, goal.target)
                self._budget_search(model, e, x, goal, best, best_r)
                continue
            found = torch.isfinite(best_r)
            if found.any():  # re-expand at the boundary and search below the best budget
                idx = found.nonzero().squeeze(1)
                gi = goal[idx]
                xb = self._boundary(model, xf[idx], _flat(best)[idx], gi, x.shape, iters=6)
                e = expand_fn(model, obj, xb.reshape(-1, *x.shape[1:]), gi.y, gi.target)
                e = e.recentred(xb - xf[idx])
                b_best, b_r = best[idx], best_r[idx]
                self._budget_search(model, e, x[idx], gi, b_best, b_r)
                best[idx], best_r[idx] = b_best, b_r
            if (~found).any():  # trust-region step from the current point
                idx = (~found).nonzero().squeeze(1)
                gi = goal[idx]
                xc = (xf[idx] + centre[idx]).reshape(-1, *x.shape[1:])
                e = expand_fn(model, obj, xc, gi.y, gi.target)
                moved, b_best, b_r, better = self._local_step(model, obj, e, x[idx], xc, gi,
                                                              None if cap is None else cap[idx])
                if cap is not None:
                    cap[idx] = torch.where(better, (2 * cap[idx]).clamp_max(1.0), cap[idx] / 2)
                centre[idx] = _flat(moved) - xf[idx]
                self._keep_into(best, best_r, idx, b_best, b_r)
        best_r = torch.where(torch.isfinite(best_r), best_r, torch.full_like(best_r, float("nan")))
        return best, best_r.to(x.dtype)

    def _distance(self, cand: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Distance in the attack's norm (L0: pixel positions), float64 (B,)."""
        fn = {"l2": metrics.l2, "linf": metrics.linf, "l0": metrics.l0}[self.norm]
        return fn(x, cand).double()

    def _budget_search(self, model, e: Expansion, x, goal: Goal, best, best_r) -> None:
        """Smallest budget C around x whose subproblem solution fools the network (updates best)."""
        B = x.shape[0]
        lo_default, hi_default = self._limits(x)
        path = self._l0_path(e, x) if self.norm == "l0" else None

        def evaluate(radii: torch.Tensor):
            K = radii.shape[1]
            cands = (x.unsqueeze(1) + self._solve_many(e, x, radii, path).reshape(B, K, *x.shape[1:])).clamp(0, 1)
            with torch.no_grad():
                logits = model(cands.reshape(B * K, *x.shape[1:]))
            return cands, goal.repeat_interleave(K).reached(logits).reshape(B, K)

        found = torch.isfinite(best_r)
        if self.search_config.search == "paper":
            start, step = _PAPER[self.norm]
            res = paper_schedule(evaluate, x, start, step, hi_default, per_pass=self.search_config.per_pass,
                                 integer=self.norm == "l0")
        else:
            hi = torch.where(found, best_r, torch.full_like(best_r, hi_default))
            lo = torch.where(found, (0.25 * best_r).clamp_min(lo_default), torch.full_like(best_r, lo_default))
            res = bracket_and_refine(evaluate, x, lo, hi, per_pass=self.search_config.per_pass, rounds=self.search_config.rounds,
                                     integer=self.norm == "l0")
        radius = res.radius.double()
        better = res.success & (radius < best_r)
        best[better] = res.x_adv[better]
        best_r[better] = radius[better]

    def _local_step(self, model, obj, e: Expansion, x, xc, goal: Goal, cap: torch.Tensor | None = None):
        """Trust-region step from xc: K step radii at once (cap: a bound on every coordinate of the
        step, per example); returns (new centre, best, best_r, whether a candidate was adversarial
        or lowered the objective on the network)."""
        B = x.shape[0]
        lo_default, hi_default = self._limits(x)
        K = self.search_config.per_pass
        frac = torch.linspace(0, 1, K, device=x.device, dtype=torch.float64)
        radii = torch.exp(math.log(lo_default) + frac * (math.log(hi_default) - math.log(lo_default)))
        radii = radii.to(x.dtype).expand(B, K)
        if self.norm == "l0":
            radii = radii.round().clamp_min(1)
        cands = (xc.unsqueeze(1) + self._solve_many(e, xc, radii, cap=cap).reshape(B, K, *x.shape[1:])).clamp(0, 1)
        gk = goal.repeat_interleave(K)
        yy, tt = gk.y, gk.target
        with torch.no_grad():
            logits = model(cands.reshape(B * K, *x.shape[1:]))
        ok = gk.reached(logits).reshape(B, K)
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
        return centre, best, best_r, move | torch.isfinite(best_r)

    @staticmethod
    def _keep_into(best, best_r, idx, cand, radius) -> None:
        better = torch.isfinite(radius) & (radius < best_r[idx])
        best[idx[better]] = cand[better]
        best_r[idx[better]] = radius[better]

    def _trust_region_run(self, model, expand_fn: ExpandFn, x, goal: Goal, radius: torch.Tensor) -> torch.Tensor:
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
            ga = goal[idx]
            ya, ta = ga.y, ga.target
            e = expand_fn(model, obj, xa, ya, ta).recentred(delta[idx])
            new = self._solve_many(e, x[idx], radius[idx, None])[:, 0]
            step = new - delta[idx]
            if self.norm == "l2":
                s = step.norm(dim=1, keepdim=True)
                step = step * torch.clamp(trust[idx, None] / s.clamp_min(1e-12), max=1.0)
            elif self.norm == "linf":
                step = step.clamp(-trust[idx, None], trust[idx, None])
            cand = delta[idx] + step
            predicted = e.phi(delta[idx]) - e.phi(cand)
            with torch.no_grad():
                logits = model((x[idx] + cand.reshape(xa.shape)).clamp(0, 1))
            f_now = e.phi(delta[idx])  # the re-centred model at the current point: the true f there
            f_new = obj(logits, ya, ta, obj.runner_up(logits, ya, ta) if obj.margin else None)
            rho = (f_now - f_new) / predicted.clamp_min(1e-12)
            accept = rho > 0.1
            delta[idx[accept]] = cand[accept]
            t = trust[idx]
            t = torch.where((rho > 0.75) & accept, torch.minimum(2 * t, radius[idx]), t)
            t = torch.where(rho < 0.25, 0.25 * t, t)
            trust[idx] = t
            done[idx[ga.reached(logits) & accept]] = True
        return (x + delta.reshape(x.shape)).clamp(0, 1)

    def _boundary(self, model, x0, xa, goal: Goal, shape, iters: int = 8) -> torch.Tensor:
        """Bisection on the segment [x0, xa] (flat rows, xa adversarial): the adversarial end closest to x0."""
        xb = segment_boundary(model, x0.reshape(-1, *shape[1:]), xa.reshape(-1, *shape[1:]), goal, iters)
        return xb.reshape(len(x0), -1)
