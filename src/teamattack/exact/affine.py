"""Affine (linear-softmax) models: exact minimal L2 / Linf perturbations in closed form or by a QP.

The untargeted adversarial set is a union of half-spaces `{(w_j - w_y).x' + b_j - b_y >= 0}`, so
the minimal distance is the minimum over classes j of the distance to one half-space intersected
with the box `[0, 1]^n`, solved exactly by a breakpoint search:
L2: `d(nu) = clip(nu a, -x, 1 - x)` (the 1-D dual), `a.d(nu)` is piecewise linear in nu;
Linf: the best point at radius eps has `a.d = sum_i |a_i| min(eps, cap_i)`, again piecewise linear.
Without the box the L2 value is the closed form `min_j (z_y - z_j) / ||w_y - w_j||`.
Targeted L2 (t must beat every other class: a polyhedron) is a small convex QP solved through its
dual (`m - 1` multipliers, L-BFGS-B) with an exact active-set polish; targeted Linf is an LP.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
import torch
from torch import nn

from .relu import INF, affine_form
from .result import ExactResult
from .verify import verify as _verify

# --------------------------------------------------------------------------------------------
def halfspace_l2(a: np.ndarray, c: float, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Exact min ||d||_2 s.t. a.d >= c, lo <= d <= hi (lo <= 0 <= hi; infinite caps allowed).

    The minimiser is d = clip(nu a, lo, hi) for the smallest nu >= 0 with a.d(nu) >= c; a.d(nu) is
    piecewise linear in nu with breakpoints where coordinates hit the box. Returns (inf, None) if
    the box cannot reach the half-space.
    """
    if c <= 0:
        return 0.0, np.zeros_like(a)
    absa = np.abs(a)
    cap = np.where(a > 0, hi, -lo)  # how far each coordinate may move in its useful direction
    use = absa > 0
    absa_u, cap_u = absa[use], cap[use]
    if np.sum(absa_u * np.where(np.isinf(cap_u), INF, cap_u)) < c:
        return INF, None
    beta = np.where(np.isinf(cap_u), INF, cap_u / np.where(absa_u > 0, absa_u, 1.0))
    order = np.argsort(beta, kind="stable")
    beta_s, a2_s, sat_s = beta[order], absa_u[order] ** 2, (absa_u * cap_u)[order]
    # h(nu) on [beta_(k-1), beta_(k)] = nu * sum_{i>=k} a_i^2 + sum_{i<k} |a_i| cap_i
    q = np.concatenate([np.cumsum(a2_s[::-1])[::-1], [0.0]])  # q[k] = sum_{i>=k}
    p = np.concatenate([[0.0], np.cumsum(np.where(np.isinf(sat_s), 0.0, sat_s))])  # p[k] = sum_{i<k}
    with np.errstate(invalid="ignore"):
        h_at = beta_s * q[:-1] + p[:-1]  # h at each breakpoint (inf where beta = inf)
    k = int(np.searchsorted(np.where(np.isnan(h_at), INF, h_at), c, side="left"))
    nu = (c - p[k]) / q[k] if q[k] > 0 else beta_s[k - 1]
    d = np.clip(nu * a, lo, hi)
    return float(np.linalg.norm(d)), d


def halfspace_linf(a: np.ndarray, c: float, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Exact min ||d||_inf s.t. a.d >= c, lo <= d <= hi: a.d at radius eps is sum |a_i| min(eps, cap_i)."""
    if c <= 0:
        return 0.0, np.zeros_like(a)
    absa = np.abs(a)
    cap = np.where(a > 0, hi, -lo)
    use = absa > 0
    absa_u, cap_u = absa[use], cap[use]
    if np.sum(absa_u * cap_u) < c:
        return INF, None
    order = np.argsort(cap_u, kind="stable")
    cap_s, a_s = cap_u[order], absa_u[order]
    q = np.concatenate([np.cumsum(a_s[::-1])[::-1], [0.0]])
    p = np.concatenate([[0.0], np.cumsum(a_s * cap_s)])
    h_at = cap_s * q[:-1] + p[:-1]
    k = int(np.searchsorted(h_at, c, side="left"))
    eps = (c - p[k]) / q[k]
    d = np.clip(np.sign(a) * eps, lo, hi)
    return float(eps), d


def polyhedron_l2(A: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray | None, str]:
    """min ||d||_2 s.t. A d >= c, lo <= d <= hi (a convex QP), through its dual.

    Dual: maximise q(lam) = min_{lo<=d<=hi} 1/2||d||^2 - lam.(A d - c) over lam >= 0, with
    d(lam) = clip(A^T lam, lo, hi); then an active-set polish solves the KKT system exactly.
    Returns (value, d, status) with status `optimal` | `infeasible` | `approx`.
    """
    if A.shape[0] == 1:
        v, d = halfspace_l2(A[0], float(c[0]), lo, hi)
        return v, d, "optimal" if d is not None else "infeasible"
    if np.all(c <= 0):
        return 0.0, np.zeros(A.shape[1]), "optimal"
    boxed = np.isfinite(lo).any() or np.isfinite(hi).any()
    if boxed:
        lp = so.linprog(np.zeros(A.shape[1]), A_ub=-A, b_ub=-c,
                        bounds=list(zip(np.where(np.isinf(lo), None, lo), np.where(np.isinf(hi), None, hi))),
                        method="highs")
        if lp.status == 2:
            return INF, None, "infeasible"

    def neg_q(lam):
        d = np.clip(A.T @ lam, lo, hi)
        r = A @ d - c
        return -(0.5 * d @ d - lam @ r), r

    res = so.minimize(neg_q, np.zeros(A.shape[0]), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, None)] * A.shape[0],
                      options={"maxiter": 20000, "ftol": 1e-16, "gtol": 1e-13, "maxcor": 30})
    lam = res.x
    d = np.clip(A.T @ lam, lo, hi)
    # active-set polish: coordinates strictly inside the box are free, constraints with lam > 0 active
    u = A.T @ lam
    free = (u > lo) & (u < hi)
    for thr in (1e-10, 1e-8, 1e-6):
        act = lam > thr * max(1.0, lam.max())
        if not act.any():
            continue
        dd = np.clip(u, lo, hi).copy()
        dd[free] = 0.0
        As, Af = A[act], A[act][:, free]
        rhs = c[act] - As @ dd
        mu, *_ = np.linalg.lstsq(Af @ Af.T, rhs, rcond=None)
        dd[free] = Af.T @ mu
        ok = (mu >= -1e-9).all() and (dd >= lo - 1e-9).all() and (dd <= hi + 1e-9).all() \
            and (A @ dd >= c - 1e-9).all() and np.allclose(As @ dd, c[act], atol=1e-9)
        if ok:
            return float(np.linalg.norm(dd)), dd, "optimal"
    feas = (A @ d >= c - 1e-7).all()
    return float(np.linalg.norm(d)), d, "approx" if feas else "error"


def l2_nobox_closed_form(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: int) -> float:
    """Untargeted minimal L2 of an affine model without the box: min_j (z_y - z_j)/||w_y - w_j||."""
    z = W @ x + b
    best = INF
    for j in range(len(b)):
        if j != y:
            best = min(best, (z[y] - z[j]) / np.linalg.norm(W[y] - W[j]))
    return float(best)


def _affine_class_problem(W, b, x, y, target):
    """Rows A, c of the success condition(s) A d >= c for d = x' - x."""
    z = W @ x + b
    m = len(b)
    if target is None:
        return [(W[j] - W[y], z[y] - z[j]) for j in range(m) if j != y]
    t = int(target)
    others = [j for j in range(m) if j != t]
    A = np.stack([W[t] - W[j] for j in others])
    c = np.array([z[j] - z[t] for j in others])
    return A, c


def min_dist_affine(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str = "l2",
                    target: torch.Tensor | None = None, box: bool = True, nudge: float = 1e-4) -> ExactResult:
    """Exact minimal L2 / Linf perturbation of an affine (linear-softmax) model, per image.

    Untargeted: min over classes of the one-half-space problem (exact breakpoints).
    Targeted L2: the polyhedron QP (dual + active-set polish). Targeted Linf: an LP (HiGHS).
    """
    if norm not in ("l2", "linf"):
        raise ValueError("norm must be l2 or linf")
    W, b = affine_form(model, tuple(x.shape[1:]), x.device)
    N = x.shape[0]
    xs = x.detach().reshape(N, -1).double().cpu().numpy()
    eps = np.full(N, np.nan)
    status: list[str] = []
    dirs = np.zeros_like(xs)
    secs = np.zeros(N)
    for i in range(N):
        t0 = time.perf_counter()
        x0 = xs[i]
        lo = -x0 if box else np.full_like(x0, -INF)
        hi = 1.0 - x0 if box else np.full_like(x0, INF)
        if target is None:
            best, bd = INF, None
            for a, c in _affine_class_problem(W, b, x0, int(y[i]), None):
                v, d = (halfspace_l2 if norm == "l2" else halfspace_linf)(a, float(c), lo, hi)
                if v < best:
                    best, bd = v, d
            st = "optimal" if bd is not None else "infeasible"
        else:
            A, c = _affine_class_problem(W, b, x0, int(y[i]), target[i])
            if norm == "l2":
                best, bd, st = polyhedron_l2(A, c, lo, hi)
            else:
                best, bd, st = _targeted_linf_lp(A, c, lo, hi)
        if bd is not None:
            eps[i] = best
            dirs[i] = bd
        status.append(st)
        secs[i] = time.perf_counter() - t0
    x_opt = torch.from_numpy(xs + dirs).to(x.dtype).to(x.device).reshape(x.shape)
    x_adv, verified = _verify(model, x, x_opt, y, target, eps, norm, nudge)
    return ExactResult(norm, eps, eps.copy(), status, x_adv, verified, secs,
                       info={"kind": "affine", "box": box})


def _targeted_linf_lp(A, c, lo, hi):
    n = A.shape[1]
    # variables d (n), eps; minimise eps s.t. A d >= c, -eps <= d <= eps, lo <= d <= hi
    cost = np.zeros(n + 1)
    cost[-1] = 1.0
    I = sp.identity(n, format="csr")
    e = sp.csr_matrix(np.ones((n, 1)))
    A_ub = sp.vstack([sp.hstack([-sp.csr_matrix(A), sp.csr_matrix((A.shape[0], 1))]),
                      sp.hstack([I, -e]), sp.hstack([-I, -e])]).tocsr()
    b_ub = np.concatenate([-c, np.zeros(2 * n)])
    bounds = [(float(l), float(h)) for l, h in zip(lo, hi)] + [(0.0, None)]
    r = so.linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if r.status == 2:
        return INF, None, "infeasible"
    if r.status != 0:
        return INF, None, "error"
    return float(r.x[-1]), r.x[:n], "optimal"
