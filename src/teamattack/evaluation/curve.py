"""`robustness_curve`: robust accuracy against every eps from ONE minimum-norm run."""
from __future__ import annotations

import torch
from torch import nn

from ..attacks.base import Attack
from ..data import predict
from ..validation import check_inputs, check_model
from .result import RobustnessCurve
from .run import attack_subset


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str = "linf",
                     attack: Attack | None = None, *, batch_size: int = 500, seed: int | None = 0) -> RobustnessCurve:
    """The curve accuracy(eps) over all n images from one run of a minimum-norm attack.

    attack: default `TEAM(model, norm)` (the boundary walk). It runs once on the clean-correct
    images; an image is robust at eps iff it is clean-correct and the attack failed on it or
    found nothing closer than eps (distance > eps). Non-increasing in eps; at eps 0 the clean
    accuracy. A minimum-norm attack's curve is an upper bound on the true one.
    """
    from ..attacks import TEAM

    check_model(model)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[-1]
    check_inputs(x, y, None, num_classes)
    attack = TEAM(model, norm) if attack is None else attack
    correct = predict(model, x, batch_size) == y
    idx = correct.nonzero().squeeze(1)
    dist: list[float | None] = [None] * len(y)
    seconds, grads = 0.0, 0
    if len(idx):
        res, d, seconds = attack_subset(attack, x, y, idx, norm, batch_size, seed)
        for i, ok, di in zip(idx.tolist(), res.success.tolist(), d.double().tolist()):
            dist[i] = di if ok else None
        grads = res.counters.gradients
    return RobustnessCurve(norm, getattr(attack, "name", type(attack).__name__), len(y),
                           [bool(c) for c in correct.tolist()], dist, seconds, int(grads))
