"""ReLU networks, L2: the minimal perturbation by branch and bound on the ReLU phases, each node an exact QP.

The problem `min ||x - x0||^2` over the box, such that the network's output reaches the goal, is
a disjunction over the phases (on / off) of its unstable units. Each node of the search fixes some
phases and relaxes the others to their triangle; its relaxation is a convex QP in (x, activations)
with linear constraints, solved by PIQP (`piqp`, an interior-point QP solver, to 1e-10). Its
optimum is the node's lower bound; where no free unit is violated (every relaxed activation equals the ReLU of its input) the
QP's point is a true adversarial point and its value an upper bound. A node branches on its most
violated unit; nodes are explored best-first, across all candidate classes at once (untargeted:
the classes the backward bounds cannot rule out), so the least open bound is the proven lower bound
whenever the search stops.

Why not SCIP alone (`miqp.solve_scip`): SCIP relaxes the convex quadratic by linear cuts, and on a
784-input MLP its dual bound stayed at 0 after a minute, where the exact QP node bounds close most
images in tens to a thousand nodes (docs/bench.md, "The L2 judge on MNIST").
"""
from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .relu import backward_bounds, forward_np, triangle_relaxation

INSIDE = 1e-5  # logit margin of the returned points: the exact optimum is a tie, this is just across it


@dataclass(frozen=True)
class SearchOutcome:
    """The result of one image's search: squared distances, the best point, and the work done."""

    status: str              # "optimal" | "time-limit" | "infeasible" (nothing within r_max)
    d2: float                # squared distance of the best point (inf when none)
    x: np.ndarray | None     # the best point (flattened input)
    lower2: float            # proven lower bound on the squared optimum
    nodes: int               # QPs solved
    classes: tuple[int, ...]  # the classes searched (those the bounds did not rule out)


class PhaseQP:
    """The QP relaxation for one goal class `target`, with per-node phase fixings of the unstable units.

    Variables [x, a_1, ..., a_{L-1}]; rows: a = z for stable-on units, the triangle (a >= z,
    a <= s (z - l)) for unstable ones plus a row holding z (narrowed to a side when the phase is
    fixed), and the goal rows z_target - z_j >= 0. Objective ||x - x0||^2 = x'x - 2 x0'x + x0'x0.
    Solved by PIQP (a proximal interior-point QP solver): the structure is set up once per class
    and each node only changes bounds (row bounds infinite on a side get the row's interval bound,
    so that no row is dropped at setup).
    """

    def __init__(self, layers, bounds, x0: np.ndarray, lo_x: np.ndarray, hi_x: np.ndarray, target: int) -> None:
        import piqp

        self._piqp = piqp
        self.layers, self.target, self.n, self.offset = layers, target, len(x0), float(x0 @ x0)
        n = self.n
        rel = triangle_relaxation(layers[:-1], bounds, lo_x, hi_x)
        self.offs, self.col_lo, self.col_hi = rel.offs, rel.col_lo, rel.col_hi
        rows = rel.rows
        # per unstable unit: (layer, unit, activation column, row "a >= z", row "z", bias)
        self.unstable: list[tuple[int, int, int, int, int, float]] = []
        for k, i, col, ge in rel.unstable:
            W, b = layers[k]
            prev = np.arange(self.offs[k - 1], self.offs[k]) if k else np.arange(n)
            self.unstable.append((k, i, col, ge, len(rows), float(b[i])))
            rows.add(prev, W[i], -np.inf, np.inf)  # z - b, bounded on a side once the phase is fixed
        WL, bL = layers[-1]
        last = np.arange(self.offs[-2], self.offs[-1]) if len(self.offs) > 1 else np.arange(n)
        self.goal = np.arange(len(rows), len(rows) + len(bL) - 1)
        for j in range(len(bL)):
            if j != target:
                rows.add(last, WL[target] - WL[j], -(bL[target] - bL[j]), np.inf)
        nvar = rel.nvar
        self.G = rows.csr(nvar).tocsc()
        rlo, rhi = np.array(rows.lb, dtype=float), np.array(rows.ub, dtype=float)
        # the interval of every row over the column bounds replaces its infinite sides
        Gp, Gn = self.G.maximum(0), self.G.minimum(0)
        span_lo = Gp @ self.col_lo + Gn @ self.col_hi - 1.0
        span_hi = Gp @ self.col_hi + Gn @ self.col_lo + 1.0
        self.row_lo = np.where(np.isfinite(rlo), rlo, np.minimum(span_lo, rhi - 1.0))
        self.row_hi = np.where(np.isfinite(rhi), rhi, np.maximum(span_hi, rlo + 1.0))
        self.goal_lo = self.row_lo[self.goal].copy()
        P = sp.diags(np.r_[np.full(n, 2.0), np.zeros(nvar - n)]).tocsc()
        cost = np.zeros(nvar)
        cost[:n] = -2.0 * x0
        self.solver = piqp.SparseSolver()
        self.solver.settings.verbose = False
        self.solver.settings.eps_abs, self.solver.settings.eps_rel = 1e-10, 1e-10
        self.solver.settings.eps_duality_gap_abs, self.solver.settings.eps_duality_gap_rel = 1e-10, 1e-10
        self.solver.settings.max_iter = 500
        self._eps_inf = self.solver.settings.eps_primal_inf
        self.solver.setup(P, cost, None, None, self.G, self.row_lo, self.row_hi, self.col_lo, self.col_hi)

    def solve(self, fix: dict[int, int], inside: float = 0.0) -> tuple[str, float, np.ndarray | None]:
        """The node with phases `fix` (unstable index -> 0 off / 1 on): status, lower bound, (x, activations).

        `inside` > 0 asks every goal row to hold with that much to spare (a point strictly across the
        boundary, where the exact one sits within the solver's tolerance of it). The bound is the
        least of the primal and dual objectives. "error" where PIQP did not converge."""
        row_lo, row_hi, col_hi = self.row_lo.copy(), self.row_hi.copy(), self.col_hi.copy()
        row_lo[self.goal] = self.goal_lo + inside
        for idx, phase in fix.items():
            _, _, col, ge, z, b = self.unstable[idx]
            if phase == 0:    # a = 0, z <= 0
                col_hi[col] = 0.0
                row_hi[z] = -b
            else:             # a = z >= 0
                row_hi[ge] = b
                row_lo[z] = -b
        row_hi = np.maximum(row_hi, row_lo)
        self.solver.update(h_l=row_lo, h_u=row_hi, x_u=col_hi)
        status = self.solver.solve()
        if status == self._piqp.PIQP_PRIMAL_INFEASIBLE:
            # PIQP's infeasibility test can fire on a feasible node near a tie; an LP decides
            if not self._feasible(row_lo, row_hi, col_hi):
                return "infeasible", float("inf"), None
            self.solver.settings.eps_primal_inf = 1e-14
            self.solver.update(h_l=row_lo, h_u=row_hi, x_u=col_hi)
            status = self.solver.solve()
            self.solver.settings.eps_primal_inf = self._eps_inf
        res = self.solver.result
        if status == self._piqp.PIQP_SOLVED:
            value = min(res.info.primal_obj, res.info.dual_obj) + self.offset
            return "optimal", max(float(value), 0.0), np.array(res.x)
        return "error", float("nan"), None

    def _feasible(self, row_lo: np.ndarray, row_hi: np.ndarray, col_hi: np.ndarray) -> bool:
        """Whether the node's rows have a point (an LP by HiGHS' simplex, no objective)."""
        import scipy.optimize as so

        r = so.milp(np.zeros(self.G.shape[1]), integrality=np.zeros(self.G.shape[1]),
                    bounds=so.Bounds(self.col_lo, col_hi), constraints=[so.LinearConstraint(self.G, row_lo, row_hi)])
        return r.status != 2  # 2: infeasible

    def most_violated(self, v: np.ndarray, fix: dict[int, int], tol: float) -> int | None:
        """The free unstable unit whose relaxed activation is furthest above ReLU of its input."""
        worst, gap = None, tol
        for idx, (k, i, col, _, _, b) in enumerate(self.unstable):
            if idx in fix:
                continue
            prev = v[self.offs[k - 1]:self.offs[k]] if k else v[: self.n]
            excess = v[col] - max(float(self.layers[k][0][i] @ prev) + b, 0.0)
            if excess > gap:
                worst, gap = idx, excess
        return worst


def goal_margin(layers, x: np.ndarray, y: int, target: int | None) -> float:
    """>= 0 where x reaches the goal: z_target - max_other (targeted) or max_{j != y} z_j - z_y."""
    z = forward_np(layers, x)[-1]
    if target is not None:
        return float(z[target] - np.delete(z, target).max())
    return float(np.delete(z, y).max() - z[y])


def candidate_classes(layers, bounds, x0, lo_x, hi_x, radius: float, y: int, target: int | None) -> list[int]:
    """The goal classes whose margin over the others can be >= 0 within the radius (backward bounds)."""
    WL, bL = layers[-1]
    out = []
    for j in ([target] if target is not None else [j for j in range(len(bL)) if j != y]):
        # j must beat y (untargeted) or every other class (targeted): each row z_j - z_k must reach 0
        rows = [y] if target is None else [k for k in range(len(bL)) if k != j]
        Wm = np.stack([WL[j] - WL[k] for k in rows])
        bm = np.array([bL[j] - bL[k] for k in rows])
        _, up = backward_bounds([*layers[:-1], (Wm, bm)], bounds, x0, lo_x, hi_x, radius)
        if (up >= 0).all():
            out.append(j)
    return out


@dataclass
class Frontier:
    """The state of a best-first search: the incumbent (squared distance, point), the open nodes
    (bound, order, class, phase fixings), and what the solved nodes proved."""

    inc2: float
    x_inc: np.ndarray | None
    heap: list
    unresolved: float = float("inf")   # the least bound of nodes PIQP could not solve
    floor2: float = float("inf")       # the least optimum of the nodes solved exactly
    nodes: int = 0

    def lower2(self) -> float:
        """The proven lower bound on the squared optimum (within the radius the bounds assumed)."""
        return min(self.heap[0][0] if self.heap else float("inf"), self.unresolved, self.floor2, self.inc2)


def explore(front: Frontier, qps: dict[int, PhaseQP], layers, x0: np.ndarray, lo_x: np.ndarray, hi_x: np.ndarray,
            y: int, target: int | None, gap: float = 1e-6, tol: float = 1e-7,
            stop: Callable[[Frontier], bool] = lambda f: False) -> Frontier:
    """Best-first branch and bound from the open nodes of `front` until none is left or `stop`.

    A node's QP bound at or above the incumbent (less the relative `gap`) prunes it; a relaxed
    point that is already adversarial improves the incumbent; where no free unit is violated the
    node's region problem is solved exactly, once more `INSIDE` across the boundary for the point;
    otherwise the node branches on its most violated unit. Updates and returns `front`.
    """
    order = itertools.count(max((entry[1] for entry in front.heap), default=-1) + 1)  # after the open nodes' own
    heap = front.heap
    while heap and not stop(front):
        bound, _, j, fix = heapq.heappop(heap)
        if bound >= front.inc2 * (1 - gap):
            continue
        status, val, v = qps[j].solve(fix)
        front.nodes += 1
        if status == "error":
            front.unresolved = min(front.unresolved, bound)
            continue
        if status == "infeasible" or val >= front.inc2 * (1 - gap):
            continue
        x = np.clip(v[: len(x0)], lo_x, hi_x)
        if goal_margin(layers, x, y, target) >= INSIDE:  # the relaxation's point may already be adversarial
            d2 = float(np.sum((x - x0) ** 2))
            if d2 < front.inc2:
                front.inc2, front.x_inc = d2, x
        unit = qps[j].most_violated(v, fix, tol)
        if unit is None:  # the relaxation is exact here: val is the node's optimum, its point on the boundary
            front.floor2 = min(front.floor2, val)
            st2, _, v2 = qps[j].solve(fix, inside=INSIDE)  # the same node, INSIDE across the boundary
            if st2 == "optimal":
                x = np.clip(v2[: len(x0)], lo_x, hi_x)
                d2 = float(np.sum((x - x0) ** 2))
                if d2 < front.inc2 and goal_margin(layers, x, y, target) >= 0:
                    front.inc2, front.x_inc = d2, x
            continue
        for phase in (0, 1):
            heapq.heappush(heap, (val, next(order), j, {**fix, unit: phase}))
    return front


def search(layers, bounds, x0: np.ndarray, lo_x: np.ndarray, hi_x: np.ndarray, y: int, target: int | None,
           r_max: float, x_start: np.ndarray | None = None, time_limit: float = 60.0,
           gap: float = 1e-6, tol: float = 1e-7) -> SearchOutcome:
    """min ||x - x0|| over the box such that x reaches the goal, by best-first branch and bound.

    `bounds`: the hidden layers' pre-activation bounds over the box and the ball of radius r_max
    (`relu.layer_bounds(..., ball=(x0, r_max))`). `x_start`: an adversarial point to start from
    (its distance is the first incumbent). `gap`: relative, on the squared distance.
    """
    t0 = time.perf_counter()
    inc2, x_inc = float(r_max) ** 2, None
    if x_start is not None and np.isfinite(x_start).all() and goal_margin(layers, x_start, y, target) >= 0:
        d2 = float(np.sum((x_start - x0) ** 2))
        if d2 <= inc2:
            inc2, x_inc = d2, x_start.copy()
    classes = candidate_classes(layers, bounds, x0, lo_x, hi_x, float(np.sqrt(inc2)), y, target)
    qps = {j: PhaseQP(layers, bounds, x0, lo_x, hi_x, j) for j in classes}
    front = Frontier(inc2, x_inc, [(0.0, k, j, {}) for k, j in enumerate(classes)])
    front = explore(front, qps, layers, x0, lo_x, hi_x, y, target, gap, tol,
                    stop=lambda f: time.perf_counter() - t0 > time_limit)
    found = front.x_inc is not None
    if front.heap and time.perf_counter() - t0 > time_limit:
        return SearchOutcome("time-limit", front.inc2 if found else float("inf"), front.x_inc, front.lower2(),
                             front.nodes, tuple(classes))
    if not found:
        status = "infeasible" if front.unresolved == float("inf") else "time-limit"
        return SearchOutcome(status, float("inf"), None, min(float(r_max) ** 2, front.unresolved), front.nodes,
                             tuple(classes))
    status = "optimal" if front.unresolved >= front.inc2 * (1 - gap) else "time-limit"
    return SearchOutcome(status, front.inc2, front.x_inc, min(front.inc2, front.unresolved, front.floor2),
                         front.nodes, tuple(classes))
