"""Quick upper bounds on the minimal distance (the solvers' eps_max and starting point)."""
from __future__ import annotations

import torch
from torch import nn

from ..metrics import linf as linfd
from .relu import INF
from .verify import margin, reached


def pgd_linf_bisection(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                       steps: int = 20, iters: int = 12, radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A quick upper bound on the minimal Linf distance: margin PGD at a per-image radius, bisected.

    Returns (distance, x_adv): the Linf distance of the closest adversarial found (inf where none).
    Used as eps_max for the MILP and as the attack the MILP optimum is checked against.
    """
    N = x.shape[0]
    view = (-1,) + (1,) * (x.dim() - 1)

    def attack(r: torch.Tensor):
        rv = r.reshape(view)
        xa = x.clone()
        for s in range(steps):
            xa.requires_grad_(True)
            with torch.enable_grad():
                marg = margin(model(xa), y, target)
                (g,) = torch.autograd.grad(marg.sum(), xa)
            size = rv * (2.5 / steps if s < steps - 1 else 1.0)
            xa = xa.detach() - size * g.sign()
            xa = torch.min(torch.max(xa, x - rv), x + rv).clamp(0.0, 1.0)
        with torch.no_grad():
            return xa, reached(model(xa), y, target)

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
