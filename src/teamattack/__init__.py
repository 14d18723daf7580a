"""teamattack: TEAM, a second-order adversarial attack, and its peers side by side.

    import teamattack as ta
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=100)
    result = ta.TEAM(model, norm="l2")(x, y)
    result.x_adv, result.success, result.l2
"""
from . import data, metrics, objectives, zoo
from .attacks import CWL2, FGSM, IFGSM, TEAM, Attack, GaussNewton
from .result import AttackResult, Counters
from .validation import InputError

__all__ = [
           "CWL2",
           "FGSM",
           "IFGSM",
           "TEAM",
           "Attack",
           "AttackResult",
           "Counters",
           "GaussNewton",
           "InputError",
           "data",
           "metrics",
           "objectives",
           "zoo",
]
__version__ = "0.1.0"
