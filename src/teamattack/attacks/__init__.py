"""Attacks: each is a callable returning an AttackResult (the math paper's FGSM family and CW-L2:
teamattack.paper)."""
from .base import Attack
from .gauss_newton import GaussNewton
from .team import TEAM

__all__ = ["TEAM", "Attack", "GaussNewton"]
