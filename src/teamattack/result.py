"""The one result object every attack returns (TEAM, Gauss-Newton, the paper FGSM family, peers)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Counters:
    """Work done by one attack call, summed over the batch.

    `forwards` and `gradients` count per example (a batched forward pass of B examples counts B),
    as adv_lib does, so `per_example()` gives the usual "gradient evaluations per image".
    `peak_memory_mb` is the peak extra memory of the call (teamattack.memory.PeakMemory).
    """

    forwards: int = 0
    gradients: int = 0
    hvps: int = 0
    seconds: float = 0.0
    peak_memory_mb: float = 0.0

    def per_example(self, n: int) -> dict[str, float]:
        n = max(n, 1)
        return {
            "forwards": self.forwards / n,
            "gradients": self.gradients / n,
            "hvps": self.hvps / n,
            "seconds": self.seconds / n,
            "peak_memory_mb": self.peak_memory_mb,
        }


@dataclass
class AttackResult:
    """What an attack call returns (foolbox-3 style: raw, clipped and success in one object).

    x_adv:    adversarial inputs clipped to [0, 1], same shape as the input batch.
    raw:      the attack's output before clipping (equal to x_adv for attacks that stay in the box).
    success:  bool per example, from a fresh forward pass of the model on x_adv (targeted: class t).
    l0, l2, linf: per-example distances of x_adv - x (L0 counts changed pixel positions).
    radius:   per-example budget the attack settled on (TEAM's C), NaN where it does not apply.
    counters: forward passes, gradients, Hessian-vector products, wall time.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    raw: torch.Tensor
    radius: torch.Tensor
    counters: Counters = field(default_factory=Counters)
    info: dict = field(default_factory=dict)

    @property
    def asr(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0

    def __len__(self) -> int:
        return int(self.success.numel())
