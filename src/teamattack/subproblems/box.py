"""Ball AND box: exact projection onto {||d|| <= r} n {lower <= d <= upper}, and the
trust-region subproblem with the box (0 <= x + d <= 1 is lower = -x, upper = 1 - x).

Projection (exact, not iterative): the KKT conditions of min 1/2||d - z||^2 over the
intersection give d = clip(z / (1 + mu), lower, upper) with mu >= 0, mu = 0 when clip(z) is
already in the ball, else ||d(mu)|| = r. With t = 1/(1+mu), ||clip(t z)||^2 is piecewise
quadratic and nondecreasing in t with breakpoints t_i = bound_i / z_i; sorting the breakpoints
locates the piece and t follows in closed form. O(n log n) per example, batched.
"""
from __future__ import annotations

import torch

from ._common import (
    MatrixOrHVP,
    as_operator,
    batch_param,
    box_param,
    check_g,
    phi,
    shrink_into_ball,
    tiny_of,
)
from ._pg import projected_descent, spectral_projected_gradient

_METHODS = {"fista": projected_descent, "spg": spectral_projected_gradient}
from .lanczos import trust_region_lanczos
from .trust_region import eigh_batched, solve_trust_region_eig


def project_ball_box(z: torch.Tensor, radius, lower, upper) -> torch.Tensor:
    """Euclidean projection of z (B, n) onto {||d||_2 <= radius} n {lower <= d <= upper}.

    Needs lower <= 0 <= upper (so 0 is feasible). radius: number or (B,); bounds: number,
    (n,) or (B, n).
    """
    check_g(z)
    B = z.shape[0]
    r = batch_param(radius, B, z, "radius")
    lo, up = box_param(lower, z, "lower"), box_param(upper, z, "upper")
    if bool((lo > 0).any()) or bool((up < 0).any()):
        raise ValueError("project_ball_box needs lower <= 0 <= upper")
    if bool((r < 0).any()):
        raise ValueError("radius must be >= 0")
    zero = torch.zeros_like(z)
    bound = torch.where(z > 0, up, torch.where(z < 0, lo, zero))
    nz = z != 0
    s = torch.where(nz, bound / torch.where(nz, z, torch.ones_like(z)), torch.full_like(z, float("inf")))
    s_sorted, order = torch.sort(s, dim=-1)
    b2 = torch.gather(bound * bound, -1, order)
    z2 = torch.gather(z * z, -1, order)
    C = torch.cumsum(b2, -1)
    ztot = (z * z).sum(-1, keepdim=True)
    Z = (ztot - torch.cumsum(z2, -1)).clamp_min(0.0)
    F = torch.where(torch.isinf(s_sorted), torch.full_like(C, float("inf")), C + s_sorted ** 2 * Z)
    r2 = (r * r).unsqueeze(-1)
    cnt = (F <= r2).sum(-1, keepdim=True)  # first cnt breakpoints clipped
    Cc = torch.where(cnt > 0, torch.gather(C, -1, (cnt - 1).clamp_min(0)), torch.zeros_like(r2))
    Zc = torch.where(cnt > 0, torch.gather(Z, -1, (cnt - 1).clamp_min(0)), ztot)
    t = torch.where(Zc > 0, ((r2 - Cc).clamp_min(0.0) / Zc.clamp_min(tiny_of(z))).sqrt(),
                    torch.full_like(Zc, float("inf")))
    t = t.clamp(max=1.0)
    d = torch.minimum(torch.maximum(t * z, lo), up)
    return shrink_into_ball(d, r)


def _best_of(g, hvp, cands):
    best, fbest = None, None
    for c in cands:
        f = phi(g, c, hvp(c))
        if best is None:
            best, fbest = c, f
        else:
            take = f < fbest
            best = torch.where(take.unsqueeze(-1), c, best)
            fbest = torch.where(take, f, fbest)
    return best, fbest


def steepest_descent_point(g, hvp, radius, lower, upper):
    """Best point on the segment [0, P(-r g/||g||)], P the ball-box projection (exact line min)."""
    r = radius
    gn = g.norm(dim=-1, keepdim=True).clamp_min(tiny_of(g))
    p = project_ball_box(-g * (r.unsqueeze(-1) / gn), r, lower, upper)
    gp = (g * p).sum(-1)
    pHp = (p * hvp(p)).sum(-1)
    tstar = torch.where(pHp > 0, (-gp / pHp.clamp_min(tiny_of(g))).clamp(0.0, 1.0), torch.ones_like(gp))
    tstar = torch.where((pHp <= 0) & (gp > 0), torch.zeros_like(gp), tstar)
    return tstar.unsqueeze(-1) * p


def trust_region_box(g: torch.Tensor, H_or_hvp: MatrixOrHVP, radius, lower, upper,
                     iters: int = 200, reduced=None, trs: torch.Tensor | None = None,
                     lanczos_k: int = 20, method: str = "fista") -> torch.Tensor:
    """minimise g.d + 1/2 d.Hd  s.t. ||d||_2 <= radius and lower <= d <= upper (lower <= 0 <= upper).

    H_or_hvp: dense (B, n, n) or a callable hvp((B, n)) -> (B, n). The TRS (ball only) solution
    comes from `trs` if given, else from `reduced` = (P or None, g_small, H_small) (the problem in
    an orthonormal basis P (B, n, m) that contains the TRS solution, e.g. reduce_low_rank), else
    from the dense H, else from trust_region_lanczos with lanczos_k HVPs.
    If the TRS solution is inside the box it is returned as is (it is then globally optimal).
    Otherwise: start from the better (on phi) of the TRS solution projected on ball-box and the
    projected steepest-descent point, run projected gradient with the exact projection (method
    "fista": accelerated, backtracking, restart; "spg": spectral steps + exact line search) for up
    to `iters` iterations (stops early when stalled), keep the best point. Always inside both sets;
    never worse than the starts. Global for convex phi; for indefinite H a local solution (the
    ball-box problem with indefinite H is NP-hard in general).
    """
    check_g(g)
    B = g.shape[0]
    r = batch_param(radius, B, g, "radius")
    lo, up = box_param(lower, g, "lower"), box_param(upper, g, "upper")
    if bool((lo > 0).any()) or bool((up < 0).any()):
        raise ValueError("trust_region_box needs lower <= 0 <= upper")
    hvp, Hd = as_operator(H_or_hvp, g)
    L = None  # ||H||_2 when an eigen-decomposition is at hand (exact), else estimated later
    if trs is not None:
        d_trs = trs.to(g)
    elif reduced is not None:
        P, gs, Hs = reduced
        gh, ev, Q = eigh_batched(Hs.to(g), gs.to(g))
        ds = solve_trust_region_eig(gh, ev, Q, r).d
        d_trs = ds if P is None else torch.matmul(P.to(g), ds.unsqueeze(-1)).squeeze(-1)
        L = ev.abs().amax(-1)
    elif Hd is not None:
        gh, ev, Q = eigh_batched(Hd, g)
        d_trs = solve_trust_region_eig(gh, ev, Q, r).d
        L = ev.abs().amax(-1)
    else:
        sol = trust_region_lanczos(g, hvp, r, k=lanczos_k)
        d_trs = sol.d
        L = torch.linalg.eigvalsh(sol.basis.T).abs().amax(-1)  # Ritz values: a lower bound
    d_trs = shrink_into_ball(d_trs, r)
    inactive = ((d_trs >= lo) & (d_trs <= up)).all(-1)
    if bool(inactive.all()):
        return d_trs
    s1 = project_ball_box(d_trs, r, lo, up)
    s2 = steepest_descent_point(g, hvp, r, lo, up)
    x0, _ = _best_of(g, hvp, [s1, s2])
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}")
    diam = torch.minimum(2 * r, (up - lo).norm(dim=-1))
    solver = _METHODS[method]
    x, _, _ = solver(g, hvp, x0, lambda z: project_ball_box(z, r, lo, up), iters, diam, L=L)
    return torch.where(inactive.unsqueeze(-1), d_trs, x)


def fgsm_vertex(g: torch.Tensor, lower, upper) -> torch.Tensor:
    """The box vertex minimising g.d: lower where g > 0, upper where g < 0, 0 where g = 0."""
    lo, up = box_param(lower, g, "lower"), box_param(upper, g, "upper")
    zero = torch.minimum(torch.maximum(torch.zeros_like(g), lo), up)
    return torch.where(g > 0, lo, torch.where(g < 0, up, zero))


def box_qp(g: torch.Tensor, H_or_hvp: MatrixOrHVP, lower, upper, iters: int = 100,
           lipschitz=None, method: str = "spg") -> torch.Tensor:
    """minimise g.d + 1/2 d.Hd over lower <= d <= upper (the L_inf subproblem).

    Starts at the FGSM vertex, then projected gradient (method "spg": spectral Barzilai-Borwein
    steps with an exact line search on the projected segment; "fista": accelerated with
    backtracking and restart), monotone on phi: the result is never worse than the vertex, and with H = 0 it IS the vertex.
    lipschitz: ||H||_2 (number or (B,)) if known, else estimated by power iteration (8 HVPs);
    an underestimate only costs backtracking steps.
    Global for convex phi (PSD H); a local solution otherwise (box QPs are NP-hard in general).
    """
    check_g(g)
    lo, up = box_param(lower, g, "lower"), box_param(upper, g, "upper")
    if bool((lo > up).any()):
        raise ValueError("box_qp needs lower <= upper")
    hvp, _ = as_operator(H_or_hvp, g)
    v = fgsm_vertex(g, lo, up)
    if iters <= 0:
        return v
    diam = (up - lo).norm(dim=-1)
    L = None if lipschitz is None else batch_param(lipschitz, g.shape[0], g, "lipschitz")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}")
    x, _, _ = _METHODS[method](g, hvp, v, lambda z: torch.minimum(torch.maximum(z, lo), up), iters,
                               diam, L=L)
    return x
