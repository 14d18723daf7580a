"""Inputs on the user's scale: `bounds=(lo, hi)` and `preprocessing=(mean, std)` for every attack.

teamattack's attacks work on inputs in [0, 1] with any normalisation inside the model. An
`InputSpace` lets a user keep their own convention (foolbox's): inputs `x` lie in `[lo, hi]`
(e.g. 0..255), and the model is fed `(x - mean) / std`. Every attack accepts the two keywords,

    attack = ta.TEAM(model, norm="l2", bounds=(0, 255), preprocessing=([0.5], [0.25]))
    result = attack(x_255, y)       # x in [0, 255]; the model sees (x - 0.5) / 0.25

(or, on an existing attack, `attack.set_input_space(bounds=..., preprocessing=...)`). The attack
then runs in the unit box on `u = (x - lo) / (hi - lo)` against `model(normalise(lo + u (hi -
lo)))`, and everything in the result is mapped back to the user's scale: `x_adv` and `raw` in
`[lo, hi]`, L2 / Linf distances and the `radius` in units of the bounds (L0 counts pixels and does
not change). Budget arguments given to the attack (`eps`, `max_radius`, FGSM's `step` / `radius`,
a peer's `eps` / `alpha`) are on that same scale too; defaults left alone (a peer preset's `eps`,
TEAM's `max_radius`) keep their meaning as fractions of the range. Distances are always measured before the
preprocessing (on `x`, not on the normalised tensor the model sees).
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .validation import InputError, check_model

if TYPE_CHECKING:
    from .attacks.base import Attack
    from .result import AttackResult

Number = float | int
Stat = Number | Sequence[Number] | torch.Tensor

# budget attributes on the user's scale (rescaled for L2 / Linf attacks), and a peer's parameters
_BUDGET_ATTRS = ("eps", "max_radius", "step", "radius")
_PEER_BUDGET_KEYS = ("eps", "alpha")


def _stat(value: Stat, like: torch.Tensor, axis: int) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(())
    if t.dim() == 1 and like.dim() >= 2:
        shape = [1] * like.dim()
        shape[axis] = t.numel()
        return t.reshape(shape)
    return t


@dataclass(frozen=True)
class InputSpace:
    """The user's input convention: `bounds` of x and the `(mean, std)` applied before the model.

    `axis` is the channel axis the mean / std sequences broadcast along (default -3: NCHW, as
    torchvision and foolbox). A scalar mean / std applies to every entry.
    """

    bounds: tuple[float, float] = (0.0, 1.0)
    mean: Stat | None = None
    std: Stat | None = None
    axis: int = -3

    def __post_init__(self) -> None:
        lo, hi = (float(b) for b in self.bounds)
        if not hi > lo:
            raise InputError(f"bounds must be (lo, hi) with lo < hi; got {self.bounds}")
        object.__setattr__(self, "bounds", (lo, hi))
        if (self.mean is None) != (self.std is None):
            raise InputError("preprocessing is (mean, std): give both")
        if self.std is not None and bool((torch.as_tensor(self.std, dtype=torch.float64) <= 0).any()):
            raise InputError("preprocessing std must be > 0")

    @classmethod
    def of(cls, bounds: Sequence[float] | None = None, preprocessing: Any = None, axis: int = -3) -> InputSpace:
        """From the keyword arguments: `preprocessing` is `(mean, std)` or a dict with those keys."""
        mean = std = None
        if preprocessing is not None:
            if isinstance(preprocessing, dict):
                unknown = set(preprocessing) - {"mean", "std", "axis"}
                if unknown:
                    raise InputError(f"preprocessing takes mean, std, axis; got {sorted(unknown)}")
                mean, std = preprocessing.get("mean", 0.0), preprocessing.get("std", 1.0)
                axis = int(preprocessing.get("axis", axis))
            else:
                try:
                    mean, std = preprocessing
                except (TypeError, ValueError):
                    raise InputError("preprocessing must be (mean, std)") from None
        b = (0.0, 1.0) if bounds is None else tuple(bounds)
        if len(b) != 2:
            raise InputError(f"bounds must be (lo, hi); got {bounds}")
        return cls(bounds=b, mean=mean, std=std, axis=axis)  # type: ignore[arg-type]

    @property
    def scale(self) -> float:
        """hi - lo: an L2 / Linf distance in the unit box times this is the distance on x's scale."""
        return self.bounds[1] - self.bounds[0]

    @property
    def is_identity(self) -> bool:
        return self.bounds == (0.0, 1.0) and self.mean is None

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        lo, _ = self.bounds
        return (x - lo) / self.scale

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        lo, _ = self.bounds
        return u * self.scale + lo

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        return (x - _stat(self.mean, x, self.axis)) / _stat(self.std, x, self.axis)

    def check(self, x: torch.Tensor) -> None:
        from .validation import check_x  # type, dtype and batch dimension, as every attack checks

        lo, hi = self.bounds
        x = check_x(x)
        if x.numel() and (float(x.min()) < lo or float(x.max()) > hi):
            raise InputError(f"x must lie in the bounds [{lo:g}, {hi:g}]; got values in "
                             f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")

    def unit_model(self, model: Callable[[torch.Tensor], torch.Tensor]) -> UnitModel:
        return UnitModel(model, self)


class UnitModel(nn.Module):
    """`model(normalise(lo + u (hi - lo)))`: the user's model seen from the unit box.

    `model` is an `nn.Module` (registered, so its parameters and device are visible) or any
    differentiable callable (e.g. a foolbox model). Always in eval mode itself; the wrapped
    module's own mode is left as the user set it.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], space: InputSpace) -> None:
        super().__init__()
        if isinstance(model, nn.Module):
            self.net = model
        else:
            self._fn = model
        self.space = space
        self.training = False

    def train(self, mode: bool = True) -> UnitModel:  # the wrapper never enters training mode
        net = getattr(self, "net", None)
        if net is not None:
            net.train(mode)
        return self

    @property
    def wrapped_training(self) -> bool:
        net = getattr(self, "net", None)
        return bool(net is not None and net.training)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        fn = self.net if hasattr(self, "net") else self._fn
        return fn(self.space.normalise(self.space.from_unit(u)))


# ---- the hook used by Attack -----------------------------------------------------------------

def accept_space(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate an attack's `__init__` so it takes `bounds=` and `preprocessing=` keywords."""
    if getattr(init, "_accepts_space", False):
        return init

    @functools.wraps(init)
    def wrapped(self, *args: Any, bounds: Sequence[float] | None = None, preprocessing: Any = None,
                **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if bounds is not None or preprocessing is not None:
            self.set_input_space(bounds=bounds, preprocessing=preprocessing)

    wrapped._accepts_space = True  # type: ignore[attr-defined]
    return wrapped


def _unit_budget(attack: Attack, scale: float) -> None:
    """Divide the budget arguments of an L2 / Linf attack copy by `scale` (user scale -> unit box)."""
    if attack.norm not in ("l2", "linf") or scale == 1.0:
        return
    for name in _BUDGET_ATTRS:
        value = attack.__dict__.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(attack, name, float(value) / scale)
    params = attack.__dict__.get("params")
    if isinstance(params, dict):  # a peer: only the values the user gave (preset defaults are for [0, 1])
        params = dict(params)
        given = attack.__dict__.get("overrides", {})
        for key in _PEER_BUDGET_KEYS:
            if key in given and isinstance(params.get(key), (int, float)) and not isinstance(params.get(key), bool):
                params[key] = float(params[key]) / scale
        attack.params = params  # type: ignore[attr-defined]


def call_in_space(attack: Attack, space: InputSpace, x: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None) -> AttackResult:
    """Run `attack` on x given in `space`: in the unit box on a copy, results mapped back."""
    from .metrics import l0, l2, linf

    space.check(x)
    inner = copy.copy(attack)
    inner.input_space = None  # type: ignore[attr-defined]
    inner.model = UnitModel(attack.model, space)
    if isinstance(attack.model, nn.Module):
        check_model(attack.model)
    _unit_budget(inner, space.scale)
    u = space.to_unit(x).clamp(0.0, 1.0)  # float round-off at the bounds
    result = inner(u, y, target)
    for name in ("hessian_used",):  # what the copy learnt that the original should keep
        if name in inner.__dict__:
            setattr(attack, name, inner.__dict__[name])
    # x + scaled perturbation (not from_unit(u_adv)): untouched entries stay exactly x
    result.x_adv = (x + (result.x_adv - u) * space.scale).clamp(*space.bounds)
    result.raw = x + (result.raw - u) * space.scale
    result.l0, result.l2, result.linf = l0(x, result.x_adv), l2(x, result.x_adv), linf(x, result.x_adv)
    if attack.norm in ("l2", "linf"):
        result.radius = result.radius * space.scale
    result.info["input_space"] = {"bounds": list(space.bounds),
                                  "preprocessing": None if space.mean is None else "mean/std",
                                  "distances": f"on x's scale [{space.bounds[0]:g}, {space.bounds[1]:g}]"}
    return result
