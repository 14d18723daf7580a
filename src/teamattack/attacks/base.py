"""The callable attack protocol (torchattacks style) shared by TEAM, Gauss-Newton and the FGSM family."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

import torch
from torch import nn

from ..counting import CountingModel
from ..memory import PeakMemory, limit_fragmentation_once
from ..metrics import is_adversarial, l0, l2, linf
from ..result import AttackResult, Counters
from ..checks import warn_if_saturated
from ..validation import InputError, check_inputs, check_model
from .. import preprocessing as _space


class Attack(ABC):
    """An attack is a callable: `result = attack(x, y, target=None)`.

    Subclasses implement `run(model, x, y, target)` on a counting model and return the raw
    adversarial batch and optionally a per-example radius. The base class validates inputs, counts
    work, clips to [0, 1] and decides success with a fresh forward pass on the clipped output.
    """

    name: str = "attack"
    library: str = "teamattack"
    norm: str = "l2"
    input_space: _space.InputSpace | None = None  # bounds / preprocessing (teamattack.preprocessing)

    def __init_subclass__(cls, **kwargs) -> None:
        # every attack takes bounds= and preprocessing= (teamattack.preprocessing)
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _space.accept_space(cls.__init__)

    def set_input_space(self, bounds=None, preprocessing=None) -> Attack:
        """Inputs in `bounds=(lo, hi)`, model fed `(x - mean) / std`; distances on x's scale."""
        space = _space.InputSpace.of(bounds, preprocessing)
        self.input_space = None if space.is_identity else space
        return self

    def __init__(self, model: nn.Module, targeted: bool = False) -> None:
        self.model = model
        self.targeted = targeted
        limit_fragmentation_once()  # glibc: return freed attack buffers (teamattack.memory)

    def run_loader(self, loader, verbose: bool = False, keep_images: bool = True) -> AttackResult:
        """Attack every `(x, y)` / `(x, y, target)` batch of a DataLoader; one AttackResult.

        (`run` is the subclasses' per-batch hook; see teamattack.loader.)
        """
        from ..loader import run_loader

        return run_loader(self, loader, verbose=verbose, keep_images=keep_images)

    @abstractmethod
    def run(
        self, model: CountingModel, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, dict]:
        """Return (raw adversarial batch, per-example radius or None), optionally followed by a dict
        for `AttackResult.info` (what the call decided, e.g. TEAM's curvature source)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        if self.input_space is not None:
            return _space.call_in_space(self, self.input_space, x, y, target)
        check_model(self.model)
        if self.targeted and target is None:
            raise InputError(f"{self.name} is targeted: pass target=")
        if not self.targeted and target is not None:
            raise InputError(f"{self.name} is untargeted but a target was given (use targeted=True)")
        with torch.no_grad():
            num_classes = self.model(x[:1]).shape[-1]
        check_inputs(x, y, target, num_classes)
        warn_if_saturated(self.model, getattr(self, "objective", None), x.detach(), y, target)
        counting = CountingModel(self.model)
        with PeakMemory(x.device) as mem:
            t0 = time.perf_counter()
            raw, radius, *extra = self.run(counting, x.detach(), y, target)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            seconds = time.perf_counter() - t0
        raw = raw.detach()
        x_adv = raw.clamp(0.0, 1.0)
        success = is_adversarial(self.model, x_adv, y, target)
        if radius is None:
            radius = torch.full((x.shape[0],), float("nan"), device=x.device)
        counters = Counters(counting.forwards, counting.gradients, counting.hvps, seconds, mem.mb)
        return AttackResult(
            x_adv=x_adv, success=success, l0=l0(x, x_adv), l2=l2(x, x_adv), linf=linf(x, x_adv),
            raw=raw, radius=radius, counters=counters, info=dict(extra[0]) if extra else {},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(norm={self.norm!r}, targeted={self.targeted})"
