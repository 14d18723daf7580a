"""Input checks shared by every attack: clear errors instead of silent nonsense."""
from __future__ import annotations

import torch
from torch import nn


class InputError(ValueError):
    """Raised for inputs an attack cannot work on (shape, range, NaN, labels, model mode)."""


def check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise InputError(
            "model is in training mode (dropout / batch-norm statistics would change between "
            "forward passes); call model.eval() first"
        )


def check_inputs(
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    num_classes: int | None = None,
) -> None:
    """Validate a batch: x float in [0,1] with a batch dimension, y int labels of matching length."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise InputError("x must be a floating-point tensor")
    if x.dim() < 2:
        raise InputError(f"x must have a batch dimension, shape (B, ...); got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"x must lie in [0, 1] (pixel scale); got values in [{lo:.4g}, {hi:.4g}]. "
            "Put normalisation inside the model."
        )
    for name, lab in (("y", y), ("target", target)):
        if lab is None:
            continue
        if not torch.is_tensor(lab) or lab.is_floating_point() or lab.dim() != 1:
            raise InputError(f"{name} must be a 1-D integer tensor")
        if lab.numel() != x.shape[0]:
            raise InputError(f"{name} has {lab.numel()} entries for a batch of {x.shape[0]}")
        if lab.numel() and (int(lab.min()) < 0 or (num_classes is not None and int(lab.max()) >= num_classes)):
            raise InputError(f"{name} has labels outside [0, {num_classes})")
    if target is not None and bool((target == y).any()):
        raise InputError("target equals the true label for some examples")


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = 0.0,
    strict: bool = False,
    high: float | None = None,
    integer: bool = False,
    allow_none: bool = False,
) -> float | int | None:
    """Validate a budget / count argument where it enters; return it as float (or int).

    Raises InputError naming the argument when the value is not a finite real number, is below
    `low` (or equal to it with `strict`), above `high`, or not an integer when `integer` is set.
    `None` passes only with `allow_none`.
    """
    if value is None:
        if allow_none:
            return None
        raise InputError(f"{name} is required (got None)")
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
        torch.is_tensor(value) and value.numel() == 1
    ):
        try:
            import numpy as np

            if not isinstance(value, np.number):
                raise TypeError
        except TypeError:
            raise InputError(f"{name} must be a number, got {type(value).__name__}") from None
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise InputError(f"{name} must be finite, got {v}")
    if integer:
        if v != int(v):
            raise InputError(f"{name} must be an integer, got {value}")
    if low is not None and (v < low or (strict and v == low)):
        raise InputError(f"{name} must be {'>' if strict else '>='} {low:g}, got {value}")
    if high is not None and v > high:
        raise InputError(f"{name} must be <= {high:g}, got {value}")
    return int(v) if integer else v
