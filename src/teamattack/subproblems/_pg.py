"""Accelerated projected gradient on phi(d) = g.d + 1/2 d.Hd (FISTA with backtracking and
function-value restart), batched, monotone: the returned point is never worse than the start."""
from __future__ import annotations

from typing import Callable

import torch

from ._common import HVP, eps_of, phi, power_norm_estimate, tiny_of


def projected_descent(g: torch.Tensor, hvp: HVP, x0: torch.Tensor,
                      project: Callable[[torch.Tensor], torch.Tensor], iters: int,
                      diameter: torch.Tensor, L: torch.Tensor | None = None,
                      xtol: float | None = None):
    """Minimise phi over a convex set given by its exact projection, from the feasible x0.

    Returns (x, phi(x), iterations). x is always an iterate of the monotone sequence (x0 or
    a projection output), so it is feasible and phi(x) <= phi(x0).
    """
    B = g.shape[0]
    eps, tiny = eps_of(g), tiny_of(g)
    xtol = (1e3 * eps) if xtol is None else xtol
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
    return x, fx, its
