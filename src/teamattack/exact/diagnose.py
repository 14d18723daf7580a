"""Why an attack ended above the optimum: the two points compared, image by image."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .relu import forward_np


@dataclass
class Gap:
    """An attack's point against the optimum's, on one image.

    ratio:             attack distance / optimum.
    attack_class, optimum_class: the class each point is classified as.
    pattern_agreement: share of hidden units with the same ReLU state at the two points (1: the
                       same linear region of the network).
    cosine:            cosine between the two perturbations.
    box_attack, box_optimum: share of the moved coordinates that sit on the [0, 1] box.
    reason:            `another class` (the walk ended on another class's boundary), `another
                       region` (same class, another linear piece: the walk's basin), or `same region`
                       (same piece: the walk stopped short of that piece's closest point).
    """

    ratio: float
    attack_class: int
    optimum_class: int
    pattern_agreement: float
    cosine: float
    box_attack: float
    box_optimum: float
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _box_share(x0: np.ndarray, p: np.ndarray) -> float:
    moved = np.abs(p - x0) > 1e-6
    if not moved.any():
        return 0.0
    on = (p <= 1e-6) | (p >= 1 - 1e-6)
    return float((on & moved).sum() / moved.sum())


def explain(layers, x0: np.ndarray, x_attack: np.ndarray, x_opt: np.ndarray, norm: str) -> Gap:
    """Compare an attack's point with the optimum's (flattened float64 inputs, `relu_layers`)."""
    dist = (lambda d: float(np.abs(d).max())) if norm == "linf" else (lambda d: float(np.linalg.norm(d)))
    za, zo = forward_np(layers, x_attack), forward_np(layers, x_opt)
    pa = np.concatenate([z > 0 for z in za[:-1]]) if len(za) > 1 else np.zeros(0, bool)
    po = np.concatenate([z > 0 for z in zo[:-1]]) if len(zo) > 1 else np.zeros(0, bool)
    agree = float((pa == po).mean()) if len(pa) else 1.0
    da, do = x_attack - x0, x_opt - x0
    cos = float(da @ do / max(np.linalg.norm(da) * np.linalg.norm(do), 1e-30))
    ca, co = int(np.argmax(za[-1])), int(np.argmax(zo[-1]))
    reason = "another class" if ca != co else ("another region" if agree < 1.0 else "same region")
    return Gap(dist(da) / max(dist(do), 1e-30), ca, co, agree, cos, _box_share(x0, x_attack),
               _box_share(x0, x_opt), reason)
