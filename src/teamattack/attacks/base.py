"""The callable attack protocol (torchattacks style) shared by TEAM, Gauss-Newton and the FGSM family."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

import torch
from torch import nn

from ..counting import CountingModel
from ..memory import PeakMemory, tune_malloc_once
from ..metrics import is_adversarial, l0, l2, linf
from ..result import AttackResult, Counters
from ..checks import warn_about_model
from ..goal import Goal
from ..validation import ModelGuard, check_call
from .. import preprocessing as _space


class Attack(ABC):
    """An attack is a callable: `result = attack(x, y, target=None)`.

    Subclasses implement `run(model, x, y, target)` on a counting model and return the raw
    adversarial batch and optionally a per-example radius. The base class validates inputs, counts
    work, clips to [0, 1] and decides success with a fresh forward pass on the clipped output.

    Before any work a call checks its inputs (teamattack.validation.check_call: InputError for a
    model with a submodule in training mode, x not a floating torch tensor in [0, 1] with a batch
    dimension, x's dtype / device not the model's, labels that are not 1-D integer tensors of the
    batch's length and the model's classes, a model output that is not finite (B, classes) logits)
    and warns about the model (teamattack.checks: probabilities, randomness, zero gradients); these
    passes are not in the counters. An empty batch gives an empty result. The caller's model leaves
    the call as it came (modes, buffers, requires_grad, .grad). numpy inputs are refused.
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
        tune_malloc_once()  # glibc: keep freed attack buffers for reuse (teamattack.memory)

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
        with ModelGuard(self.model):
            return self._checked_call(x, y, target)

    def _checked_call(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> AttackResult:
        checked = check_call(self.model, x, y, target, targeted=self.targeted, name=self.name)
        x, y, target = checked.x.detach(), checked.y, checked.target
        if checked.empty:
            return _empty_result(x)
        warn_about_model(self.model, x, checked.logits, Goal(y, target), getattr(self, "objective", None))
        counting = CountingModel(self.model, like=x)
        with PeakMemory(x.device) as mem:
            t0 = time.perf_counter()
            raw, radius, *extra = self.run(counting, x, y, target)
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


def _empty_result(x: torch.Tensor) -> AttackResult:
    """The result for an empty batch: no example, no work (nothing was run)."""
    none = torch.zeros(0, device=x.device)
    return AttackResult(x_adv=x.clone(), success=torch.zeros(0, dtype=torch.bool, device=x.device), l0=none,
                        l2=none.clone(), linf=none.clone(), raw=x.clone(), radius=none.clone(),
                        info={"empty": True})
