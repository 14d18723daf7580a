"""Attacks: each is a callable returning an AttackResult."""
from .base import Attack
from .fgsm import FGSM, IFGSM

__all__ = ["Attack", "FGSM", "IFGSM"]
