"""Forward / backward counting wrapper (adv_lib style): every attack runs the model through it."""
from __future__ import annotations

import torch
from torch import nn


class CountingModel(nn.Module):
    """Wraps a model; counts examples passed forward and examples whose gradient was taken.

    A backward pass through an output counts once per example (hooked on the logits), whatever
    the number of objectives summed into it. Hessian-vector products are counted by the curvature
    code that makes them (`hvps`), since their double backward also passes these hooks.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # mirror the wrapped model's mode (libraries read .training)
        self.forwards = 0
        self.gradients = 0
        self.hvps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = x.shape[0]
        self.forwards += n
        if out.requires_grad:
            def _count(grad: torch.Tensor) -> None:
                self.gradients += n
            out.register_hook(_count)
        return out

    def reset(self) -> None:
        self.forwards = self.gradients = self.hvps = 0

    def add(self, forwards: int = 0, gradients: int = 0, hvps: int = 0) -> None:
        """Count work done outside `forward` (e.g. functional transforms that bypass hooks)."""
        self.forwards += forwards
        self.gradients += gradients
        self.hvps += hvps
