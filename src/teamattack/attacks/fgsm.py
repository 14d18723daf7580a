"""The FGSM family as the papers define it: FGSM, targeted FGSM and clipped iterative FGSM.

Dou, Osher and Wang, "Mathematical Analysis of Adversarial Attacks", eq. 2.2-2.5: a step of size `step` along the sign of the cross-entropy
gradient (away from y, or toward the target t), IFGSM repeating it and clipping to the L_inf ball
of radius `eps` around x and to [0, 1] after every step.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..counting import CountingModel
from ..validation import check_number
from .base import Attack


def _signed_gradient(model: CountingModel, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Sign of the ascent direction: +grad CE(y) untargeted, -grad CE(t) targeted."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    if target is None:
        loss = F.cross_entropy(logits, y, reduction="sum")
    else:
        loss = -F.cross_entropy(logits, target, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


class IFGSM(Attack):
    """Iterative FGSM (BIM): `steps` signed steps of size `step`, clipped to ||d||_inf <= eps.

    eps defaults to step x steps (no clipping beyond the box). With steps=1 and eps=step it is FGSM. `callback(m, x_m)`, if given, is called after every
    iteration m = 1..steps with the clipped iterate (detached), so one run can record accuracy
    against the number of iterations (math paper Figs 2b, 3b).
    """

    name = "ifgsm"
    norm = "linf"

    def __init__(self, model: nn.Module, step: float, steps: int = 10, eps: float | None = None,
                 targeted: bool = False,
                 callback: Callable[[int, torch.Tensor], None] | None = None) -> None:
        super().__init__(model, targeted)
        self.callback = callback
        self.step = check_number("step", step, low=0.0, strict=True)
        self.steps = check_number("steps", steps, low=1, integer=True)
        self.eps = check_number("eps", eps, low=0.0, strict=True, allow_none=True)
        if self.eps is None:
            self.eps = self.step * self.steps

    def run(self, model, x, y, target):
        x_adv = x.clone()
        for m in range(1, self.steps + 1):
            x_adv = x_adv + self.step * _signed_gradient(model, x_adv, y, target)
            x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0.0, 1.0)
            if self.callback is not None:
                self.callback(m, x_adv.detach())
        return x_adv, torch.full((x.shape[0],), self.eps, device=x.device)


class FGSM(IFGSM):
    """Fast gradient sign method: x + eps sign(grad CE(y)) (targeted: x - eps sign(grad CE(t)))."""

    name = "fgsm"

    def __init__(self, model: nn.Module, eps: float, targeted: bool = False) -> None:
        eps = check_number("eps", eps, low=0.0, strict=True)  # named eps (IFGSM would say step)
        super().__init__(model, step=eps, steps=1, eps=eps, targeted=targeted)
