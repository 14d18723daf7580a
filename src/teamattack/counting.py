"""Forward / backward counting wrapper (adv_lib style): every attack runs the model through it."""
from __future__ import annotations

import torch
from torch import nn

from .layout import laid_out_like, row_strides


class CountingModel(nn.Module):
    """Wraps a model; counts examples passed forward and examples whose gradient was taken.

    A backward pass through an output counts once per example (hooked on the logits), whatever
    the number of objectives summed into it. Hessian-vector products are counted by the curvature
    code that makes them (`hvps`), since their double backward also passes these hooks.
    """

    def __init__(self, model: nn.Module, like: torch.Tensor | None = None) -> None:
        """like: the caller's images; every input then reaches the model in their memory layout
        (`teamattack.layout`: an attack's own points are NCHW, x may be channels_last)."""
        super().__init__()
        self.model = model
        self.train(model.training)  # mirror the wrapped model's mode (libraries read .training)
        self.forwards = 0
        self.gradients = 0
        self.hvps = 0
        self.row_strides = row_strides(like) if like is not None and like.dim() > 2 else None
        self._row_shape = tuple(like.shape[1:]) if like is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.row_strides is not None and tuple(x.shape[1:]) == self._row_shape:
            x = laid_out_like(x, self.row_strides)
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
