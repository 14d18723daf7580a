"""ReLU networks: the exact minimal L2 perturbation, a mixed-integer QP.

Two solvers of the same problem over the same bounds. The input box is `[max(0, x0 - eps_max),
min(1, x0 + eps_max)]` (no coordinate moves further than the L2 radius) and the hidden bounds are
those over the box intersected with the ball `||x - x0|| <= eps_max` (`relu.layer_bounds(...,
ball=...)`: exact for layer 1, the tighter of backward linear bounds and the triangle LP later).

* `solver="bnb"`: branch and bound on the ReLU phases with an exact QP per node (`bnb.search`,
  PIQP). Its node bounds are exact, so it proves optima on 784-input MLPs, given a radius
  (eps_max, the best attack's distance): without one every unit is unstable and the root
  relaxation is feasible at x0, so the tree is the whole 2^units.
* `solver="scip"`: the shared encoding (`encoding.py`) with a variable t >= ||x - x0||^2 (a convex
  quadratic constraint) to minimise, t <= eps_max^2, solved by SCIP (pyscipopt). SCIP relaxes the
  quadratic by cuts: fine on the 64-input digits MLP, a dual bound stuck at 0 on MNIST.

`solver="auto"` (default) takes bnb for the images with a finite eps_max and SCIP for the others.
The best attack's point (`x_start`) is the first incumbent of either. Statuses: `optimal`,
`time-limit` (the best found and the proven lower bound, both as distances), `infeasible`.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .encoding import Encoding, encode
from .milp import per_image, starts_of
from .bnb import goal_margin, search
from .relu import layer_bounds, relu_layers
from .result import ExactResult
from .verify import verify


def solve_scip(enc: Encoding, x0: np.ndarray, r_max: float, start: np.ndarray | None, time_limit: float,
               gap: float) -> dict:
    """min ||x - x0||^2 over the encoding with SCIP. Returns squared-distance objective and dual bound."""
    from pyscipopt import Model, quicksum

    m = Model("min-l2")
    m.hideOutput()
    m.setParam("limits/time", float(time_limit))
    m.setParam("limits/gap", float(gap))
    v = [m.addVar(lb=float(enc.lb[j]), ub=float(enc.ub[j]), vtype="B" if enc.integer[j] else "C")
         for j in range(enc.nvar)]
    t = m.addVar(lb=0.0, ub=float(r_max) ** 2, vtype="C", name="t")
    A = enc.rows.csr(enc.nvar)
    for i in range(A.shape[0]):
        s, e = A.indptr[i], A.indptr[i + 1]
        expr = quicksum(float(c) * v[j] for j, c in zip(A.indices[s:e], A.data[s:e]))
        lo, hi = enc.rows.lb[i], enc.rows.ub[i]
        if lo == hi:
            m.addCons(expr == float(lo))
            continue
        if np.isfinite(lo):
            m.addCons(expr >= float(lo))
        if np.isfinite(hi):
            m.addCons(expr <= float(hi))
    n = enc.n
    m.addCons(quicksum((v[j] - float(x0[j])) * (v[j] - float(x0[j])) for j in range(n)) <= t)
    m.setObjective(t, "minimize")
    accepted = None
    if start is not None:
        sol = m.createSol(None)
        for j in range(enc.nvar):
            m.setSolVal(sol, v[j], float(start[j]))
        d2 = float(np.sum((start[:n] - x0) ** 2))
        m.setSolVal(sol, t, min(d2 * (1 + 1e-9) + 1e-12, float(r_max) ** 2))
        accepted = bool(m.addSol(sol, free=True))
    m.optimize()
    st = m.getStatus()
    status = {"optimal": "optimal", "gaplimit": "optimal", "infeasible": "infeasible",
              "timelimit": "time-limit"}.get(st, "error")
    has = m.getNSols() > 0
    xv = None
    obj = float("inf")
    if has:
        best = m.getBestSol()
        xv = np.array([m.getSolVal(best, v[j]) for j in range(n)])
        obj = float(np.sum((xv - x0) ** 2))
    dual = m.getDualbound() if status != "infeasible" else float(r_max) ** 2
    return {"status": status, "x": xv, "objective": obj, "dual_bound": float(dual), "start_accepted": accepted,
            "scip_status": st}


def _solve_bnb(layers, bounds, x0, lo_x, hi_x, y: int, target: int | None, r_max: float, starts, i: int,
               time_limit: float, gap: float):
    """One image by `bnb.search`: status, eps (nan if none), lower bound, the point, info."""
    start = None
    if starts is not None and np.isfinite(starts[i]).all():
        start = np.clip(starts[i], lo_x, hi_x)
    r = search(layers, bounds, x0, lo_x, hi_x, y, target, r_max, start, time_limit, gap)
    info = {"solver": "bnb", "nodes": r.nodes, "classes": list(r.classes),
            "unstable": [int(((l < 0) & (u > 0)).sum()) for l, u in bounds]}
    if start is not None:
        d = float(np.linalg.norm(start - x0))  # taken as the first incumbent: adversarial within r_max
        info["incumbent"] = {"eps": d, "accepted": bool(d <= r_max and goal_margin(layers, start, y, target) >= 0)}
    if r.status == "infeasible":
        return "infeasible", np.nan, r_max, None, info
    eps = float(np.sqrt(r.d2)) if r.x is not None else np.nan
    lower = float(np.sqrt(max(r.lower2, 0.0)))
    return r.status, eps, lower if r.x is None else min(lower, eps), r.x, info


def min_l2_relu(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                eps_max=None, time_limit: float = 60.0, lp_bounds: bool = True, gap: float = 1e-6,
                nudge: float = 1e-4, progress: bool = False, x_start=None, solver: str = "auto") -> ExactResult:
    """Exact minimal L2 perturbation of a ReLU network with the [0, 1] box, per image.

    eps_max: an upper bound per image (e.g. the best attack's L2 distance, slightly enlarged;
    default sqrt(n), the whole box). x_start: a point per image handed to the solver as a starting
    solution when it lies within eps_max (rows of nan: none). `gap` is the relative gap on the
    squared distance. solver: "bnb" (branch and bound, an exact QP per node), "scip", or "auto"
    (bnb where eps_max is given for the image, SCIP elsewhere); recorded per image in the info.
    """
    if solver not in ("auto", "bnb", "scip"):
        raise ValueError(f"solver must be 'auto', 'bnb' or 'scip', not {solver!r}")
    layers = relu_layers(model, tuple(x.shape[1:]), x.device)
    N = x.shape[0]
    xs = x.detach().reshape(N, -1).double().cpu().numpy()
    n = xs.shape[1]
    em = per_image(eps_max, N, float(np.sqrt(n)))
    given = np.isfinite(em) & (em > 0) & (em < np.sqrt(n))
    em = np.where(np.isfinite(em) & (em > 0), np.minimum(em, np.sqrt(n)), np.sqrt(n))
    starts = starts_of(x_start, x)
    eps, lower = np.full(N, np.nan), np.full(N, np.nan)
    status: list[str] = []
    x_opt = xs.copy()
    secs = np.zeros(N)
    infos: list[dict] = []
    it = range(N)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="exact l2 (MIQP)", leave=False)
    for i in it:
        t0 = time.perf_counter()
        x0, yi = xs[i], int(y[i])
        ti = None if target is None else int(target[i])
        lo_x, hi_x = np.maximum(0.0, x0 - em[i]), np.minimum(1.0, x0 + em[i])
        bounds = layer_bounds(layers, lo_x, hi_x, lp=lp_bounds, ball=(x0, em[i]))
        if solver == "bnb" or (solver == "auto" and given[i]):
            st, e, lw, xo, info = _solve_bnb(layers, bounds, x0, lo_x, hi_x, yi, ti, em[i], starts, i, time_limit, gap)
            status.append(st)
            eps[i], lower[i] = e, lw
            infos.append(info)
            if xo is not None:
                x_opt[i] = xo
            secs[i] = time.perf_counter() - t0
            continue
        enc = encode(layers, bounds, x0, lo_x, hi_x, yi, ti)
        if enc is None:
            status.append("infeasible")
            lower[i] = em[i]
            infos.append({})
            secs[i] = time.perf_counter() - t0
            continue
        start, inc = None, None
        if starts is not None and np.isfinite(starts[i]).all():
            inc = float(np.linalg.norm(starts[i] - x0))
            if inc <= em[i]:
                start = enc.point(np.clip(starts[i], lo_x, hi_x))
        r = solve_scip(enc, x0, em[i], start, time_limit, gap)
        info = {"solver": "scip", "binaries": enc.binaries(), "unstable": [len(u) for u in enc.unstable], "classes": enc.classes,
                "scip_status": r["scip_status"]}
        if start is not None:
            info["incumbent"] = {"eps": inc, "accepted": r["start_accepted"]}
        infos.append(info)
        st = r["status"]
        lb = float(np.sqrt(max(r["dual_bound"], 0.0))) if np.isfinite(r["dual_bound"]) else 0.0
        if st == "infeasible":
            lower[i] = em[i]
        elif r["x"] is not None and st in ("optimal", "time-limit"):
            eps[i] = float(np.sqrt(r["objective"]))
            x_opt[i] = r["x"]
            lower[i] = min(lb, eps[i])
        else:
            st = "time-limit" if st == "time-limit" else "error"
            lower[i] = lb
        status.append(st)
        secs[i] = time.perf_counter() - t0
    xt = torch.from_numpy(x_opt).to(x.dtype).to(x.device).reshape(x.shape)
    x_adv, verified = verify(model, x, xt, y, target, eps, "l2", nudge)
    return ExactResult("l2", eps, lower, status, x_adv, verified, secs,
                       info={"kind": "relu-miqp", "solver": solver, "eps_max": em.tolist(), "per_image": infos})
