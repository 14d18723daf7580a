"""Accelerated projected gradient on phi(d) = g.d + 1/2 d.Hd (FISTA with backtracking and
function-value restart), batched, monotone: the returned point is never worse than the start."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import HVP, eps_of, phi, power_norm_estimate, tiny_of


def projected_descent(g: torch.Tensor, hvp: HVP, x0: torch.Tensor,
                      project: Callable[[torch.Tensor], torch.Tensor], iters: int,
                      diameter: torch.Tensor, L: torch.Tensor | None = None,
                      xtol: float | None = None, ftol: float | None = None, window: int = 10):
    """Minimise phi over a convex set given by its exact projection, from the feasible x0.

    Returns (x, phi(x), iterations). x is always an iterate of the monotone sequence (x0 or
    a projection output), so it is feasible and phi(x) <= phi(x0). Stops early when every
    example has stalled: a projected-gradient step of relative size <= xtol, or a relative
    decrease of phi <= ftol over the last `window` iterations.
    """
    B = g.shape[0]
    eps, tiny = eps_of(g), tiny_of(g)
    xtol = (1e3 * eps) if xtol is None else xtol
    ftol = (100 * eps) if ftol is None else ftol
    if L is None:
        L = power_norm_estimate(hvp, g)
    gnorm = g.norm(dim=-1)
    D = diameter.clamp_min(tiny)
    Lf = torch.maximum(1.05 * L, gnorm / (1e3 * D)).clamp_min(tiny ** 0.5)
    t = 1.0 / Lf
    x = x0
    Hx = hvp(x)
    fx = phi(g, x, Hx)
    y, Hy = x, Hx
    tk = torch.ones(B, dtype=g.dtype, device=g.device)
    its = 0
    f_ckpt = fx
    for it in range(iters):
        its = it + 1
        grad = g + Hy
        z = project(y - t.unsqueeze(-1) * grad)
        s = z - y
        Hs = hvp(s)
        sHs, ss = (s * Hs).sum(-1), (s * s).sum(-1)
        ok = sHs <= ss / t * (1 + 10 * eps)
        # backtrack where the quadratic upper bound failed (retry next iteration from the same y)
        t_new = torch.minimum(0.5 * t, 0.9 * ss / sHs.clamp_min(tiny))
        t = torch.where(ok, t, t_new)
        Hz = Hy + Hs
        fz = phi(g, z, Hz)
        better = ok & (fz < fx)
        restart = ok & ~better
        tk1 = 0.5 * (1 + torch.sqrt(1 + 4 * tk * tk))
        mom = ((tk - 1) / tk1).unsqueeze(-1)
        b_ = better.unsqueeze(-1)
        r_ = restart.unsqueeze(-1)
        y_new = torch.where(b_, z + mom * (z - x), torch.where(r_, x, y))
        Hy_new = torch.where(b_, Hz + mom * (Hz - Hx), torch.where(r_, Hx, Hy))
        x = torch.where(b_, z, x)
        Hx = torch.where(b_, Hz, Hx)
        fx = torch.where(better, fz, fx)
        tk = torch.where(better, tk1, torch.where(restart, torch.ones_like(tk), tk))
        y, Hy = y_new, Hy_new
        # converged: a plain (restarted) projected-gradient step from x does not move
        small = ss.sqrt() <= xtol * D
        if bool((ok & small).all()):
            break
        if (it + 1) % window == 0:
            stalled = (f_ckpt - fx) <= ftol * fx.abs().clamp_min(tiny)
            if bool(stalled.all()):
                break
            f_ckpt = fx
    return x, fx, its


def spectral_projected_gradient(g: torch.Tensor, hvp: HVP, x0: torch.Tensor,
                                project: Callable[[torch.Tensor], torch.Tensor], iters: int,
                                diameter: torch.Tensor, L: torch.Tensor | None = None,
                                ftol: float | None = None, window: int = 10):
    """Spectral (Barzilai-Borwein) projected gradient with an exact line search on the segment
    [x, P(x - t grad)] (phi is quadratic along it), so every iteration is monotone and costs one
    HVP. Returns (x, phi(x), iterations); x feasible (convex combination of feasible points)
    and phi(x) <= phi(x0)."""
    eps, tiny = eps_of(g), tiny_of(g)
    ftol = (100 * eps) if ftol is None else ftol
    if L is None:
        L = power_norm_estimate(hvp, g)
    gnorm = g.norm(dim=-1)
    D = diameter.clamp_min(tiny)
    Lf = torch.maximum(L, gnorm / (1e3 * D)).clamp_min(tiny ** 0.5)
    t_min, t_max = 1e-3 / Lf, 1e6 / Lf
    t = 1.0 / Lf
    x = x0
    Hx = hvp(x)
    fx = phi(g, x, Hx)
    f_ckpt = fx
    its = 0
    for it in range(iters):
        its = it + 1
        grad = g + Hx
        z = project(x - t.unsqueeze(-1) * grad)
        d = z - x
        Hd = hvp(d)
        gd, dHd = (grad * d).sum(-1), (d * Hd).sum(-1)
        a = torch.where(dHd > 0, (-gd / dHd.clamp_min(tiny)).clamp(0.0, 1.0), torch.ones_like(gd))
        a = torch.where(gd >= 0, torch.zeros_like(a), a)  # not a descent direction: stay
        # a step of exactly 0 or 1 gives exactly x or z (keeps vertices / bounds exact)
        xn = torch.where((a == 0).unsqueeze(-1), x,
                         torch.where((a == 1).unsqueeze(-1), z, x + a.unsqueeze(-1) * d))
        Hxn = Hx + a.unsqueeze(-1) * Hd
        fn = phi(g, xn, Hxn)
        better = fn < fx
        b_ = better.unsqueeze(-1)
        # BB1 step from the last move s = a d, y = a Hd: t = s.s / s.y
        ss, sy = (a * a) * (d * d).sum(-1), (a * a) * dHd
        t_bb = torch.where(sy > 0, ss / sy.clamp_min(tiny), t_max)
        t = torch.where(better, t_bb.clamp(t_min, t_max), torch.maximum(0.5 * t, t_min))
        x = torch.where(b_, xn, x)
        Hx = torch.where(b_, Hxn, Hx)
        fx = torch.where(better, fn, fx)
        if (it + 1) % window == 0:
            stalled = (f_ckpt - fx) <= ftol * fx.abs().clamp_min(tiny)
            if bool(stalled.all()):
                break
            f_ckpt = fx
    return x, fx, its
