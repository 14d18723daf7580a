"""Attacks: each is a callable returning an AttackResult."""
from .base import Attack
from .cw import CWL2
from .fgsm import FGSM, IFGSM
from .gauss_newton import GaussNewton
from .team import TEAM

__all__ = ["CWL2", "FGSM", "IFGSM", "TEAM", "Attack", "GaussNewton"]
