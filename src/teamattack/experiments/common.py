"""Helpers shared by the experiments: models, batching, FGSM sweeps."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..paper import FGSM


def zoo_model(name: str, device: torch.device) -> nn.Module:
    """A zoo model in eval mode on `device` (teamattack.zoo.load)."""
    from .. import zoo

    model = zoo.load(name)
    return model.to(device).eval()


def chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def batch_size_for(device: torch.device, cpu: int = 100, cuda: int = 500) -> int:
    return cuda if device.type == "cuda" else cpu


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model(x[s]).argmax(1) for s in chunks(len(x), batch_size)]) if len(x) else \
        torch.empty(0, dtype=torch.long, device=x.device)


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model(x[s]).softmax(1) for s in chunks(len(x), batch_size)])


def fgsm_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   target: torch.Tensor | None = None, eps_max: float = 1.0):
    """FGSM's effective direction d, so that clamp(x + eps d, 0, 1) IS FGSM(eps) for 0 < eps <= eps_max.

    One call of the library's FGSM at eps_max; d = sign(x_adv - x). Where FGSM's sign is 0, or the
    pixel already sits on the [0,1] bound it points to, d is 0, and so is FGSM's move at any eps.
    Returns (d, AttackResult at eps_max).
    """
    res = FGSM(model, eps=eps_max, targeted=target is not None)(x, y, target)
    return torch.sign(res.x_adv - x), res


def fgsm_at(x: torch.Tensor, d: torch.Tensor, eps: float) -> torch.Tensor:
    return (x + eps * d).clamp(0.0, 1.0)
