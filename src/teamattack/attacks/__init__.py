"""Attacks: each is a callable returning an AttackResult."""
from .base import Attack
from .fgsm import FGSM, IFGSM
from .gauss_newton import GaussNewton
from .team import TEAM

__all__ = ["Attack", "FGSM", "GaussNewton", "IFGSM", "TEAM"]
