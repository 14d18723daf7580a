"""TEAM as a foolbox 3 attack: `raw, clipped, success = TEAM()(fmodel, x, criterion, epsilons=[...])`.

A subclass of foolbox's `MinimizationAttack`, so foolbox's own `__call__` does the rest: the
bounds check of the inputs, one minimum-norm run, then for every epsilon the perturbation clipped
to that budget (`clipped`) and success re-checked by the criterion (`success[k]`, shape (K, N)).
It takes foolbox models (`fb.PyTorchModel(net, bounds=(lo, hi), preprocessing=dict(mean=...,
std=..., axis=-3))`): TEAM attacks the unit box mapped onto `fmodel.bounds`, through `fmodel`
itself (so foolbox's preprocessing applies), and distances and epsilons are on the bounds' scale,
as everywhere in foolbox. Criteria: `Misclassification(labels)` and
`TargetedMisclassification(target_classes)` (the true classes are then the model's clean
predictions; images already classified as their target are returned unchanged).

    import foolbox as fb
    from teamattack.compat.foolbox import TEAM
    fmodel = fb.PyTorchModel(net, bounds=(0, 1))
    raw, clipped, success = TEAM(norm="l2")(fmodel, x, fb.criteria.Misclassification(y),
                                             epsilons=[0.5, 1.0, 2.0])
"""
from __future__ import annotations

from typing import Any

import torch

from ..attacks.team import TEAM as _TEAM
from ..baselines import _imports
from ..preprocessing import InputSpace, UnitModel
from ..result import AttackResult
from ..validation import InputError
from . import team_kwargs

_fb = _imports.foolbox()
import eagerpy as _ep  # noqa: E402  (installed with foolbox)

_DISTANCES = {"l2": _fb.distances.l2, "linf": _fb.distances.linf, "l0": _fb.distances.l0}


class TEAM(_fb.attacks.base.MinimizationAttack):
    """TEAM's minimum-norm attack behind foolbox's protocol.

    Args:
        norm: "l2" | "linf" | "l0" (foolbox's `distance` follows it).
        mode: TEAM's mode (default "min-norm" for L2 / Linf, "iterated" for L0).
        **team_options: any other `teamattack.TEAM` argument (objective, hessian, steps, ...).

    The last run's `AttackResult` (TEAM on the unit box, for the images it attacked) is kept in
    `attack.last_result`.
    """

    def __init__(self, norm: str = "l2", mode: str | None = None, **team_options: Any) -> None:
        if norm not in _DISTANCES:
            raise ValueError(f"norm must be one of {sorted(_DISTANCES)}, got {norm!r}")
        if "eps" in team_options:
            raise TypeError("foolbox gives the budgets at call time: pass epsilons=[...] to the call")
        self.norm = norm
        self.team_options = {**team_kwargs(norm, None, mode), **team_options}
        _TEAM(torch.nn.Identity().eval(), **self.team_options)  # fail now on bad options
        self.last_result: AttackResult | None = None

    @property
    def distance(self):  # foolbox's Distance for the norm
        return _DISTANCES[self.norm]

    def run(self, model: Any, inputs: Any, criterion: Any, *, early_stop: float | None = None,
            **kwargs: Any) -> Any:
        x, restore_type = _ep.astensor_(inputs)
        if not isinstance(x, _ep.PyTorchTensor):
            raise InputError("teamattack.compat.foolbox.TEAM needs PyTorch tensors (fb.PyTorchModel)")
        xt = x.raw
        criterion = _fb.attacks.base.get_criterion(criterion)
        space = InputSpace(bounds=tuple(model.bounds))
        net = UnitModel(lambda z: model(z), space)  # fmodel applies its own preprocessing
        u = space.to_unit(xt).clamp(0.0, 1.0)
        if isinstance(criterion, _fb.criteria.Misclassification):
            labels = _ep.astensor(criterion.labels).raw.to(xt.device)
            result = _TEAM(net, targeted=False, **self.team_options)(u, labels)
            adv_u, todo = result.x_adv, None
        elif isinstance(criterion, _fb.criteria.TargetedMisclassification):
            target = _ep.astensor(criterion.target_classes).raw.to(xt.device)
            with torch.no_grad():
                labels = net(u).argmax(1)
            todo = labels != target
            adv_u = u.clone()
            result = None
            if bool(todo.any()):
                result = _TEAM(net, targeted=True, **self.team_options)(u[todo], labels[todo], target[todo])
                adv_u[todo] = result.x_adv
        else:
            raise InputError(f"criterion {type(criterion).__name__} is not supported: use "
                             "Misclassification or TargetedMisclassification")
        self.last_result = result
        adv = xt + (adv_u - u) * space.scale  # untouched entries stay exactly x
        return restore_type(_ep.astensor(adv.clamp(*space.bounds).detach()))
