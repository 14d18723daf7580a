"""TEAM as a torchattacks attack: `atk = TEAM(model, norm="l2"); adv = atk(images, labels)`.

A subclass of `torchattacks.Attack` (3.5.1), so everything torchattacks offers around an attack
works: `MultiAttack([...])`, `set_normalization_used(mean, std)` (inputs and outputs then
normalised, the model fed normalised inputs, as for every torchattacks attack), the targeted
modes (`set_mode_targeted_by_label`, `_random`, `_least_likely`, `_by_function`), `save(loader)`,
`set_model_training_mode`, `set_device`. Inside, `teamattack.TEAM` attacks the model seen through
`get_logits` on [0, 1] images; the last call's full `AttackResult` (distances, counters) is kept
in `atk.last_result`.

    import torchattacks
    from teamattack.compat.torchattacks import TEAM
    atk = torchattacks.MultiAttack([TEAM(model, norm="linf", eps=8/255), torchattacks.PGD(model)])

Budget: `eps=None` (default) is TEAM's minimum-norm attack (the smallest perturbation found,
unbounded); a float is TEAM's fixed-budget mode (perturbation within eps, on [0, 1] images).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks.team import TEAM as _TEAM
from ..baselines import _imports
from ..result import AttackResult
from . import team_kwargs

_imports.torchattacks()
from torchattacks.attack import Attack as _TAAttack  # noqa: E402


class _Logits(nn.Module):
    """The attacked network as torchattacks sees it: `atk.get_logits` (normalisation included)."""

    def __init__(self, atk: _TAAttack) -> None:
        super().__init__()
        self.net = atk.model  # registered: parameters and device visible
        object.__setattr__(self, "_atk", atk)
        self.training = False

    def train(self, mode: bool = True) -> _Logits:  # never switch the user's model from here
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._atk.get_logits(x)


class TEAM(_TAAttack):
    """TEAM in torchattacks' protocol.

    Args:
        model: the classifier (torchattacks' conventions: eval mode is set during the attack).
        norm: "l2" | "linf" | "l0".
        eps: None = minimum-norm attack; a float = fixed budget on [0, 1] images.
        mode: TEAM's mode (default: "min-norm" for L2 / Linf without eps, else "iterated").
        **team_options: any other `teamattack.TEAM` argument (objective, hessian, steps, ...).

    Targeted modes pass the target classes to TEAM. With `set_mode_targeted_by_label` the labels
    given are the targets, so the true classes are taken as the model's clean predictions;
    images already classified as their target are returned unchanged.
    """

    def __init__(self, model: nn.Module, norm: str = "l2", eps: float | None = None,
                 mode: str | None = None, **team_options: Any) -> None:
        super().__init__("TEAM", model)
        self.norm = norm
        self.eps = eps
        self.team_options = {**team_kwargs(norm, eps, mode), **team_options}
        _TEAM(nn.Identity().eval(), **self.team_options)  # fail now on bad options, not at the first batch
        self.supported_mode = ["default", "targeted"]
        self.last_result: AttackResult | None = None

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device).clamp(0.0, 1.0)  # round-off of inverse_normalize
        labels = labels.clone().detach().to(self.device)
        net = _Logits(self)
        if not self.targeted:
            result = _TEAM(net, targeted=False, **self.team_options)(images, labels)
            self.last_result = result
            return result.x_adv
        target = self.get_target_label(images, labels)
        if self.attack_mode == "targeted(label)":  # the labels were the targets
            with torch.no_grad():
                labels = net(images).argmax(1)
        todo = labels != target
        adv = images.clone()
        if bool(todo.any()):
            result = _TEAM(net, targeted=True, **self.team_options)(images[todo], labels[todo], target[todo])
            self.last_result = result
            adv[todo] = result.x_adv
        return adv
