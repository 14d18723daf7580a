"""Gauss-Newton / Levenberg-Marquardt attack (the TEAM paper's Algorithm 3, fixed; docs/engine.md).

The paper's matrix grad f grad f^T is rank one, so its -lambda_min I shift does nothing. Here the
residual vector is r_j = max(0, Z_j - Z_t + kappa) for every j != t (targeted), or the single
residual r = max(0, Z_y - Z_j* + kappa) with j* the runner-up (untargeted), and each step is

    d = -(J^T J + mu I)^{-1} J^T r = -J^T (J J^T + mu I)^{-1} r,

solved in the small class space (m x m) by the push-through identity. mu follows the usual
Levenberg-Marquardt rule (shrink after a step that lowers ||r||, grow and retry otherwise). The
box [0, 1] is handled by a projected step: coordinates at a bound that the descent direction
J^T r would push outward are frozen (their Jacobian columns zeroed) before the solve.
"""
from __future__ import annotations

import torch
from torch import nn

from ..counting import CountingModel
from ..curvature.sources import logit_jacobian
from ..goal import Goal
from ..validation import check_number
from .base import Attack


def residuals(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, kappa: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(r (B, m), row weights W (B, m, m) mapping logit rows to residual rows).

    r_j = max(0, Z_j - Z_a + kappa) with a = t (targeted, all j != t) or the runner-up
    j* only (untargeted, a = j*, residual on y: Z_y - Z_j*).
    """
    B, m = z.shape
    eye = torch.eye(m, dtype=z.dtype, device=z.device)
    if target is not None:
        a = target
        raw = z - z.gather(1, a[:, None]) + kappa
        mask = torch.ones_like(z, dtype=torch.bool).scatter_(1, a[:, None], False)
    else:
        zz = z.clone().scatter_(1, y[:, None], float("-inf"))
        a = zz.argmax(1)
        raw = z - z.gather(1, a[:, None]) + kappa
        mask = torch.zeros_like(z, dtype=torch.bool).scatter_(1, y[:, None], True)
    active = mask & (raw > 0)
    r = torch.where(active, raw, torch.zeros_like(raw))
    # d r_j / d Z = e_j - e_a on active rows
    W = (eye.expand(B, m, m) - eye[a].unsqueeze(1)) * active.unsqueeze(-1)
    return r, W


class GaussNewton(Attack):
    """Levenberg-Marquardt on the margin residuals; reaches a target (or any other class).

    Args:
        model: classifier on [0, 1] inputs, eval mode.
        targeted: residuals against the target class t (else against the runner-up).
        kappa: confidence margin in logits (default 0.05: with 0 the iterations stop exactly on the
            decision boundary, where float noise between batch sizes can flip the class).
        steps: maximum number of LM iterations.
        mu: initial damping.
    """

    name = "gauss-newton"
    norm = "l2"

    def __init__(self, model: nn.Module, targeted: bool = True, kappa: float = 0.05, steps: int = 100,
                 mu: float = 1e-2) -> None:
        super().__init__(model, targeted)
        self.kappa = check_number("kappa", kappa, low=0.0)
        self.steps = check_number("steps", steps, low=1, integer=True)
        self.mu0 = check_number("mu", mu, low=0.0, strict=True)

    def run(self, model: CountingModel, x, y, target):
        B = x.shape[0]
        cur = x.reshape(B, -1).clone()
        mu = torch.full((B,), self.mu0, dtype=x.dtype, device=x.device)
        done = torch.zeros(B, dtype=torch.bool, device=x.device)
        goal = Goal(y, target)
        for _ in range(self.steps):
            act = (~done).nonzero().squeeze(1)
            if len(act) == 0:
                break
            ga = goal[act]
            ya, ta = ga.y, ga.target
            z, J = logit_jacobian(model, cur[act].reshape(-1, *x.shape[1:]))
            won = ga.reached(z)
            r, W = residuals(z, ya, ta, self.kappa)
            won &= r.norm(dim=1) <= 1e-12 if self.kappa > 0 else won
            done[act[won]] = True
            Jr = W @ J                                                  # (b, m, n) residual Jacobian
            # projected LM: freeze coordinates at a bound that the descent direction pushes outward
            descent = -(Jr.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
            c = cur[act]
            blocked = ((c <= 0) & (descent < 0)) | ((c >= 1) & (descent > 0))
            Jr = Jr * (~blocked).unsqueeze(1)
            JJt = Jr @ Jr.transpose(1, 2)
            eye = torch.eye(JJt.shape[1], dtype=x.dtype, device=x.device)
            sol = torch.linalg.solve(JJt + mu[act, None, None] * eye, r.unsqueeze(-1))
            d = -(Jr.transpose(1, 2) @ sol).squeeze(-1)
            cand = (cur[act] + d).clamp(0, 1)
            with torch.no_grad():
                z_new = model(cand.reshape(-1, *x.shape[1:]))
            r_new, _ = residuals(z_new, ya, ta, self.kappa)
            better = (r_new.norm(dim=1) < r.norm(dim=1)) & ~won
            cur[act[better]] = cand[better]
            mu[act] = torch.where(better, mu[act] / 3, mu[act] * 4).clamp(1e-8, 1e8)
        return cur.reshape(x.shape), None
