"""Checking an optimum by a fresh forward pass of a point just across it."""
from __future__ import annotations

import numpy as np
import torch

from ..metrics import l2 as l2d
from ..metrics import linf as linfd
from ..objectives import decision_margin


def reached(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The success predicate of this package (one place: argmax != y, or == target)."""
    pred = logits.argmax(1)
    return pred == target if target is not None else pred != y


def margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The decision margin whose descent crosses the boundary (<= 0 once reached)."""
    return decision_margin(logits, y, target)


def verify(model, x, x_opt, y, target, eps, norm, nudge):
    """Nudge each boundary point across the boundary (<= nudge more distance) and check it.

    The exact optimum is a tie between logits (often several at once): two ways across are tried
    at growing step sizes up to `nudge`, along the margin's gradient and radially (scaling the
    perturbation raises every active constraint of a convex problem at once). Returns (x_adv,
    verified) where verified means the model, run on x_adv, is fooled within eps + nudge.
    """
    dist = linfd if norm == "linf" else l2d
    eps_t = torch.as_tensor(np.nan_to_num(eps, nan=-1.0), dtype=x.dtype, device=x.device)
    best = x_opt.clone()
    ok = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    xo = x_opt.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        marg = margin(model(xo), y, target)
        (g,) = torch.autograd.grad(marg.sum(), xo)
    view = (-1,) + (1,) * (x.dim() - 1)
    if norm == "linf":
        step = g.sign()
    else:
        step = g / g.reshape(len(g), -1).norm(dim=1).clamp_min(1e-30).reshape(view)
    radial = x_opt - x
    rnorm = dist(x, x_opt).clamp_min(1e-30).reshape(view)
    for tau in (0.0, nudge * 1e-2, nudge * 1e-1, nudge * 0.5, nudge):
        for cand in (x_opt - tau * step, x + radial * (1 + tau / rnorm)):
            if norm == "linf":
                r = (eps_t + tau).reshape(view)
                cand = torch.min(torch.max(cand, x - r), x + r)
            cand = cand.clamp(0.0, 1.0).detach()
            with torch.no_grad():
                adv = reached(model(cand), y, target)
            within = dist(x, cand) <= eps_t + nudge + 1e-6
            new = adv & within & ~ok & (eps_t >= 0)
            best[new] = cand[new]
            ok |= new
    return best, ok
