"""E9: numeric checks of the math paper's theorems (seed 004, Theorems 3.1-3.4, 4.1-4.3, 5.1, sec. 5.3).

    teamattack reproduce math-theorems -n 200

The nets the theorems speak of are `softmax(W_L relu(... relu(W_1 x)))` with linear or
convolutional W_j (biases allowed: they change no argument). For such a net, given as an
`nn.Sequential` of Flatten / Linear / Conv2d / ReLU, this module computes per input

- the paper's untargeted bound (Thm 3.2 / 3.4 as printed):
      eps_paper = min_j |Tmp_j|_min / ||W_j||_inf        over the layers followed by a ReLU,
  with a conv layer's ||W||_inf the max absolute row sum of its unrolled matrix, computed exactly
  (a conv of |kernel| over an all-ones input gives every row's absolute sum, borders included);
- two bounds that are PROVABLY sufficient for Lemma 3.3's "no pre-activation changes sign"
  (the printed one is not for L > 2, because the input of layer j moves by more than eps):
      eps_product = min_j |Tmp_j|_min / (||W_j||_inf ... ||W_1||_inf)     (ReLU is 1-Lipschitz)
      eps_local   = min_j min_u |Tmp_j,u| / ||J_j,u||_1                  (J_j = d Tmp_j / dx, local)
- Thm 4.1's targeted bound, with Thm 4.2's T = the local linear map x -> logits for ReLU nets:
      U2 = min_i ln(1 + |sum_j p_j T_ji - T_ti| / sum_j |T_ji - T_ti| p_j) / ||T||_inf,
  and U = min(U1, U2) with U1 one of the three bounds above;
- for a linear-softmax net, Thm 5.1's bound on c and the closed form d = -c/2 (W_y - W_t).

Then it verifies the claims with the library's FGSM (clipped to [0,1]; both proofs hold verbatim
for the clipped step, each coordinate still moves by at most eps in the sign direction) in float64.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import data
from ..exact.relu import (  # noqa: F401 - re-exported: the theorems' vocabulary
    AffineLayer,
    NotApplicable,
    decompose,
    inf_norm,
    leaves,
    preactivations,
    row_abs_sums,
    unrolled,
)
from . import Context, register
from .common import fgsm_direction

FRACTIONS = (0.01, 0.1, 0.5, 0.9, 0.99)                 # eps = f * bound, all below the bound
ABS_GRID = tuple(float(e) for e in np.logspace(-7, 0, 57))  # 8 points a decade, 1e-7 .. 1
C_FRACTIONS = (0.1, 0.5, 0.9, 0.99)                    # c = f * c_bound (Thm 5.1)
BOUNDS = ("paper", "product", "local")


# The decomposition (Sequential of Flatten / Linear / Conv2d / ReLU -> AffineLayers) is the one of
# the exact solvers, written once in teamattack.exact.relu.
NotSupported = NotApplicable


@torch.no_grad()
def local_row_norms(layers: list[AffineLayer], x: torch.Tensor, max_rows: int = 50_000):
    """Per example: ||J_j,u||_1 for every layer j and unit u, and the logits' local Jacobian T (B, k, n).

    J_j = d Tmp_j / dx in x's activation region, propagated as the images of the n basis vectors.
    """
    n = int(np.prod(x.shape[1:]))
    pres = preactivations(layers, x)
    norms = [torch.empty((len(x), int(np.prod(p.shape[1:]))), dtype=x.dtype, device=x.device) for p in pres]
    T = torch.empty((len(x), pres[-1].shape[1], n), dtype=x.dtype, device=x.device)
    step = max(1, max_rows // n)
    eye = torch.eye(n, dtype=x.dtype, device=x.device).reshape(n, *x.shape[1:])
    for s in range(0, len(x), step):
        b = min(step, len(x) - s)
        E = eye.repeat(b, *([1] * (x.dim() - 1)))          # (b*n, ...): basis vectors of each example
        for j, L in enumerate(layers):
            E = E.flatten(1) if L.flatten else E
            E = L.linear(E)
            J = E.reshape(b, n, -1)                          # (b, n, units): J_j transposed
            norms[j][s:s + b] = J.abs().sum(dim=1)
            if L.relu:
                mask = (pres[j][s:s + b] > 0).to(x.dtype)
                E = (E.reshape(b, n, *E.shape[1:]) * mask[:, None]).reshape(b * n, *E.shape[1:])
        T[s:s + b] = J.transpose(1, 2)
    return pres, norms, T


def untargeted_bounds(layers: list[AffineLayer], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Thm 3.2/3.4 as printed ('paper') and the two sound bounds ('product', 'local'); +inf without ReLUs."""
    pres, norms, _ = local_row_norms(layers, x)
    return _u1(layers, pres, norms)


def _u1(layers, pres, norms) -> dict[str, torch.Tensor]:
    B = len(pres[0])
    inf = torch.full((B,), math.inf, dtype=pres[0].dtype, device=pres[0].device)
    out = {k: inf.clone() for k in BOUNDS}
    prod = 1.0
    for j, L in enumerate(layers):
        nj = inf_norm(L)
        prod *= nj
        if not L.relu:
            continue
        a = pres[j].flatten(1).abs()
        amin = a.min(dim=1).values
        out["paper"] = torch.minimum(out["paper"], amin / nj)
        out["product"] = torch.minimum(out["product"], amin / prod)
        ratio = torch.where(norms[j] > 0, a / norms[j], torch.full_like(a, math.inf))
        out["local"] = torch.minimum(out["local"], ratio.min(dim=1).values)
    return out


def targeted_u2(logits: torch.Tensor, T: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Thm 4.1's bound (T = W for linear-softmax, Thm 4.2's local T for ReLU nets), per example."""
    p = logits.softmax(dim=1)                                    # exp(Tx)_j / sum: the ratio is scale-free
    Tt = T[torch.arange(len(T)), target]                         # (B, n)
    A = torch.einsum("bk,bkn->bn", p, T) - Tt
    D = torch.einsum("bk,bkn->bn", p, (T - Tt[:, None]).abs())
    q = torch.where(D > 0, torch.log1p(A.abs() / D), torch.full_like(D, math.inf))
    return q.min(dim=1).values / T.abs().sum(dim=2).amax(dim=1)


# ------------------------------------------------------------------------------------------- checks
def _ce(model: nn.Module, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), label, reduction="none")


def _signs(layers, x):
    with torch.no_grad():
        return [p.flatten(1) > 0 for j, p in enumerate(preactivations(layers, x)) if layers[j].relu]


def _at(x, d, eps: torch.Tensor) -> torch.Tensor:
    return (x + eps.view(-1, *([1] * (x.dim() - 1))) * d).clamp(0.0, 1.0)


def _quantiles(v: torch.Tensor) -> dict:
    v = v[torch.isfinite(v)].double().cpu()
    if not len(v):
        return {"n": 0}
    q = torch.quantile(v, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64))
    return {"n": len(v), "min": float(q[0]), "p10": float(q[1]), "median": float(q[2]),
            "p90": float(q[3]), "max": float(q[4])}


def fgsm_checks(model: nn.Module, layers: list[AffineLayer], x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None = None) -> dict:
    """FGSM monotonicity below the bounds (violations), and how far past them it still held.

    Untargeted (Thm 3.1-3.4): the claim is CE(x', y) >= CE(x, y). Targeted (Thm 4.1-4.3):
    CE(x', t) <= CE(x, t). Also Lemma 3.3: no ReLU pre-activation changes sign below the U1 bounds.
    """
    targeted = target is not None
    label = target if targeted else y
    d, _ = fgsm_direction(model, x, y, target, eps_max=1.0)
    L0 = _ce(model, x, label)
    tol = 1e-12 * (1.0 + L0.abs())

    def holds(eps: torch.Tensor) -> torch.Tensor:
        L1 = _ce(model, _at(x, d, eps), label)
        return (L1 <= L0 + tol) if targeted else (L1 >= L0 - tol)

    pres, norms, T = local_row_norms(layers, x)
    u1 = _u1(layers, pres, norms)
    if targeted:
        u2 = targeted_u2(pres[-1], T, target)
        bounds = {k: torch.minimum(v, u2) for k, v in u1.items()}
    else:
        bounds = u1
    signs0 = _signs(layers, x)
    # the claim at every grid eps, shared by all bounds
    grid = torch.tensor(ABS_GRID, dtype=x.dtype, device=x.device)
    held = torch.stack([holds(torch.full((len(x),), float(e), dtype=x.dtype, device=x.device)) for e in grid], 1)
    prefix = held.long().cumprod(dim=1).bool()              # held at every grid eps up to here
    held_all = prefix[:, -1]
    idx_last = prefix.sum(dim=1) - 1
    eps_held = torch.where(idx_last >= 0, grid[idx_last.clamp(min=0)], torch.zeros_like(grid[:1]).expand(len(x)))
    first_fail = torch.where(held_all, torch.full_like(eps_held, math.inf), grid[(idx_last + 1).clamp(max=len(grid) - 1)])
    out: dict = {"cases": len(x), "claim": "CE(x', t) <= CE(x, t)" if targeted else "CE(x', y) >= CE(x, y)",
                 "bounds": {}, "fgsm_grid": {"eps": "logspace(-7, 0, 57)",
                                             "held_at_every_grid_eps": int(held_all.sum()),
                                             "first_failure_eps": _quantiles(first_fail)}}
    for name, b in bounds.items():
        finite = torch.isfinite(b)
        cases = viol = 0
        sign_cases = sign_viol = 0
        for f in FRACTIONS:
            if not bool(finite.any()):
                break
            eps = torch.where(finite, f * b, torch.zeros_like(b))
            ok = holds(eps)
            cases += int(finite.sum())
            viol += int((~ok & finite).sum())
            if not targeted:
                s1 = _signs(layers, _at(x, d, eps))
                changed = torch.zeros(len(x), dtype=torch.bool, device=x.device)
                for a, c in zip(signs0, s1):
                    changed |= (a != c).any(dim=1)
                sign_cases += int(finite.sum())
                sign_viol += int((changed & finite).sum())
        below = grid[None, :] < b[:, None]                      # grid points below each example's bound
        cases += int(below.sum())
        viol += int((below & ~held).sum())
        failed = finite & ~held_all                             # the claim failed somewhere on the grid
        entry = {
            "bound": _quantiles(b),
            "claim_below_bound": {"cases": cases, "violations": viol},
            "past_bound": {
                "held_at_every_grid_eps_up_to_1": int((held_all & finite).sum()) if bool(finite.any()) else int(held_all.sum()),
                "failed_somewhere": int(failed.sum()),
                "failing_cases_held_up_to_multiple_of_bound": _quantiles(eps_held[failed] / b[failed]),
                "failing_cases_held_up_to_eps": _quantiles(eps_held[failed]),
                "all_cases_multiple_lower_bound": _quantiles(eps_held[finite] / b[finite]),
                "note": "eps_held = largest grid eps up to which the claim held at every grid point; "
                        "for cases that held all the way to eps = 1 the multiple 1/bound is only a lower bound",
            },
        }
        if not bool(finite.any()):
            entry["note"] = "bound is +inf (no ReLU layer): every eps is below it; cases are the grid eps"
        if not targeted:
            entry["lemma_3_3_signs_kept_below_bound"] = {"cases": sign_cases, "violations": sign_viol}
        out["bounds"][name] = entry
    fl = torch.isfinite(bounds["local"]) & ~held_all
    out["_multiples_local"] = (eps_held[fl] / bounds["local"][fl]).tolist()   # cases that failed on the grid
    return out


# ------------------------------------------------------------------------------------- Theorem 5.1
def _linear_weights(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    mods = [m for m in leaves(model) if not isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout))]
    if len(mods) != 1 or not isinstance(mods[0], nn.Linear):
        raise NotSupported("Theorem 5.1 is about a linear-softmax model (Flatten + Linear)")
    lin = mods[0]
    b = lin.bias if lin.bias is not None else torch.zeros(lin.out_features, dtype=lin.weight.dtype)
    return lin.weight.detach(), b.detach()


def cw_bound(W: torch.Tensor, Z: torch.Tensor, y: int, t: int) -> float:
    """Thm 5.1: c < min_{j != y} (Z_y - Z_j)^2 / (||W_y - W_j||^2 (Z_y - Z_t))."""
    js = [j for j in range(W.shape[0]) if j != y]
    gaps = Z[y] - Z[js]
    dn = (W[y] - W[js]).pow(2).sum(dim=1)
    return float((gaps.pow(2) / (dn * (Z[y] - Z[t]))).min())


def cw_exact_threshold(W: torch.Tensor, Z: torch.Tensor, y: int, t: int) -> float:
    """The largest c for which d = -c/2 (W_y - W_t) is the minimiser (its KKT conditions, exactly)."""
    v = W[y] - W[t]
    c = 2.0 * float(Z[y] - Z[t]) / float(v @ v)
    for i in range(W.shape[0]):
        if i in (y, t):
            continue
        s = float((W[y] - W[i]) @ v)
        if s > 0:
            c = min(c, 2.0 * float(Z[y] - Z[i]) / s)
    return c


def cw_closed_form_is_minimiser(W, Z, y: int, t: int, c: float) -> bool:
    """KKT certificate: at x + d_cf, y is the strict argmax over i != t and Z_y > Z_t (g is then smooth)."""
    Z1 = Z - 0.5 * c * (W @ (W[y] - W[t]))
    others = [i for i in range(W.shape[0]) if i not in (y, t)]
    return bool(Z1[y] > Z1[t]) and bool((Z1[y] > Z1[others]).all())


def solve_cw_relaxed(W: torch.Tensor, Z: torch.Tensor, t: int, c: float) -> np.ndarray:
    """Numerical minimiser of ||d||^2 + c max(max_{i!=t} Z_i(x+d) - Z_t(x+d), 0) without the box (eq. 5.2).

    Independent of the closed form: the dual max_{lam >= 0, sum lam <= 1} c lam.a - c^2/4 ||V^T lam||^2,
    a_i = Z_i - Z_t, V_i = W_i - W_t (i != t), solved by SLSQP; then d = -c/2 V^T lam.
    """
    from scipy.optimize import minimize

    idx = [i for i in range(W.shape[0]) if i != t]
    V = (W[idx] - W[t]).double().cpu().numpy()
    a = (Z[idx] - Z[t]).double().cpu().numpy()
    G = V @ V.T

    def f(lam):
        return -(c * lam @ a - 0.25 * c * c * lam @ G @ lam), -(c * a - 0.5 * c * c * G @ lam)

    k = len(idx)
    res = minimize(f, np.full(k, 1.0 / (k + 1)), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * k,
                   constraints=[{"type": "ineq", "fun": lambda lam: 1.0 - lam.sum(), "jac": lambda lam: -np.ones(k)}],
                   options={"ftol": 1e-15, "maxiter": 500})
    return -0.5 * c * (V.T @ res.x)


def cw_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress=None) -> dict:
    """Theorem 5.1 and section 5.3 on a linear-softmax model, every target t != y of every input."""
    W, b = _linear_weights(model)
    W, b = W.double().cpu(), b.double().cpu()
    X = x.flatten(1).double().cpu()
    Zs = X @ W.T + b
    k = W.shape[0]
    res = {"cases": 0, "closed_form_kkt": [0, 0], "closed_form_matches_numerical": [0, 0],
           "ratio_t_over_y_increases": [0, 0], "third_class_prediction_5_3": [0, 0]}
    third_up = third_down = 0
    max_dev = 0.0
    ratios, c_bounds, past = [], [], [0, 0]
    c10 = {"below_bound": 0, "closed_form_valid": 0}
    pairs = [(i, t) for i in range(len(X)) for t in range(k) if t != int(y[i])]
    it = progress(pairs, desc="Thm 5.1 (input, target) pairs") if progress else pairs
    for i, t in it:
        yi, Z = int(y[i]), Zs[i]
        cb = cw_bound(W, Z, yi, t)
        ce = cw_exact_threshold(W, Z, yi, t)
        c_bounds.append(cb)
        ratios.append(ce / cb)
        res["cases"] += 1
        c10["below_bound"] += int(10.0 < cb)
        c10["closed_form_valid"] += int(10.0 < ce)
        v = W[yi] - W[t]
        for f in C_FRACTIONS:
            c = f * cb
            d_cf = (-0.5 * c * v).numpy()
            res["closed_form_kkt"][0] += 1
            res["closed_form_kkt"][1] += int(not cw_closed_form_is_minimiser(W, Z, yi, t, c))
            d_num = solve_cw_relaxed(W, Z, t, c)
            dev = float(np.linalg.norm(d_num - d_cf) / max(np.linalg.norm(d_cf), 1e-300))
            max_dev = max(max_dev, dev)
            res["closed_form_matches_numerical"][0] += 1
            res["closed_form_matches_numerical"][1] += int(dev > 1e-4)
            Z1 = Z + W @ torch.from_numpy(d_num)
            res["ratio_t_over_y_increases"][0] += 1
            res["ratio_t_over_y_increases"][1] += int(float(Z1[t] - Z1[yi]) < float(Z[t] - Z[yi]) - 1e-12)
            for kk in range(k):
                if kk in (yi, t):
                    continue
                change = float((Z1[kk] - Z1[yi]) - (Z[kk] - Z[yi]))
                pred_up = float((W[kk] - W[yi]) @ v) < 0
                if abs(change) < 1e-12:
                    continue
                third_up += change > 0
                third_down += change < 0
                res["third_class_prediction_5_3"][0] += 1
                res["third_class_prediction_5_3"][1] += int((change > 0) != pred_up)
        # past the exact threshold the closed form must stop being the minimiser (checks the solver too)
        if math.isfinite(ce):
            d_num = solve_cw_relaxed(W, Z, t, 2.0 * ce)
            past[0] += 1
            past[1] += int(np.linalg.norm(d_num + ce * v.numpy()) > 1e-3 * np.linalg.norm(ce * v.numpy()))
    out = {"cases": res["cases"], "c_values": "c = f * c_bound, f in " + str(C_FRACTIONS)}
    for key in ("closed_form_kkt", "closed_form_matches_numerical", "ratio_t_over_y_increases",
                "third_class_prediction_5_3"):
        out[key] = {"cases": res[key][0], "violations": res[key][1]}
    out["closed_form_matches_numerical"]["max_relative_deviation"] = max_dev
    out["closed_form_matches_numerical"]["tolerance"] = 1e-4
    out["third_class_ratio_5_3"] = {"went_up": int(third_up), "went_down": int(third_down)}
    out["c_bound"] = _quantiles(torch.tensor(c_bounds))
    out["exact_threshold_over_bound"] = _quantiles(torch.tensor(ratios))
    out["exact_threshold_ge_bound"] = {"cases": len(ratios), "violations": int(sum(r < 1 for r in ratios))}
    out["past_exact_threshold_closed_form_fails"] = {"cases": past[0], "confirmed": past[1],
                                                     "note": "numerical minimiser at c = 2 x exact threshold differs from the closed form"}
    out["paper_c_10"] = {"below_bound": c10["below_bound"], "closed_form_still_minimiser": c10["closed_form_valid"],
                         "of": res["cases"]}
    return out


# --------------------------------------------------------------------------------------- the models
def relu_cnn() -> nn.Sequential:
    """A small ReLU CNN for 8x8 digits, no pooling (the theorems' class): conv-relu-conv(stride 2)-relu-fc."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )


def train_digits(model: nn.Module, seed: int = 0, epochs: int = 30, lr: float = 1e-2, batch: int = 128) -> nn.Module:
    """Quick training on the embedded digits train split (seconds on a CPU)."""
    x, y = data.load("digits", "train")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch):
            i = perm[s:s + batch]
            loss = F.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _model(name: str, zoo_name: str | None, builder, ctx: Context) -> tuple[nn.Module, str]:
    if zoo_name is not None:
        try:
            from .. import zoo

            return zoo.load(zoo_name).eval(), f"zoo {zoo_name}"
        except Exception as e:  # noqa: BLE001 - any failure to load falls back to a quick training
            reason = f"zoo {zoo_name} not available ({type(e).__name__}: {e})"
    else:
        reason = "no such model in the zoo (its digits-cnn has max-pool and a sigmoid layer)"
    torch.manual_seed(ctx.seed)
    return train_digits(builder(), seed=ctx.seed), f"trained on digits inside the experiment: {reason}"


@register("math-theorems", "seed 004 Theorems 3.1-3.4, 4.1-4.3, 5.1 (E9): eps bounds per input, FGSM loss "
          "monotonicity below them, CW-L2 closed form on linear-softmax; digits models", default_n=200,
          n_means="digits test images")
def math_theorems(ctx: Context) -> dict:
    # tiny models: on a CPU, intra-op threads only add contention (several times slower)
    prev = torch.get_num_threads()
    if ctx.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _math_theorems(ctx)
    finally:
        torch.set_num_threads(prev)


def _math_theorems(ctx: Context) -> dict:
    from ..zoo.architectures import linear, mlp

    _x_all, y_all = data.load("digits", "test")
    n = min(ctx.n_or(200), len(y_all))
    x, y = data.load("digits", "test", n=n, seed=ctx.seed)
    ctx.log(f"math-theorems: {n} digits test images (seeded), float64 on {ctx.device}")
    specs = [("linear-softmax", "digits-linear", lambda: linear(64)),
             ("relu-mlp", "digits-mlp", lambda: mlp(64)),
             ("relu-cnn", None, relu_cnn)]
    out: dict = {"n_images": n, "dtype": "float64", "fractions_of_bound": list(FRACTIONS), "models": {}}
    hist = []
    t0 = time.perf_counter()
    for name, zoo_name, builder in specs:
        model, source = _model(name, zoo_name, builder, ctx)
        m64 = copy.deepcopy(model).double().to(ctx.device).eval()
        xd, yd = x.double().to(ctx.device), y.to(ctx.device)
        with torch.no_grad():
            ok = m64(xd).argmax(1) == yd
        xc, yc = xd[ok], yd[ok]
        layers = decompose(m64, tuple(x.shape[1:]))
        entry: dict = {"source": source, "accuracy_on_chosen": float(ok.double().mean()),
                       "inputs": int(ok.sum()),
                       "layers": [f"{type(L.op).__name__}{'+ReLU' if L.relu else ''} in{L.in_shape} out{L.out_shape} "
                                  f"||W||_inf={inf_norm(L):.4g}" for L in layers]}
        ctx.log(f"  {name}: {source}; {entry['inputs']} correctly classified inputs")
        entry["untargeted_fgsm"] = fgsm_checks(m64, layers, xc, yc)
        entry["untargeted_fgsm"].pop("_multiples_local")
        k = 10
        xt = xc.repeat_interleave(k - 1, dim=0)
        yt = yc.repeat_interleave(k - 1)
        tt = torch.stack([torch.tensor([t for t in range(k) if t != int(c)]) for c in yc.cpu()]).flatten().to(ctx.device)
        entry["targeted_fgsm"] = fgsm_checks(m64, layers, xt, yt, tt)
        hist.append((name, entry["targeted_fgsm"].pop("_multiples_local")))
        if name == "linear-softmax":
            entry["cw_theorem_5_1"] = cw_checks(m64, xc, yc, progress=ctx.tqdm)
        out["models"][name] = entry
        _log_model(ctx, name, entry)
    out["seconds"] = time.perf_counter() - t0
    out["violations_total"] = _total_violations(out)
    from .plotting import histograms

    panels = [{"values": v, "xlabel": "eps_held / local bound",
               "title": f"{m}: targeted FGSM, {len(v)} cases failing on the grid"}
              for m, v in hist if any(math.isfinite(a) for a in v)]
    png = histograms(ctx.png("math_theorems.png"), panels,
                     suptitle="How far past the sound local bound targeted FGSM still never increased the target "
                              "loss (cases where it failed somewhere up to eps 1)") if panels else None
    out["png"] = str(png) if png else None
    ctx.log(f"  total violations of the sound claims: {out['violations_total']['sound']}; "
            f"of the printed bounds: {out['violations_total']['paper']}")
    return out


def _total_violations(out: dict) -> dict:
    tot = {"sound": 0, "paper": 0}
    for entry in out["models"].values():
        for kind in ("untargeted_fgsm", "targeted_fgsm"):
            for bname, b in entry[kind]["bounds"].items():
                key = "paper" if bname == "paper" else "sound"
                tot[key] += b["claim_below_bound"]["violations"]
                if "lemma_3_3_signs_kept_below_bound" in b:
                    tot[key] += b["lemma_3_3_signs_kept_below_bound"]["violations"]
        cw = entry.get("cw_theorem_5_1")
        if cw:
            for key in ("closed_form_kkt", "closed_form_matches_numerical", "ratio_t_over_y_increases",
                        "third_class_prediction_5_3", "exact_threshold_ge_bound"):
                tot["paper"] += cw[key]["violations"]
    return tot


def _log_model(ctx: Context, name: str, entry: dict) -> None:
    for kind in ("untargeted_fgsm", "targeted_fgsm"):
        e = entry[kind]
        parts = []
        for bname, b in e["bounds"].items():
            c = b["claim_below_bound"]
            med = b["bound"].get("median")
            mult = b["past_bound"]["all_cases_multiple_lower_bound"].get("median")
            nfail = b["past_bound"]["failed_somewhere"]
            fmult = b["past_bound"]["failing_cases_held_up_to_multiple_of_bound"].get("median")
            s = f"{bname}: median bound {med:.3g}" if med is not None else f"{bname}: bound inf"
            s += f", {c['violations']}/{c['cases']} violations"
            if "lemma_3_3_signs_kept_below_bound" in b:
                lv = b["lemma_3_3_signs_kept_below_bound"]
                s += f", sign flips {lv['violations']}/{lv['cases']}"
            if mult is not None:
                s += f", held to >= {mult:.3g}x bound (median)"
            if nfail and fmult is not None:
                s += f"; {nfail} cases failed past it, at median {fmult:.3g}x"
            parts.append(s)
        ctx.log(f"    {kind} ({e['cases']} cases): " + "; ".join(parts))
    cw = entry.get("cw_theorem_5_1")
    if cw:
        ctx.log(f"    Thm 5.1 ({cw['cases']} (x, t) pairs x {len(C_FRACTIONS)} c): KKT violations "
                f"{cw['closed_form_kkt']['violations']}, numeric mismatch {cw['closed_form_matches_numerical']['violations']} "
                f"(max rel. dev. {cw['closed_form_matches_numerical']['max_relative_deviation']:.2g}), ratio "
                f"violations {cw['ratio_t_over_y_increases']['violations']}; 5.3 third class up "
                f"{cw['third_class_ratio_5_3']['went_up']} / down {cw['third_class_ratio_5_3']['went_down']}; "
                f"exact threshold / bound median {cw['exact_threshold_over_bound'].get('median', float('nan')):.3g}")
