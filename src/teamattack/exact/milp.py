"""ReLU networks: the exact minimal Linf perturbation by mixed-integer LP (HiGHS through highspy).

eps is a variable to minimise with `|x - x0| <= eps` on top of the shared encoding
(`encoding.py`); the input box is `[max(0, x0 - eps_max), min(1, x0 + eps_max)]`, the hidden
bounds come from `relu.layer_bounds` (interval, then LP over the triangle relaxation). The best
attack's point (`x_start`) is handed to HiGHS as a starting solution. Statuses: `optimal`,
`time-limit` (the best eps found and HiGHS's proven dual bound), `infeasible` (nothing
adversarial within eps_max).
"""
from __future__ import annotations

import time

import numpy as np
import scipy.optimize as so
import torch
from torch import nn

from .encoding import Encoding, encode
from .relu import INF, layer_bounds, relu_layers
from .result import ExactResult
from .verify import verify


def per_image(values, N: int, default: float) -> np.ndarray:
    """A per-image float array from a scalar / sequence / tensor (None -> default)."""
    if values is None:
        return np.full(N, default)
    return np.broadcast_to(np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64), (N,)).copy()


def starts_of(x_start, x: torch.Tensor) -> np.ndarray | None:
    """Starting points as an (N, n) float64 array (rows of nan: no start), or None."""
    if x_start is None:
        return None
    return torch.as_tensor(x_start).detach().reshape(x.shape[0], -1).double().cpu().numpy()


def solve_highs(enc: Encoding, extra_lb, extra_ub, extra_rows, cost: np.ndarray, start: np.ndarray | None,
                time_limit: float, mip_rel_gap: float) -> dict:
    """Solve the encoding plus extra continuous columns and rows with HiGHS; a start if given.

    extra_rows: a callable adding rows to enc.rows copies (cols may use indices >= enc.nvar).
    Returns {"status", "x", "objective", "dual_bound", "start_accepted"}.
    """
    import highspy

    from .relu import Rows

    rows = Rows()
    rows.r, rows.c, rows.v = list(enc.rows.r), list(enc.rows.c), list(enc.rows.v)
    rows.lb, rows.ub = list(enc.rows.lb), list(enc.rows.ub)
    extra_rows(rows)
    lb = np.concatenate([enc.lb, extra_lb])
    ub = np.concatenate([enc.ub, extra_ub])
    integer = np.concatenate([enc.integer, np.zeros(len(extra_lb), dtype=bool)])
    nvar = len(lb)
    A = rows.csr(nvar)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = nvar, A.shape[0]
    lp.col_cost_ = cost
    lp.col_lower_, lp.col_upper_ = lb, ub
    lp.row_lower_ = np.array(rows.lb, dtype=np.float64)
    lp.row_upper_ = np.array(rows.ub, dtype=np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = nvar, A.shape[0]
    lp.integrality_ = [highspy.HighsVarType.kInteger if b else highspy.HighsVarType.kContinuous
                       for b in integer]
    h.passModel(lp)
    accepted = None
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = list(start)
        sol.value_valid = True
        accepted = h.setSolution(sol) == highspy.HighsStatus.kOk
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    has = info.primal_solution_status == 2
    status = {highspy.HighsModelStatus.kOptimal: "optimal",
              highspy.HighsModelStatus.kInfeasible: "infeasible",
              highspy.HighsModelStatus.kTimeLimit: "time-limit"}.get(ms, "error")
    xv = np.array(h.getSolution().col_value) if has else None
    return {"status": status, "x": xv, "objective": float(info.objective_function_value) if has else INF,
            "dual_bound": float(info.mip_dual_bound), "start_accepted": accepted}


def min_linf_relu(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                  eps_max=None, time_limit: float = 60.0, lp_bounds: bool = True, mip_rel_gap: float = 1e-6,
                  nudge: float = 1e-4, progress: bool = False, x_start=None) -> ExactResult:
    """Exact minimal Linf perturbation of a ReLU network (MILP, HiGHS), per image.

    eps_max: an upper bound per image (e.g. the best attack's Linf distance, slightly enlarged);
    the smaller it is, the tighter the big-M bounds and the faster the solve. Default 1.
    x_start: a point per image (e.g. the best attack's) handed to HiGHS as a starting solution
    when it lies within eps_max (rows of nan: none).
    """
    layers = relu_layers(model, tuple(x.shape[1:]), x.device)
    N = x.shape[0]
    xs = x.detach().reshape(N, -1).double().cpu().numpy()
    em = per_image(eps_max, N, 1.0)
    em = np.where(np.isfinite(em) & (em > 0), np.minimum(em, 1.0), 1.0)
    starts = starts_of(x_start, x)
    eps, lower = np.full(N, np.nan), np.full(N, np.nan)
    status: list[str] = []
    x_opt = xs.copy()
    secs = np.zeros(N)
    infos: list[dict] = []
    it = range(N)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="exact linf (MILP)", leave=False)
    for i in it:
        t0 = time.perf_counter()
        x0, yi = xs[i], int(y[i])
        ti = None if target is None else int(target[i])
        lo_x, hi_x = np.maximum(0.0, x0 - em[i]), np.minimum(1.0, x0 + em[i])
        bounds = layer_bounds(layers, lo_x, hi_x, lp=lp_bounds)
        enc = encode(layers, bounds, x0, lo_x, hi_x, yi, ti)
        if enc is None:
            status.append("infeasible")
            lower[i] = em[i]
            infos.append({})
            secs[i] = time.perf_counter() - t0
            continue
        n, k_eps = enc.n, enc.nvar
        cost = np.zeros(enc.nvar + 1)
        cost[k_eps] = 1.0

        def rows_eps(rows, x0=x0, n=n, k=k_eps):
            for j in range(n):
                rows.add([j, k], [1.0, -1.0], -INF, x0[j])
                rows.add([j, k], [1.0, 1.0], x0[j], INF)

        start, inc = None, None
        if starts is not None and np.isfinite(starts[i]).all():
            inc = float(np.abs(starts[i] - x0).max())
            if inc <= em[i]:
                start = np.r_[enc.point(starts[i]), inc]
        r = solve_highs(enc, np.array([0.0]), np.array([em[i]]), rows_eps, cost, start, time_limit, mip_rel_gap)
        info = {"binaries": enc.binaries(), "unstable": [len(u) for u in enc.unstable], "classes": enc.classes}
        if start is not None:
            info["incumbent"] = {"eps": inc, "accepted": r["start_accepted"]}
        infos.append(info)
        st = r["status"]
        if st == "infeasible":
            lower[i] = em[i]
        elif r["x"] is not None and st in ("optimal", "time-limit"):
            eps[i] = float(r["x"][k_eps])
            x_opt[i] = r["x"][:n]
            lb = r["dual_bound"]
            lower[i] = min(lb, eps[i]) if np.isfinite(lb) else (eps[i] if st == "optimal" else 0.0)
        else:
            st = "time-limit" if st == "time-limit" else "error"
            lower[i] = r["dual_bound"] if np.isfinite(r["dual_bound"]) else 0.0
        status.append(st)
        secs[i] = time.perf_counter() - t0
    for i in range(N):
        if np.isfinite(eps[i]):
            p = _polish_linf(layers, xs[i], x_opt[i], int(y[i]), None if target is None else int(target[i]),
                             eps[i] + 0.5 * nudge)
            if p is not None:
                x_opt[i] = p
    xt = torch.from_numpy(x_opt).to(x.dtype).to(x.device).reshape(x.shape)
    x_adv, verified = verify(model, x, xt, y, target, eps, "linf", nudge)
    return ExactResult("linf", eps, lower, status, x_adv, verified, secs,
                       info={"kind": "relu-milp", "solver": "highs", "eps_max": em.tolist(), "per_image": infos})


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
