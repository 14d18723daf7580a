"""Attack objectives (T1-T6 of Qian et al., "TEAM: We Need More Powerful Adversarial Examples for DNNs"; docs/engine.md), each written as a per-example function to MINIMISE.

| name          | targeted | minimise                          |
|---------------|----------|-----------------------------------|
| T1            | no       | Z_y                               |
| T4            | no       | S_y                               |
| margin        | no       | Z_y - max_{i!=y} Z_i  (C&W style) |
| T2            | yes      | -Z_t                              |
| T5            | yes      | -S_t                              |
| T3            | yes      | -(Z_t - max_{i!=t} Z_i)           |
| T6            | yes      | -(S_t - max_{i!=t} S_i)           |
| T3-lse        | yes      | -(Z_t - logsumexp_{i!=t} Z_i)     |

T3-lse is the smooth upper bound of T3 (logsumexp >= max, so T3-lse <= 0 implies T3 < 0): its
gradient weighs every competitor by its softmax share instead of following whichever class is
the runner-up at the moment. Its `temperature` tau (default 1) gives tau logsumexp(Z / tau), between
max and max + tau log(m-1): TEAM's targeted min-norm walk anneals it from 1 to 0.03 (smooth early,
where T3 zigzags between close competitors; the true boundary at the end).

Margins are non-smooth at ties of the max; `other` fixes the competing class (the active piece at
the expansion point), which makes the objective smooth and is what the second-order model expands.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Objective:
    name: str
    targeted: bool
    softmax: bool
    margin: bool
    smooth_max: bool = False
    # smooth_max only: tau * logsumexp(Z / tau), the max as tau -> 0; a number or one per example (B,)
    temperature: float | torch.Tensor = 1.0

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=-1) if self.softmax else logits

    def anchor(self, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The class whose score the objective pushes (y: down, t: up)."""
        if self.targeted:
            if target is None:
                raise ValueError(f"objective {self.name} is targeted and needs a target")
            return target
        return y

    def runner_up(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Active piece of the margin's max: the best class other than the anchor."""
        a = self.anchor(y, target)
        s = self.scores(logits).detach().clone()
        s.scatter_(-1, a[:, None], float("-inf"))
        return s.argmax(dim=-1)

    def __call__(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None = None,
        other: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-example value (B,). `other` fixes the margin's competing class (else the current max)."""
        s = self.scores(logits)
        a = self.anchor(y, target)
        sa = s.gather(-1, a[:, None])[:, 0]
        if self.margin:
            if self.smooth_max:
                tau = self.temperature
                tau = tau[:, None] if torch.is_tensor(tau) and tau.dim() == 1 else tau
                so = (tau * (s / tau).scatter(-1, a[:, None], float("-inf")).logsumexp(-1, keepdim=True))[:, 0]
            else:
                if other is None:
                    other = self.runner_up(logits, y, target)
                so = s.gather(-1, other[:, None])[:, 0]
            diff = sa - so
        else:
            diff = sa
        return -diff if self.targeted else diff


OBJECTIVES: dict[str, Objective] = {
    "T1": Objective("T1", targeted=False, softmax=False, margin=False),
    "T4": Objective("T4", targeted=False, softmax=True, margin=False),
    "margin": Objective("margin", targeted=False, softmax=False, margin=True),
    "T2": Objective("T2", targeted=True, softmax=False, margin=False),
    "T5": Objective("T5", targeted=True, softmax=True, margin=False),
    "T3": Objective("T3", targeted=True, softmax=False, margin=True),
    "T6": Objective("T6", targeted=True, softmax=True, margin=True),
    "T3-lse": Objective("T3-lse", targeted=True, softmax=False, margin=True, smooth_max=True),
}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None


def decision_margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Signed distance-to-success in logit space (`Goal.margin`): < 0 where the attack has succeeded.

    Untargeted: Z_y - max_{i!=y} Z_i. Targeted: max_{i!=t} Z_i - Z_t.
    """
    from .goal import Goal

    return Goal(y, target).margin(logits)
