"""What an attack must reach, for a batch: the class to leave (untargeted) or to reach (targeted).

`Goal(y, target)` is the one success criterion of the library: `reached(logits)` decides success
(argmax != y untargeted, argmax == t targeted, and all logits finite) and `margin(logits)` is the signed logit margin to
it, negative exactly where it is reached (up to ties of the max). It indexes and repeats like the
batch it describes, so code working on a subset of rows (or K candidates per row) never writes
`None if target is None else target[idx]`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Goal:
    """The criterion for a batch: y (B,) true labels, target (B,) or None (untargeted)."""

    y: torch.Tensor
    target: torch.Tensor | None = None

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, idx) -> Goal:
        """The goal of rows `idx` (an index tensor, a boolean mask or a slice)."""
        return Goal(self.y[idx], None if self.target is None else self.target[idx])

    def repeat_interleave(self, k: int) -> Goal:
        """Each row repeated k times in a row (K candidates per example)."""
        return Goal(self.y.repeat_interleave(k), None if self.target is None else self.target.repeat_interleave(k))

    def reached(self, logits: torch.Tensor) -> torch.Tensor:
        """Bool (B,): the prediction is not y (untargeted) or is the target (targeted), from finite
        logits only (argmax would pick a NaN: a row with a NaN or an infinity never counts)."""
        pred = logits.argmax(-1)
        hit = pred == self.target if self.target is not None else pred != self.y
        return hit & torch.isfinite(logits).all(-1)

    def margin(self, logits: torch.Tensor) -> torch.Tensor:
        """Signed distance-to-success in logit space, < 0 where the goal is reached.

        Untargeted: Z_y - max_{i!=y} Z_i. Targeted: max_{i!=t} Z_i - Z_t.
        """
        a = self.target if self.target is not None else self.y
        own = logits.gather(-1, a[:, None])[:, 0]
        others = logits.scatter(-1, a[:, None], float("-inf")).amax(-1)
        return others - own if self.target is not None else own - others
