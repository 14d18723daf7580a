"""Input checks shared by every attack: clear errors instead of silent nonsense.

One place for every check made before an attack does any work (docs/reliability.md):

- `check_number`: a budget / count argument, where it enters (the constructors).
- `check_model`: an `nn.Module` with no submodule in training mode.
- `check_call`: everything `Attack.__call__` (TEAM, Gauss-Newton, the FGSM family and every peer
  through `baselines.PeerAttack`) checks before the attack runs: the batch (`check_batch`), the model
  against it (`check_model_fits`), and the model's outputs on the clean batch (`clean_outputs`), one
  forward pass not counted in the attack's counters.
- `check_logits`: a model output is a finite (B, classes) tensor (also used by `data.predict`).
- `ModelGuard`: the caller's model leaves an attack call as it came.

Decisions: `x` must be a torch tensor (numpy arrays and lists are refused, naming
`torch.from_numpy` / `torch.tensor`: no hidden copies or dtype changes); labels may have any integer
dtype (int64, int32, uint8, ...) and are used as int64 on x's device; an empty batch (B = 0) is
checked like any other and answered with an empty `AttackResult` without a forward pass.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


class InputError(ValueError):
    """Raised for inputs an attack cannot work on (shape, range, NaN, labels, model mode)."""


def _some(indices: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in list(indices)[:limit])
    return f"[{shown}{', ...' if len(indices) > limit else ''}]"


# ---- the model -------------------------------------------------------------------------------

def check_model(model: nn.Module) -> None:
    """An `nn.Module` none of whose submodules is in training mode (InputError naming them).

    A submodule left in training mode would change between forward passes (dropout) or have its
    statistics updated by the attack's forward passes (batch norm).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise InputError(
            f"model is in training mode (submodule{'s' if len(training) > 1 else ''} {_some(training, 5)}): "
            "dropout / batch-norm statistics would change between forward passes; call model.eval() first"
        )


def _reference_tensor(model: nn.Module) -> torch.Tensor | None:
    """The model's first floating-point parameter (else buffer): its dtype and device."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t
    return None


def check_model_fits(model: nn.Module, x: torch.Tensor) -> None:
    """x's dtype and device are those of the model's parameters (models without any: no check)."""
    ref = _reference_tensor(model)
    if ref is None:
        return
    if ref.device != x.device:
        raise InputError(f"x is on {x.device} but the model's parameters are on {ref.device}: "
                         f"move one of them (x.to({str(ref.device)!r}) or model.to({str(x.device)!r}))")
    if ref.dtype != x.dtype:
        raise InputError(f"x is {x.dtype} but the model's parameters are {ref.dtype}: "
                         f"convert one of them (x.to({ref.dtype}) or model.to({x.dtype}))")


# ---- the batch -------------------------------------------------------------------------------

def check_x(x: object) -> torch.Tensor:
    if not torch.is_tensor(x):
        kind = type(x).__name__
        hint = "torch.from_numpy(x)" if type(x).__module__ == "numpy" else "torch.tensor(x)"
        raise InputError(f"x must be a torch.Tensor, got {kind}: convert it with {hint} (float, in [0, 1])")
    if not x.is_floating_point():
        raise InputError(f"x must be a floating-point tensor, got {x.dtype}: e.g. x.float() / 255 for uint8 images")
    if x.dim() < 2:
        raise InputError(f"x must have a batch dimension, shape (B, ...); got shape {tuple(x.shape)}")
    return x


def _check_labels(name: str, lab: object, n: int, device: torch.device) -> torch.Tensor:
    if not torch.is_tensor(lab):
        raise InputError(f"{name} must be a 1-D integer torch.Tensor, got {type(lab).__name__}")
    if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        raise InputError(f"{name} must be a 1-D integer tensor (class indices), got {lab.dtype}")
    if lab.dim() != 1:
        raise InputError(f"{name} must be a 1-D integer tensor, got shape {tuple(lab.shape)}")
    if lab.numel() != n:
        raise InputError(f"{name} has {lab.numel()} entries for a batch of {n}")
    return lab.to(device=device, dtype=torch.long)


def check_batch(
    x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """No forward pass: x a finite floating tensor in [0, 1] with a batch dimension, y / target
    1-D integer tensors of matching length. Returns (x, y, target), labels as int64 on x's device."""
    x = check_x(x)
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(1).nonzero().squeeze(1).tolist()
        raise InputError(f"x contains NaN or infinite values (examples {_some(bad)})")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"x must lie in [0, 1] (pixel scale); got values in [{lo:.4g}, {hi:.4g}]. "
                "Put normalisation inside the model (or pass bounds= / preprocessing=)."
            )
    y = _check_labels("y", y, x.shape[0], x.device)
    if target is not None:
        target = _check_labels("target", target, x.shape[0], x.device)
        if bool((target == y).any()):
            bad = (target == y).nonzero().squeeze(1).tolist()
            raise InputError(f"target equals the true label for examples {_some(bad)}")
    return x, y, target


def check_label_range(num_classes: int, y: torch.Tensor, target: torch.Tensor | None = None) -> None:
    """Labels in [0, num_classes)."""
    for name, lab in (("y", y), ("target", target)):
        if lab is None or not lab.numel():
            continue
        bad = ((lab < 0) | (lab >= num_classes)).nonzero().squeeze(1).tolist()
        if bad:
            raise InputError(f"{name} has labels outside [0, {num_classes}) (examples {_some(bad)})")


def check_inputs(
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`check_batch`, then labels in [0, num_classes) when it is given."""
    x, y, target = check_batch(x, y, target)
    if num_classes is not None:
        check_label_range(num_classes, y, target)
    return x, y, target


# ---- the model's outputs ---------------------------------------------------------------------

def check_logits(out: object, n: int, offset: int = 0) -> torch.Tensor:
    """A model's output for n examples: a finite (n, classes) floating tensor with classes >= 2.

    A tuple / dict output is refused with how to wrap the model; non-finite rows are named by
    their example index (`offset` is the index of the first row in the caller's batch).
    """
    if isinstance(out, (tuple, list)):
        raise InputError(
            f"the model returned a {type(out).__name__} of {len(out)}, not a logits tensor: wrap it "
            "in an nn.Module whose forward returns the logits, e.g. model(x)[0]")
    if isinstance(out, dict):
        raise InputError(
            f"the model returned a dict (keys {sorted(map(str, out))[:5]}), not a logits tensor: wrap it "
            "in an nn.Module whose forward returns model(x)['logits'] (or the key holding them)")
    if not torch.is_tensor(out):
        raise InputError(f"the model returned {type(out).__name__}, not a logits tensor (B, classes)")
    if out.dim() != 2 or out.shape[0] != n:
        raise InputError(f"the model's output must be logits of shape (B, classes) = ({n}, classes); "
                         f"got shape {tuple(out.shape)}")
    if out.shape[1] < 2:
        raise InputError(f"the model's output has {out.shape[1]} class: a classifier needs >= 2 logits "
                         "(for a binary model output [-z, z] or [0, z])")
    if not out.is_floating_point():
        raise InputError(f"the model's output must be floating-point logits, got {out.dtype}")
    finite = torch.isfinite(out).all(1)
    if not bool(finite.all()):
        bad = [offset + i for i in (~finite).nonzero().squeeze(1).tolist()]
        raise InputError(f"the model's outputs are NaN or infinite for examples {_some(bad)} "
                         f"({len(bad)} of the batch): check its weights and input scale (float16 overflow?)")
    return out


@torch.no_grad()
def clean_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The model's checked logits on x (`check_logits`), in batches; empty x gives an empty (0, 0).

    A model that cannot take x at all (a shape it does not expect) raises InputError saying so.
    """
    outs = []
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size]
        try:
            out = model(chunk)
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"the model cannot take x of shape {tuple(x.shape)} ({x.dtype}, {x.device}): "
                             f"{first}") from e
        outs.append(check_logits(out, len(chunk), offset=i))
    return torch.cat(outs) if outs else x.new_zeros((0, 0))


@dataclass(frozen=True)
class CheckedCall:
    """What `check_call` returns: the batch ready for the attack and the clean logits."""

    x: torch.Tensor
    y: torch.Tensor                     # int64, on x's device
    target: torch.Tensor | None         # int64, on x's device
    logits: torch.Tensor                # (B, classes) finite; (0, 0) for an empty batch

    @property
    def empty(self) -> bool:
        return self.x.shape[0] == 0


def check_call(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    *,
    targeted: bool,
    name: str = "the attack",
) -> CheckedCall:
    """Every check `Attack.__call__` makes before the attack runs (the order matters: no forward
    pass before the model's mode, the batch and the model's dtype / device are checked)."""
    check_model(model)
    if targeted and target is None:
        raise InputError(f"{name} is targeted: pass target=")
    if not targeted and target is not None:
        raise InputError(f"{name} is untargeted but a target was given (use targeted=True)")
    x, y, target = check_batch(x, y, target)
    if x.shape[0] == 0:
        return CheckedCall(x, y, target, x.new_zeros((0, 0)))
    check_model_fits(model, x)
    logits = clean_outputs(model, x.detach())
    check_label_range(logits.shape[1], y, target)
    return CheckedCall(x, y, target, logits)


# ---- the caller's model is left as it came ------------------------------------------------------

class ModelGuard:
    """Context manager: on exit, every submodule's mode, every parameter's `requires_grad` and
    `.grad` (None stays None; an existing gradient gets its values back) and every buffer's values
    are as they were on entry, whatever the attack (or a peer library) did to them."""

    def __init__(self, model: object) -> None:
        self.model = model if isinstance(model, nn.Module) else None

    def __enter__(self) -> ModelGuard:
        m = self.model
        if m is not None:
            self._modes = [(mod, mod.training) for mod in m.modules()]
            self._params = [(p, p.requires_grad, None if p.grad is None else p.grad.detach().clone())
                            for p in m.parameters()]
            self._buffers = [(b, b.detach().clone()) for b in m.buffers()]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.model is None:
            return
        for mod, mode in self._modes:
            mod.training = mode
        with torch.no_grad():
            for p, requires_grad, grad in self._params:
                if p.requires_grad != requires_grad:
                    p.requires_grad_(requires_grad)
                if grad is None:
                    p.grad = None
                elif p.grad is None or not torch.equal(p.grad, grad):
                    p.grad = grad
            for b, value in self._buffers:
                if b.shape == value.shape and not torch.equal(b, value):
                    b.copy_(value)


# ---- budget / count arguments ------------------------------------------------------------------

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
    `None` passes only with `allow_none`. Booleans and strings are not numbers.
    """
    if value is None:
        if allow_none:
            return None
        raise InputError(f"{name} is required (got None)")
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number and torch.is_tensor(value):
        is_number = value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool
    if not is_number:
        import numpy as np

        is_number = isinstance(value, (np.integer, np.floating))
    if not is_number:
        raise InputError(f"{name} must be a number, got {type(value).__name__}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise InputError(f"{name} must be finite, got {value}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise InputError(f"{name} must be finite, got {v}")
    if integer and v != int(v):
        raise InputError(f"{name} must be an integer, got {value}")
    if low is not None and (v < low or (strict and v == low)):
        raise InputError(f"{name} must be {'>' if strict else '>='} {low:g}, got {value}")
    if high is not None and v > high:
        raise InputError(f"{name} must be <= {high:g}, got {value}")
    if integer:
        return int(value) if isinstance(value, int) else int(v)
    return v
