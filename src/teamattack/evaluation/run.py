"""Running one attack over a subset of the images, in batches, timed, with its distances."""
from __future__ import annotations

import time

import torch

from .. import metrics
from ..attacks.base import Attack
from ..result import AttackResult

_DIST = {"l2": metrics.l2, "linf": metrics.linf, "l0": metrics.l0}


def within(dist: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """dist <= eps, with float32 slack for L2 / Linf (a projection lands on eps up to rounding)."""
    return dist <= (eps if norm == "l0" else eps * (1 + 1e-5) + 1e-6)


def attack_subset(attack: Attack, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, norm: str,
                  batch_size: int, seed: int | None) -> tuple[AttackResult, torch.Tensor, float]:
    """Attack x[idx] in batches: (the concatenated AttackResult, its distances in `norm`, wall seconds).

    With `seed`, torch's RNG is seeded inside a forked state (the caller's stream is untouched).
    """
    parts = []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        for i in range(0, len(idx), batch_size):
            sl = idx[i:i + batch_size]
            parts.append(attack(x[sl], y[sl]))
    seconds = time.perf_counter() - t0
    res = AttackResult.cat(parts)
    return res, _DIST[norm](x[idx], res.x_adv), seconds
