"""Exact minimal adversarial distances: the optimum as the judge of how far an attack is from it.

* `affine`: affine (linear-softmax) models, L2 and Linf, untargeted and targeted (closed forms,
  breakpoint searches, a QP / LP): exact.
* `milp`: ReLU networks, Linf, by mixed-integer LP (HiGHS, highspy), optimal or time-limited.
* `miqp`: ReLU networks, L2, by mixed-integer QP (SCIP, pyscipopt), optimal or time-limited.
* `relu`: the ReLU-net decomposition and the pre-activation bounds both solvers (and the math
  paper's theorems, `experiments/theorems.py`) use; `encoding`: the shared mixed-integer rows.

Every returned point is checked by a forward pass of the model: at eps* + `nudge` (1e-4 by
default) it must be adversarial (`verified`); the exact boundary point itself is a tie between
logits, so it is nudged across it.

    >>> import teamattack.exact as E
    >>> res = E.exact_optimum(model, x, y, "l2", eps_max=d_best * 1.0001, x_start=x_best)  # doctest: +SKIP
"""
from __future__ import annotations

import torch
from torch import nn

from .affine import halfspace_l2, halfspace_linf, l2_nobox_closed_form, min_dist_affine, polyhedron_l2
from .milp import min_linf_relu
from .miqp import min_l2_relu
from .relu import AffineLayer, NotApplicable, affine_form, decompose, layer_bounds, relu_layers
from .result import ExactResult
from .upper import pgd_linf_bisection

__all__ = [
    "AffineLayer", "ExactResult", "NotApplicable", "affine_form", "applicable", "decompose", "exact_optimum",
    "halfspace_l2", "halfspace_linf", "l2_nobox_closed_form", "layer_bounds", "min_dist_affine",
    "min_l2_relu", "min_linf_relu", "pgd_linf_bisection", "polyhedron_l2", "relu_layers",
]


def _is_affine(model: nn.Module, shape: tuple[int, ...], device=None) -> bool:
    try:
        affine_form(model, shape, device)
        return True
    except NotApplicable:
        return False


def exact_optimum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
                  target: torch.Tensor | None = None, eps_max=None, time_limit: float = 60.0,
                  progress: bool = False, x_start=None) -> ExactResult:
    """Dispatch: affine models (L2 / Linf, exact and fast), ReLU networks (Linf MILP, L2 MIQP).

    eps_max: per-image upper bound on the optimum in `norm` (the best attack's distance);
    x_start: per-image starting points for the solvers (the best attack's points).
    Raises NotApplicable when the optimum of this model and norm is not computable here.
    """
    if norm not in ("l2", "linf"):
        raise NotApplicable(f"no exact {norm} optimum here (L2 and Linf only)")
    if _is_affine(model, tuple(x.shape[1:]), x.device):
        return min_dist_affine(model, x, y, norm=norm, target=target)
    solve = min_linf_relu if norm == "linf" else min_l2_relu
    return solve(model, x, y, target=target, eps_max=eps_max, time_limit=time_limit, progress=progress,
                 x_start=x_start)


def applicable(model: nn.Module, x_shape: tuple[int, ...], norm: str) -> bool:
    """Whether exact_optimum can handle this model and norm (cheap structural check)."""
    if norm not in ("l2", "linf"):
        return False
    if _is_affine(model, x_shape):
        return True
    try:
        relu_layers(model, x_shape)
        return True
    except NotApplicable:
        return False
