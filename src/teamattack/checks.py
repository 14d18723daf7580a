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
