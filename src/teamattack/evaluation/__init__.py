"""Robust accuracy the standard way (AutoAttack / RobustBench) and robustness curves.

    import teamattack as ta
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=50, seed=0)
    r = ta.evaluate(model, x, y, "linf", eps=[0.1, 0.2], attacks=["team", "apgd-ce"])
    r.clean, r.per_attack, r.worst          # accuracies over all 50 images
    c = ta.evaluation.robustness_curve(model, x, y, "linf")   # one TEAM min-norm run
    c.curve([0.0, 0.1, 0.2])

`evaluate` (evaluation/robust.py) runs attacks per eps (cascade: each on the images the earlier
ones left); `robustness_curve` (evaluation/curve.py) thresholds one minimum-norm run's per-image
distances; the results (evaluation/result.py) have to_dict and a Markdown table.
"""
from .attacks import EvalAttack, resolve
from .curve import robustness_curve
from .result import AttackRun, RobustAccuracy, RobustnessCurve
from .robust import evaluate

__all__ = ["AttackRun", "EvalAttack", "RobustAccuracy", "RobustnessCurve", "evaluate", "resolve",
           "robustness_curve"]
