"""Warnings about models an attack may silently fail on (in the spirit of AutoAttack's checks).

The warning classes are defined here so that callers and tests can filter or expect them;
`Attack.__call__` runs `warn_about_model` once per call, after the input checks
(teamattack.validation), on the clean batch: the logits it already has, one more forward pass and
one gradient of at most `SAMPLE` examples, on the caller's model (not in the attack's counters),
with torch's random state restored afterwards (docs/reliability.md).
"""
from __future__ import annotations

import warnings

import torch

SAMPLE = 128  # examples the randomness and gradient checks look at


class ModelWarning(UserWarning):
    """Base class of the warnings teamattack emits about a model it attacks."""


class ZeroGradientWarning(ModelWarning):
    """The input gradient of the decision margin is zero (or non-finite) on many examples: the
    model masks its gradients (a step function, a quantisation, saturated units), so gradient
    attacks cannot move those examples and their failure says nothing about robustness."""


class SaturationWarning(ZeroGradientWarning):
    """The objective's input gradient is zero or non-finite on many examples (a saturated
    softmax, e.g. a distilled model at high temperature): use a logit objective or margin."""


class ProbabilityOutputWarning(ModelWarning):
    """The model seems to output probabilities or log-probabilities instead of logits."""


class RandomisedModelWarning(ModelWarning):
    """Two forward passes of the same input differ: the model is randomised."""



def dead_gradients(g: torch.Tensor) -> torch.Tensor:
    """Per example: the input gradient is all zero or has a non-finite entry (it cannot move it)."""
    flat = g.reshape(len(g), -1)
    return (flat.abs().amax(1) == 0) | ~torch.isfinite(flat).all(1)

def warn_if_probabilities(logits: torch.Tensor) -> None:
    """ProbabilityOutputWarning when every row is a probability vector (entries in [0, 1] summing
    to 1) or a log-probability vector (entries <= 0 with logsumexp 0)."""
    if logits.numel() == 0:
        return
    z = logits.detach().double()
    probs = bool(((z >= 0) & (z <= 1)).all()) and bool(((z.sum(1) - 1).abs() < 1e-3).all())
    logprobs = bool((z <= 1e-6).all()) and bool((torch.logsumexp(z, 1).abs() < 1e-3).all())
    if probs or logprobs:
        what = "probabilities (a softmax)" if probs else "log-probabilities (a log-softmax)"
        warnings.warn(
            f"the model's outputs look like {what}, not logits: attacks and margins expect logits "
            "(a softmax output saturates and hides the gradient); remove the final "
            f"{'softmax' if probs else 'log-softmax'} layer for the attack",
            ProbabilityOutputWarning, stacklevel=5)


def warn_if_randomised(model, x: torch.Tensor, logits: torch.Tensor) -> None:
    """RandomisedModelWarning when a second forward pass of x differs from `logits` (its first
    pass) by more than float round-off."""
    if len(x) == 0:
        return
    with torch.no_grad():
        again = model(x)
    if not torch.is_tensor(again) or again.shape != logits.shape:
        return
    gap = float((again.detach().to(logits.dtype) - logits).abs().max())
    # batch sizes other than the first pass's may round differently: a tolerance of ~1000 ulps
    tol = 1000 * torch.finfo(logits.dtype).eps * (1.0 + float(logits.abs().max()))
    if gap > tol:
        warnings.warn(
            f"two forward passes of the same input differ (by up to {gap:.3g} in the logits): the model "
            "is randomised (noise, dropout at test time, random transforms). Attack results on it are "
            "random too; evaluate it with an expectation over its randomness (EOT) and several runs",
            RandomisedModelWarning, stacklevel=5)


def warn_if_zero_gradients(model, x: torch.Tensor, goal, share: float = 0.1) -> None:
    """ZeroGradientWarning when the input gradient of the decision margin (`Goal.margin`) is zero
    or non-finite on at least `share` of the examples (AutoAttack's zero-gradient check)."""
    if len(x) == 0:
        return
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        margin = goal.margin(model(xg))
        if not margin.requires_grad:
            dead = torch.ones(len(x), dtype=torch.bool)
        else:
            (g,) = torch.autograd.grad(margin.sum(), xg, allow_unused=True)
            if g is None:
                dead = torch.ones(len(x), dtype=torch.bool)
            else:
                dead = dead_gradients(g)
    if float(dead.float().mean()) >= share:
        warnings.warn(
            f"the input gradient of the decision margin is zero or non-finite on {int(dead.sum())} of "
            f"{len(x)} examples checked: the model masks its gradients, so gradient-based attacks cannot "
            "move them and their failure there says nothing about robustness",
            ZeroGradientWarning, stacklevel=5)


def warn_about_model(model, x: torch.Tensor, logits: torch.Tensor, goal, objective=None) -> None:
    """All the checks of one attack call on the clean batch (x, its checked logits, its Goal):
    probabilities, randomness, zero margin gradients, a saturated softmax objective. Costs one
    forward pass and at most two gradients of at most `SAMPLE` examples; torch's random state is
    the same afterwards."""
    if len(x) == 0:
        return
    k = min(len(x), SAMPLE)
    devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        warn_if_probabilities(logits)
        warn_if_randomised(model, x[:k], logits[:k])
        warn_if_zero_gradients(model, x[:k], goal[:k])
        warn_if_saturated(model, objective, x[:k], goal.y[:k], None if goal.target is None else goal.target[:k])


def warn_if_saturated(model, objective, x, y, target, share: float = 0.5) -> None:
    """SaturationWarning when a softmax objective's input gradient at x is all-zero or non-finite
    on at least `share` of the examples (float32 underflow of a saturated softmax, e.g. a
    defensively distilled model at high temperature). Logit objectives are not checked: their
    gradients do not underflow. One extra gradient of the clean batch, not in the attack's counters.
    """
    if objective is None or not getattr(objective, "softmax", False) or len(x) == 0:
        return
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        value = objective(model(xg), y, target)
        (g,) = torch.autograd.grad(value.sum(), xg)
    dead = dead_gradients(g)
    if float(dead.float().mean()) >= share:
        warnings.warn(
            f"the softmax of objective {objective.name} is saturated: its input gradient is zero or "
            f"non-finite on {int(dead.sum())} of {len(x)} examples, so gradient steps cannot move them. "
            "Use a logit objective (objective='T1', 'T2', 'T3' or 'margin') or TEAM's default "
            "minimum-norm walk, which works on logits.",
            SaturationWarning,
            stacklevel=5,
        )
