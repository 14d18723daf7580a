"""Defenses: models trained to resist attacks (import ``teamattack.defenses``)."""
from .distillation import Distilled, distill, soft_labels  # noqa: F401
