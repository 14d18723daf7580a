"""Exact minimal adversarial distances: anchors to measure how far an attack is from the optimum.

Two cases are solved exactly (up to solver tolerances):

* **Affine (linear-softmax) models, L2 and Linf.** The untargeted adversarial set is a union of
  half-spaces `{(w_j - w_y).x' + b_j - b_y >= 0}`, so the minimal distance is the minimum over
  classes j of the distance to one half-space intersected with the box `[0, 1]^n`. With one linear
  constraint plus a box the problem is solved exactly by a breakpoint search:
  L2: `d(nu) = clip(nu a, -x, 1 - x)` (the 1-D dual), `a.d(nu)` is piecewise linear in nu;
  Linf: the best point at radius eps has `a.d = sum_i |a_i| min(eps, cap_i)`, again piecewise linear.
  Without the box the L2 value is the closed form `min_j (z_y - z_j) / ||w_y - w_j||`.
  Targeted L2 (t must beat every other class: a polyhedron) is a small convex QP solved through
  its dual (`m - 1` multipliers, L-BFGS-B) with an exact active-set polish.
* **ReLU MLPs (Linear/ReLU sequences, any affine pieces between ReLUs), Linf.** A mixed-integer
  program solved with `scipy.optimize.milp` (HiGHS): eps is a variable to minimise, big-M ReLU
  encodings with tight bounds (interval arithmetic for layer 1, LP bounds over the triangle
  relaxation for later layers), one disjunction over the other classes (a binary per class, `j`
  beats `y`), eps_max (e.g. the best attack's distance) as an upper bound, a time limit per
  image. The status is reported: `optimal`, `time-limit` (with the proven lower bound),
  `infeasible` (no adversarial point within eps_max).

Every returned point is checked by a forward pass of the model: at eps* + `nudge` (1e-4 by
default) it must be adversarial (`verified`). The exact boundary point itself is a tie between two
logits, so the point is nudged across it along the gradient sign (Linf) or direction (L2).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
import torch
from torch import nn

INF = float("inf")


class NotApplicable(ValueError):
    """The model is not of a kind whose optimum this module computes."""


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass
class ExactResult:
    """Per-image optimum of one exact computation.

    eps:      the optimum (best found when status is `time-limit`); nan when none was found.
    lower:    proven lower bound on the optimum (= eps when optimal).
    status:   `optimal` | `time-limit` | `infeasible` (nothing adversarial within eps_max) | `error`.
    x_adv:    a point at distance <= eps + nudge that the model misclassifies (where verified).
    verified: the forward pass confirms x_adv (adversarial, within eps + nudge).
    """

    norm: str
    eps: np.ndarray
    lower: np.ndarray
    status: list[str]
    x_adv: torch.Tensor
    verified: torch.Tensor
    seconds: np.ndarray
    info: dict = field(default_factory=dict)

    def records(self) -> list[dict]:
        def f(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return [
            {"eps": f(self.eps[i]), "lower": f(self.lower[i]), "status": self.status[i],
             "verified": bool(self.verified[i]), "seconds": float(self.seconds[i])}
            for i in range(len(self.status))
        ]

    @property
    def optimum(self) -> np.ndarray:
        """eps where proven optimal, nan elsewhere (what ratio_to_optimum uses)."""
        ok = np.array([s == "optimal" for s in self.status], dtype=bool)
        return np.where(ok, self.eps, np.nan)


# --------------------------------------------------------------------------------------------
# model structure
# --------------------------------------------------------------------------------------------
def _module_list(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        out: list[nn.Module] = []
        for m in model:
            out.extend(_module_list(m))
        return out
    return [model]


@torch.no_grad()
def _affine_of(fn, in_shape: tuple[int, ...], device, dtype=torch.float64, check: int = 3,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) with fn(x) = W x.flatten() + b, by Jacobian at 0; raises NotApplicable if not affine."""
    n = int(np.prod(in_shape))
    zero = torch.zeros((1, *in_shape), device=device, dtype=dtype)
    b = fn(zero).reshape(-1)
    eye = torch.eye(n, device=device, dtype=dtype).reshape(n, *in_shape)
    cols = []
    for i in range(0, n, 1024):
        cols.append(fn(eye[i : i + 1024]).reshape(min(1024, n - i), -1) - b)
    W = torch.cat(cols).T  # (m, n)
    g = torch.Generator(device="cpu").manual_seed(seed)
    probe = torch.rand((check, *in_shape), generator=g, dtype=dtype).to(device)
    want = fn(probe).reshape(check, -1)
    got = probe.reshape(check, -1) @ W.T + b
    scale = want.abs().max().clamp_min(1.0)
    if not torch.allclose(got, want, atol=1e-6 * float(scale), rtol=1e-6):
        raise NotApplicable("the model (or a piece of it between ReLUs) is not affine")
    return W.cpu().numpy(), b.cpu().numpy()


def affine_form(model: nn.Module, x_shape: tuple[int, ...], device=None) -> tuple[np.ndarray, np.ndarray]:
    """W (m, n), b (m,) in float64 of a model that is affine in its input (e.g. Flatten + Linear).

    Found numerically (Jacobian at 0, checked at random points), so any affine preprocessing
    inside the model (normalisation) is included. Raises NotApplicable otherwise.
    """
    if any(isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.MaxPool2d, nn.Softmax)) for m in model.modules()):
        raise NotApplicable("the model has non-linear layers; it is not a linear-softmax model")
    device = device or next(model.parameters()).device
    m64 = _to64(model)
    return _affine_of(m64, tuple(x_shape), device)


def _to64(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double().eval()


def relu_layers(model: nn.Module, x_shape: tuple[int, ...], device=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W1, b1), ..., (WL, bL)] of a ReLU network `A_L o ReLU o ... o ReLU o A_1` (A_l affine).

    The model must be an nn.Sequential (possibly nested) whose pieces between nn.ReLU modules are
    affine (Flatten, Linear, normalisation, even Conv2d). Raises NotApplicable otherwise.
    """
    device = device or next(model.parameters()).device
    if not isinstance(model, nn.Sequential):
        kids = list(model.children())
        if len(kids) == 1 and isinstance(kids[0], nn.Sequential):
            probe = torch.rand((2, *x_shape), generator=torch.Generator().manual_seed(1)).to(device)
            with torch.no_grad():
                same = torch.allclose(model(probe), kids[0](probe), atol=1e-6)
            if same:
                return relu_layers(kids[0], x_shape, device)
        raise NotApplicable("exact MILP needs an nn.Sequential of affine pieces and nn.ReLU")
    mods = _module_list(_to64(model))
    pieces: list[list[nn.Module]] = [[]]
    for m in mods:
        if isinstance(m, nn.ReLU):
            pieces.append([])
        else:
            pieces[-1].append(m)
    layers = []
    shape = tuple(x_shape)
    for piece in pieces:
        seq = nn.Sequential(*piece).to(device)
        W, b = _affine_of(seq, shape, device)
        with torch.no_grad():
            out = seq(torch.zeros((1, *shape), device=device, dtype=torch.float64))
        shape = tuple(out.shape[1:])
        layers.append((W, b))
    return layers


def _forward_np(layers, x: np.ndarray) -> np.ndarray:
    a = x
    for i, (W, b) in enumerate(layers):
        a = W @ a + b
        if i < len(layers) - 1:
            a = np.maximum(a, 0.0)
    return a


# --------------------------------------------------------------------------------------------
# affine models: L2 and Linf by breakpoints, targeted L2 by the dual
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


# --------------------------------------------------------------------------------------------
# ReLU MLPs: minimal Linf by MILP
# --------------------------------------------------------------------------------------------
def _interval(W, b, lo, hi):
    Wp, Wn = np.maximum(W, 0.0), np.minimum(W, 0.0)
    return Wp @ lo + Wn @ hi + b, Wp @ hi + Wn @ lo + b


class _Rows:
    """Sparse constraint rows lb <= A v <= ub, collected as COO triplets."""

    def __init__(self) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lb: list[float] = []
        self.ub: list[float] = []

    def add(self, cols, vals, lb, ub) -> None:
        k = len(self.lb)
        cols = np.asarray(cols, dtype=np.int64)
        self.r.append(np.full(len(cols), k, dtype=np.int64))
        self.c.append(cols)
        self.v.append(np.asarray(vals, dtype=np.float64))
        self.lb.append(lb)
        self.ub.append(ub)

    def matrix(self, nvar: int):
        if not self.lb:
            return None
        A = sp.csr_matrix((np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
                          shape=(len(self.lb), nvar))
        return so.LinearConstraint(A, np.array(self.lb), np.array(self.ub))


def _layer_bounds(layers, lo_x, hi_x, lp: bool = True):
    """Pre-activation bounds (l, u) of every hidden layer: interval arithmetic for layer 1, then LP
    over the triangle relaxation of the earlier layers (interval where lp=False)."""
    bounds: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(len(layers) - 1):
        if k == 0:
            l, u = _interval(*layers[0], lo_x, hi_x)
        else:
            pl, pu = bounds[-1]
            l, u = _interval(*layers[k], np.maximum(pl, 0.0), np.maximum(pu, 0.0))
            if lp:
                l, u = _lp_bounds(layers[: k + 1], bounds, lo_x, hi_x, l, u)
        bounds.append((l, u))
    return bounds


def _relaxation(layers_hidden, bounds, lo_x, hi_x):
    """LP variables [x, a_1, ..., a_K] with the triangle relaxation of each ReLU."""
    n = len(lo_x)
    sizes = [len(b[0]) for b in bounds]
    offs = np.cumsum([n] + sizes)
    nvar = int(offs[-1])
    rows = _Rows()
    var_lo = [lo_x] + [np.maximum(l, 0.0) for l, _ in bounds]
    var_hi = [hi_x] + [np.maximum(u, 0.0) for _, u in bounds]
    for k, ((W, bb), (l, u)) in enumerate(zip(layers_hidden, bounds)):
        prev = np.arange(0 if k == 0 else offs[k - 1], offs[k])
        for i in range(len(bb)):
            ai = offs[k] + i
            if u[i] <= 0:
                continue  # a fixed at 0 by its bounds
            if l[i] >= 0:  # a = W a_prev + b
                rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], bb[i])
            else:  # a >= z ; a <= u (z - l) / (u - l)
                rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], INF)
                s = u[i] / (u[i] - l[i])
                rows.add(np.r_[ai, prev], np.r_[1.0, -s * W[i]], -INF, s * (bb[i] - l[i]))
    return nvar, offs, rows, np.concatenate(var_lo), np.concatenate(var_hi)


def _lp_bounds(layers, bounds, lo_x, hi_x, l0, u0):
    W, bb = layers[-1]
    nvar, offs, rows, vlo, vhi = _relaxation(layers[:-1], bounds, lo_x, hi_x)
    cons = rows.matrix(nvar)
    last = np.arange(offs[-2], offs[-1]) if len(offs) > 1 else np.arange(len(lo_x))
    l, u = l0.copy(), u0.copy()
    bnds = so.Bounds(vlo, vhi)
    for i in range(len(bb)):
        if l0[i] >= 0 or u0[i] <= 0:
            continue  # already stable: the interval bound decides the encoding
        cost = np.zeros(nvar)
        cost[last] = W[i]
        for sign in (1.0, -1.0):
            r = so.milp(sign * cost, integrality=np.zeros(nvar), bounds=bnds,
                        constraints=[cons] if cons is not None else None)
            if r.status == 0:
                v = sign * r.fun + bb[i]
                if sign > 0:
                    l[i] = max(l[i], v - 1e-7)
                else:
                    u[i] = min(u[i], v + 1e-7)
    return l, u


def _milp_one(layers, x0, y, target, eps_max, time_limit, lp_bounds, mip_rel_gap):
    n = len(x0)
    lo_x, hi_x = np.maximum(0.0, x0 - eps_max), np.minimum(1.0, x0 + eps_max)
    hidden = layers[:-1]
    bounds = _layer_bounds(layers, lo_x, hi_x, lp=lp_bounds)
    sizes = [len(b[0]) for b in bounds]
    # variables: x (n) | eps | a_1 .. a_K | delta (unstable units) | s (classes, untargeted)
    i_eps = n
    offs = [n + 1]
    for s_ in sizes:
        offs.append(offs[-1] + s_)
    unstable = [np.where((l < 0) & (u > 0))[0] for l, u in bounds]
    d_off = [offs[-1]]
    for us in unstable:
        d_off.append(d_off[-1] + len(us))
    WL, bL = layers[-1]
    m = len(bL)
    a_lo = np.maximum(bounds[-1][0], 0.0) if hidden else lo_x
    a_hi = np.maximum(bounds[-1][1], 0.0) if hidden else hi_x
    last = np.arange(offs[-2], offs[-1]) if hidden else np.arange(n)
    rows = _Rows()
    # |x - x0| <= eps
    for i in range(n):
        rows.add([i, i_eps], [1.0, -1.0], -INF, x0[i])
        rows.add([i, i_eps], [1.0, 1.0], x0[i], INF)
    for k, ((W, bb), (l, u)) in enumerate(zip(hidden, bounds)):
        prev = np.arange(n) if k == 0 else np.arange(offs[k - 1], offs[k])
        pos = {int(j): d_off[k] + t for t, j in enumerate(unstable[k])}
        for i in range(len(bb)):
            ai = offs[k] + i
            if u[i] <= 0:
                continue
            if l[i] >= 0:
                rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], bb[i])
                continue
            di = pos[i]
            rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], INF)  # a >= z
            rows.add(np.r_[ai, prev, di], np.r_[1.0, -W[i], -l[i]], -INF, bb[i] - l[i])  # a <= z - l(1-d)
            rows.add([ai, di], [1.0, -u[i]], -INF, 0.0)  # a <= u d
    nvar = d_off[-1]
    classes: list[int] = []
    if target is None:
        cand = []
        for j in range(m):
            if j == y:
                continue
            cvec = WL[j] - WL[y]
            dl, du = _interval(cvec[None], np.array([bL[j] - bL[y]]), a_lo, a_hi)
            if du[0] >= 0:
                cand.append((j, cvec, float(dl[0])))
        if not cand:
            return None
        s_off = nvar
        nvar += len(cand)
        for t_, (j, cvec, dl) in enumerate(cand):
            M = max(0.0, -dl) + 1e-6
            # cvec.a + (b_j - b_y) >= -M (1 - s_j)
            rows.add(np.r_[last, s_off + t_], np.r_[cvec, -M], -(bL[j] - bL[y]) - M, INF)
        rows.add(np.arange(s_off, nvar), np.ones(len(cand)), 1.0, INF)
        classes = [j for j, _, _ in cand]
    else:
        for j in range(m):
            if j == target:
                continue
            cvec = WL[target] - WL[j]
            dl, du = _interval(cvec[None], np.array([bL[target] - bL[j]]), a_lo, a_hi)
            if du[0] < 0:
                return None
            rows.add(last, cvec, -(bL[target] - bL[j]), INF)
    lb = np.concatenate([lo_x, [0.0]] + [np.maximum(l, 0.0) for l, _ in bounds] + [np.zeros(nvar - d_off[0])])
    ub = np.concatenate([hi_x, [eps_max]] + [np.maximum(u, 0.0) for _, u in bounds] + [np.ones(nvar - d_off[0])])
    integrality = np.zeros(nvar)
    integrality[d_off[0]:] = 1
    cost = np.zeros(nvar)
    cost[i_eps] = 1.0
    opts = {"time_limit": float(time_limit), "mip_rel_gap": mip_rel_gap, "disp": False}
    r = so.milp(cost, integrality=integrality, bounds=so.Bounds(lb, ub), constraints=[rows.matrix(nvar)],
                options=opts)
    info = {"binaries": int(nvar - d_off[0]), "unstable": [len(u_) for u_ in unstable],
            "classes": classes}
    return r, info


def min_linf_relu(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                  eps_max: float | np.ndarray | torch.Tensor | None = None, time_limit: float = 60.0,
                  lp_bounds: bool = True, mip_rel_gap: float = 1e-6, nudge: float = 1e-4,
                  progress: bool = False) -> ExactResult:
    """Exact minimal Linf perturbation of a ReLU network (MILP, HiGHS), per image.

    eps_max: an upper bound per image (e.g. the best attack's Linf distance, slightly enlarged);
    the smaller it is, the tighter the big-M bounds and the faster the solve. Default 1.
    """
    layers = relu_layers(model, tuple(x.shape[1:]), x.device)
    N = x.shape[0]
    xs = x.detach().reshape(N, -1).double().cpu().numpy()
    if eps_max is None:
        em = np.ones(N)
    else:
        em = np.broadcast_to(np.asarray(torch.as_tensor(eps_max).cpu(), dtype=np.float64), (N,)).copy()
    em = np.where(np.isfinite(em) & (em > 0), np.minimum(em, 1.0), 1.0)
    eps = np.full(N, np.nan)
    lower = np.full(N, np.nan)
    status: list[str] = []
    x_opt = xs.copy()
    secs = np.zeros(N)
    infos = []
    it = range(N)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="exact linf (MILP)", leave=False)
    for i in it:
        t0 = time.perf_counter()
        out = _milp_one(layers, xs[i], int(y[i]), None if target is None else int(target[i]),
                        float(em[i]), time_limit, lp_bounds, mip_rel_gap)
        if out is None:
            status.append("infeasible")
            lower[i] = em[i]
            infos.append({})
        else:
            r, info = out
            infos.append(info)
            if r.status == 2:
                status.append("infeasible")
                lower[i] = em[i]
            elif r.x is not None and r.status in (0, 1):
                eps[i] = float(r.x[len(xs[i])])
                x_opt[i] = r.x[: len(xs[i])]
                lb = getattr(r, "mip_dual_bound", None)
                lower[i] = float(lb) if lb is not None and np.isfinite(lb) else (eps[i] if r.status == 0 else 0.0)
                if r.status == 0:
                    lower[i] = min(lower[i], eps[i])
                status.append("optimal" if r.status == 0 else "time-limit")
            else:
                status.append("time-limit" if r.status == 1 else "error")
                lb = getattr(r, "mip_dual_bound", None)
                lower[i] = float(lb) if lb is not None and np.isfinite(lb) else 0.0
        secs[i] = time.perf_counter() - t0
    for i in range(N):
        if np.isfinite(eps[i]):
            p = _polish_linf(layers, xs[i], x_opt[i], int(y[i]), None if target is None else int(target[i]),
                             eps[i] + 0.5 * nudge)
            if p is not None:
                x_opt[i] = p
    xt = torch.from_numpy(x_opt).to(x.dtype).to(x.device).reshape(x.shape)
    x_adv, verified = _verify(model, x, xt, y, target, eps, "linf", nudge)
    return ExactResult("linf", eps, lower, status, x_adv, verified, secs,
                       info={"kind": "relu-milp", "eps_max": em.tolist(), "per_image": infos})


# --------------------------------------------------------------------------------------------
# verification and dispatch
# --------------------------------------------------------------------------------------------
def _verify(model, x, x_opt, y, target, eps, norm, nudge):
    """Nudge each boundary point across the boundary (<= nudge more distance) and check it."""
    from ..metrics import l2 as l2d
    from ..metrics import linf as linfd
    from ..objectives import decision_margin

    dist = linfd if norm == "linf" else l2d
    eps_t = torch.as_tensor(np.nan_to_num(eps, nan=-1.0), dtype=x.dtype, device=x.device)
    best = x_opt.clone()
    ok = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    xo = x_opt.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        marg = decision_margin(model(xo), y, target)
        (g,) = torch.autograd.grad(marg.sum(), xo)
    view = (-1,) + (1,) * (x.dim() - 1)
    if norm == "linf":
        step = g.sign()
    else:
        step = g / g.reshape(len(g), -1).norm(dim=1).clamp_min(1e-30).reshape(view)
    radial = x_opt - x
    rnorm = dist(x, x_opt).clamp_min(1e-30).reshape(view)
    for tau in (0.0, nudge * 1e-2, nudge * 1e-1, nudge * 0.5, nudge):
        # two ways across a (possibly multi-way) tie: along the margin's gradient, and radially
        # (scaling the perturbation raises every active constraint of a convex problem at once)
        for cand in (x_opt - tau * step, x + radial * (1 + tau / rnorm)):
            if norm == "linf":
                r = (eps_t + tau).reshape(view)
                cand = torch.min(torch.max(cand, x - r), x + r)
            cand = cand.clamp(0.0, 1.0).detach()
            with torch.no_grad():
                pred = model(cand).argmax(1)
            adv = pred == target if target is not None else pred != y
            within = dist(x, cand) <= eps_t + nudge + 1e-6
            new = adv & within & ~ok & (eps_t >= 0)
            best[new] = cand[new]
            ok |= new
    return best, ok


def _polish_linf(layers, x0, x_opt, y, target, radius):
    """A strictly adversarial point within `radius` in the linear region of x_opt (an LP).

    The MILP's optimum is a tie between logits, often several at once; fixing the ReLU pattern of
    x_opt makes the logits linear in x, and the LP maximises the least winning margin within
    Linf `radius` (eps* + a hair) of x0. Returns None where the LP finds no positive margin.
    """
    n = len(x0)
    C = np.eye(n)
    e = np.zeros(n)
    a = x_opt
    rows, rhs = [], []  # rows . x <= rhs (region of the pattern)
    for k, (W, b) in enumerate(layers):
        Ck, ek = W @ C, W @ e + b  # pre-activations as Ck x + ek
        if k == len(layers) - 1:
            C, e = Ck, ek
            break
        z = Ck @ a + ek
        act = z >= 0
        rows.append(np.where(act[:, None], -Ck, Ck))
        rhs.append(np.where(act, ek, -ek))
        C = np.where(act[:, None], Ck, 0.0)
        e = np.where(act, ek, 0.0)
    logits = C @ a + e
    if target is None:
        others = [int(np.argmax(np.where(np.arange(len(e)) == y, -np.inf, logits)))]
        win = [(j, y) for j in others]  # z_j - z_y >= s
    else:
        win = [(target, j) for j in range(len(e)) if j != target]  # z_t - z_j >= s
    # variables [x, s]; maximise s
    A = [np.c_[R, np.zeros(len(R))] for R in rows]
    bvec = list(rhs)
    A.append(np.array([np.r_[-(C[p] - C[q]), 1.0] for p, q in win]))
    bvec.append(np.array([e[p] - e[q] for p, q in win]))
    lo = np.maximum(0.0, x0 - radius)
    hi = np.minimum(1.0, x0 + radius)
    r = so.linprog(np.r_[np.zeros(n), -1.0], A_ub=np.vstack(A), b_ub=np.concatenate(bvec),
                   bounds=list(zip(lo, hi)) + [(None, 1.0)], method="highs")
    if r.status != 0 or r.x[-1] <= 0:
        return None
    return r.x[:n]


def exact_optimum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
                  target: torch.Tensor | None = None, eps_max=None, time_limit: float = 60.0,
                  progress: bool = False) -> ExactResult:
    """Dispatch: affine models (L2 / Linf, exact and fast), ReLU networks (Linf, MILP).

    Raises NotApplicable when the optimum of this model and norm is not computable here.
    """
    try:
        affine_form(model, tuple(x.shape[1:]), x.device)
        affine = True
    except NotApplicable:
        affine = False
    if affine:
        return min_dist_affine(model, x, y, norm=norm, target=target)
    if norm == "linf":
        return min_linf_relu(model, x, y, target=target, eps_max=eps_max, time_limit=time_limit,
                             progress=progress)
    raise NotApplicable(f"no exact {norm} optimum for this model: L2 needs an affine (linear-softmax) "
                        "model, Linf an affine model or a ReLU MLP")


def applicable(model: nn.Module, x_shape: tuple[int, ...], norm: str) -> bool:
    """Whether exact_optimum can handle this model and norm (cheap structural check)."""
    try:
        affine_form(model, x_shape)
        return norm in ("l2", "linf")
    except NotApplicable:
        pass
    if norm != "linf":
        return False
    try:
        relu_layers(model, x_shape)
        return True
    except NotApplicable:
        return False


def pgd_linf_bisection(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                       steps: int = 20, iters: int = 12, radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A quick upper bound on the minimal Linf distance: margin PGD at a per-image radius, bisected.

    Returns (distance, x_adv): the Linf distance of the closest adversarial found (inf where none).
    Used as eps_max for the MILP and as the attack the MILP optimum is checked against.
    """
    from ..metrics import linf as linfd
    from ..objectives import decision_margin

    N = x.shape[0]
    view = (-1,) + (1,) * (x.dim() - 1)

    def attack(r: torch.Tensor):
        rv = r.reshape(view)
        xa = x.clone()
        for s in range(steps):
            xa.requires_grad_(True)
            with torch.enable_grad():
                marg = decision_margin(model(xa), y, target)
                (g,) = torch.autograd.grad(marg.sum(), xa)
            size = rv * (2.5 / steps if s < steps - 1 else 1.0)
            xa = xa.detach() - size * g.sign()
            xa = torch.min(torch.max(xa, x - rv), x + rv).clamp(0.0, 1.0)
        with torch.no_grad():
            pred = model(xa).argmax(1)
        return xa, (pred == target) if target is not None else (pred != y)

    lo = torch.zeros(N, device=x.device)
    hi = torch.full((N,), float(radius), device=x.device)
    best = torch.full((N,), INF, device=x.device)
    x_best = x.clone()
    xa, ok = attack(hi)
    d = linfd(x, xa)
    best = torch.where(ok, d, best)
    x_best[ok] = xa[ok]
    hi = torch.where(ok, hi, torch.full_like(hi, INF))
    for _ in range(iters):
        act = torch.isfinite(hi)
        mid = torch.where(act, (lo + hi) / 2, lo)
        xa, ok = attack(mid)
        ok = ok & act
        d = linfd(x, xa)
        better = ok & (d < best)
        best = torch.where(better, d, best)
        x_best[better] = xa[better]
        hi = torch.where(ok, mid, hi)
        lo = torch.where(~ok & act, mid, lo)
    return best, x_best
