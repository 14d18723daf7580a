"""Warnings about models an attack may silently fail on (in the spirit of AutoAttack's checks).

The warning classes are defined here so that callers and tests can filter or expect them;
`Attack.__call__` runs the checks (see teamattack.attacks.base).
"""
from __future__ import annotations


class ModelWarning(UserWarning):
    """Base class of the warnings teamattack emits about a model it attacks."""


class SaturationWarning(ModelWarning):
    """The objective's input gradient is zero or non-finite on many examples (a saturated
    softmax, e.g. a distilled model at high temperature): use a logit objective or margin."""


class ProbabilityOutputWarning(ModelWarning):
    """The model seems to output probabilities or log-probabilities instead of logits."""


class RandomisedModelWarning(ModelWarning):
    """Two forward passes of the same input differ: the model is randomised."""


def warn_if_saturated(model, objective, x, y, target, share: float = 0.5) -> None:
    """SaturationWarning when a softmax objective's input gradient at x is all-zero or non-finite
    on at least `share` of the examples (float32 underflow of a saturated softmax, e.g. a
    defensively distilled model at high temperature). Logit objectives are not checked: their
    gradients do not underflow. One extra gradient of the clean batch, not in the attack's counters.
    """
    import warnings

    import torch

    if objective is None or not getattr(objective, "softmax", False) or len(x) == 0:
        return
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        value = objective(model(xg), y, target)
        (g,) = torch.autograd.grad(value.sum(), xg)
    flat = g.reshape(len(x), -1)
    dead = (flat.abs().amax(1) == 0) | ~torch.isfinite(flat).all(1)
    if float(dead.float().mean()) >= share:
        warnings.warn(
            f"the softmax of objective {objective.name} is saturated: its input gradient is zero or "
            f"non-finite on {int(dead.sum())} of {len(x)} examples, so gradient steps cannot move them. "
            "Use a logit objective (objective='T1', 'T2', 'T3' or 'margin') or TEAM's default "
            "minimum-norm walk, which works on logits.",
            SaturationWarning,
            stacklevel=3,
        )
