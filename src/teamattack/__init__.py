"""teamattack: TEAM, a second-order adversarial attack, and its peers side by side.

    import teamattack as ta
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=100)
    result = ta.TEAM(model, norm="l2")(x, y)
    result.x_adv, result.success, result.l2
"""
from . import curvature, data, metrics, objectives, paper, subproblems, zoo
from .attacks import TEAM, Attack, GaussNewton
from .goal import Goal
from .result import AttackResult, Counters
from .validation import InputError
from .evaluation import evaluate

__all__ = [
           "TEAM",
           "Attack",
           "AttackResult",
           "Counters",
           "GaussNewton",
           "Goal",
           "InputError",
           "curvature",
           "data",
           "evaluate",
           "metrics",
           "objectives",
           "paper",
           "subproblems",
           "zoo",
]
__version__ = "0.1.0"
