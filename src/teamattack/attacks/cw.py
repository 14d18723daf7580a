"""The math paper's CW-L2 variant (Dou, Osher and Wang, "Mathematical Analysis of Adversarial Attacks", eqs. 2.9-2.10).

    minimise_w  || 1/2 (tanh(w) + 1) - x ||_2^2 + c * max(-kappa, max_{i != t} Z_i - Z_t)

with a FIXED number of Adam steps (paper: c = 10, kappa = 0, 10 steps, learning rate 0.01) and
no binary search over c, then "different levels" of the attack by the eq. 2.10 scaling

    x' = x + scale * (x_adv - x).

This is not Carlini & Wagner's full attack (no search over c, no keeping of the best iterate, a
handful of steps): it is the variant the math paper runs. The untargeted form replaces the hinge by
max(-kappa, Z_y - max_{i != y} Z_i).

Choices where the paper is silent (see docs/math_paper.md):
- w starts at atanh(2x - 1) with 2x - 1 shrunk by (1 - 1e-6) so that pixels at 0 or 1 stay finite;
- the distance term is measured to the original x, as in eq. 2.9;
- the returned point is the LAST Adam iterate (the paper keeps no best one);
- scale = 1 gives x_adv itself; scale != 1 is eq. 2.10, clipped to [0, 1] by the Attack base.
"""
from __future__ import annotations

import torch
from torch import nn

from ..counting import CountingModel
from ..validation import check_number
from .base import Attack


def cw_hinge(logits: torch.Tensor, label: torch.Tensor, targeted: bool, kappa: float = 0.0) -> torch.Tensor:
    """Per-example C&W hinge: targeted max(-k, max_{i!=t} Z_i - Z_t); untargeted max(-k, Z_y - max_{i!=y} Z_i)."""
    own = logits.gather(1, label[:, None]).squeeze(1)
    others = logits.scatter(1, label[:, None], float("-inf")).amax(dim=1)
    diff = others - own if targeted else own - others
    return diff.clamp(min=-kappa)


class CWL2(Attack):
    """CW-L2 as the math paper runs it: `steps` Adam steps in tanh space, then eq. 2.10 scaling.

    Parameters: c (the multiplier of eq. 2.9, paper 10), kappa (confidence, paper 0), steps (Adam
    steps, paper 10), lr (Adam learning rate, paper 0.01), scale (the eq. 2.10 factor, written
    epsilon in the paper; 1 = no scaling), targeted (the paper's attack is targeted).
    """

    name = "cw-l2"
    norm = "l2"

    def __init__(self, model: nn.Module, c: float = 10.0, kappa: float = 0.0, steps: int = 10,
                 lr: float = 0.01, scale: float = 1.0, targeted: bool = True) -> None:
        super().__init__(model, targeted)
        self.c = check_number("c", c, low=0.0)
        self.kappa = check_number("kappa", kappa, low=0.0)
        self.steps = check_number("steps", steps, low=0, integer=True)
        self.lr = check_number("lr", lr, low=0.0, strict=True)
        self.scale = check_number("scale", scale, low=None)

    def optimise(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None) -> torch.Tensor:
        """The unscaled solution x_adv of eq. 2.9 after `steps` Adam steps (in [0, 1] by construction)."""
        label = target if self.targeted else y
        w = torch.atanh((2.0 * x - 1.0) * (1.0 - 1e-6)).detach().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        dims = tuple(range(1, x.dim()))
        for _ in range(self.steps):
            x_adv = 0.5 * (torch.tanh(w) + 1.0)
            dist = (x_adv - x).pow(2).sum(dim=dims)
            loss = (dist + self.c * cw_hinge(model(x_adv), label, self.targeted, self.kappa)).sum()
            (w.grad,) = torch.autograd.grad(loss, w)  # no gradients into the model's parameters
            opt.step()
        return (0.5 * (torch.tanh(w) + 1.0)).detach()

    def run(self, model: CountingModel, x, y, target):
        with torch.enable_grad():
            x_adv = self.optimise(model, x, y, target)
        raw = x + self.scale * (x_adv - x)
        return raw, None
