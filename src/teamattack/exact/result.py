"""The per-image result of an exact computation."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ExactResult:
    """Per-image optimum of one exact computation.

    eps:      the optimum (best found when status is `time-limit`); nan when none was found.
    lower:    proven lower bound on the optimum (= eps when optimal; the solver's dual bound).
    status:   `optimal` | `time-limit` | `infeasible` (nothing adversarial within eps_max) | `error`.
    x_adv:    a point at distance <= eps + nudge that the model misclassifies (where verified).
    verified: the forward pass confirms x_adv (adversarial, within eps + nudge).
    """

    norm: str
    eps: np.ndarray
    lower: np.ndarray
    status: list[str]
    x_adv: torch.Tensor
    verified: torch.Tensor
    seconds: np.ndarray
    info: dict = field(default_factory=dict)

    def records(self) -> list[dict]:
        def f(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        per = self.info.get("per_image") or [{}] * len(self.status)
        out = []
        for i in range(len(self.status)):
            r = {"eps": f(self.eps[i]), "lower": f(self.lower[i]), "status": self.status[i],
                 "verified": bool(self.verified[i]), "seconds": float(self.seconds[i])}
            if "incumbent" in per[i]:
                r["incumbent"] = per[i]["incumbent"]
            out.append(r)
        return out

    @property
    def optimum(self) -> np.ndarray:
        """eps where proven optimal, nan elsewhere (what ratio_to_optimum uses)."""
        ok = np.array([s == "optimal" for s in self.status], dtype=bool)
        return np.where(ok, self.eps, np.nan)
