"""The one result object every attack returns (TEAM, Gauss-Newton, the paper FGSM family, peers)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .metrics import stats


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

    def __add__(self, other: Counters) -> Counters:
        """Work of two calls together (peak memory: the larger peak)."""
        return Counters(self.forwards + other.forwards, self.gradients + other.gradients,
                        self.hvps + other.hvps, self.seconds + other.seconds,
                        max(self.peak_memory_mb, other.peak_memory_mb))


@dataclass(frozen=True)
class Summary:
    """`AttackResult.summary()`: success rate and distances over the successful examples.

    `l0`, `l2`, `linf` are (median, mean) over successes (the papers' convention), None where
    nothing succeeded; `per_example` is `Counters.per_example` (gradients per image, ...).
    Distances are on the inputs' scale (the attack's bounds, teamattack.preprocessing).
    """

    n: int
    successes: int
    asr: float
    l0: tuple[float, float] | None
    l2: tuple[float, float] | None
    linf: tuple[float, float] | None
    per_example: dict[str, float]

    def __str__(self) -> str:
        lines = [f"{self.successes}/{self.n} successful ({100 * self.asr:.1f}%)"]
        for name in ("l0", "l2", "linf"):
            v = getattr(self, name)
            if v is not None:
                lines.append(f"{name:>5}: median {v[0]:.4g}, mean {v[1]:.4g} (over successes)")
        pe = self.per_example
        lines.append(f"per example: {pe['gradients']:.4g} gradients, {pe['forwards']:.4g} forwards, "
                     f"{pe['hvps']:.4g} HVPs, {pe['seconds']:.4g} s; peak {pe['peak_memory_mb']:.4g} MB")
        return "\n".join(lines)


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


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

    def summary(self) -> Summary:
        """ASR, median / mean L0, L2, Linf over successes, work per example."""
        ok = self.success.bool().cpu()

        def over_successes(d: torch.Tensor) -> tuple[float, float] | None:
            st = stats(d.detach().cpu()[ok].tolist())
            return None if st["median"] is None else (float(st["median"]), float(st["mean"]))

        return Summary(n=len(self), successes=int(ok.sum()), asr=self.asr, l0=over_successes(self.l0),
                       l2=over_successes(self.l2), linf=over_successes(self.linf),
                       per_example=self.counters.per_example(len(self)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary, the counters, `info`, and per-example lists (no image tensors).

        `per_example` holds `success`, `l0`, `l2`, `linf`, `radius` (None where NaN), one entry per
        input in order.
        """
        per = {"success": [bool(v) for v in self.success.cpu().tolist()]}
        for name in ("l0", "l2", "linf", "radius"):
            per[name] = [_finite_or_none(v) for v in getattr(self, name).detach().cpu().double().tolist()]
        summ = asdict(self.summary())
        return {"n": len(self), "summary": summ, "counters": asdict(self.counters),
                "info": _jsonable(self.info), "per_example": per}

    @classmethod
    def cat(cls, results: Sequence[AttackResult]) -> AttackResult:
        """Concatenate the results of consecutive batches (counters summed)."""
        if not results:
            raise ValueError("no results to concatenate")
        counters = Counters()
        for r in results:
            counters = counters + r.counters
        tensors = {name: torch.cat([getattr(r, name) for r in results])
                   for name in ("x_adv", "success", "l0", "l2", "linf", "raw", "radius")}
        return cls(**tensors, counters=counters, info=dict(results[0].info, batches=len(results)))

    def __repr__(self) -> str:
        s = self.summary()
        parts = [f"n={s.n}", f"asr={100 * s.asr:.1f}%"]
        for name in ("l0", "l2", "linf"):
            v = getattr(s, name)
            if v is not None:
                parts.append(f"median_{name}={v[0]:.4g}")
        parts.append(f"grads/img={s.per_example['gradients']:.4g}")
        parts.append(f"s/img={s.per_example['seconds']:.3g}")
        return f"AttackResult({', '.join(parts)})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value if not (isinstance(value, float) and not math.isfinite(value)) else None
    if torch.is_tensor(value):
        return _jsonable(value.detach().cpu().tolist()) if value.numel() <= 10_000 else repr(value)
    return repr(value)
