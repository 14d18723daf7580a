"""Defenses: models trained to resist attacks (import ``teamattack.defenses``)."""
from .adversarial import AttackSpec, adversarial_train, robust_accuracy  # noqa: F401
from .distillation import Distilled, distill, soft_labels  # noqa: F401
