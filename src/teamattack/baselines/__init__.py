"""Peer attacks (torchattacks, foolbox, adv-lib) behind the teamattack `Attack` protocol.

    from teamattack import baselines
    attack = baselines.make("ddn-100", model)              # untargeted, preset defaults
    result = attack(x, y)                                  # AttackResult, like TEAM's
    attack = baselines.make("pgd", model, eps=0.1, targeted=True)
    result = attack(x, y, target=t)
    baselines.PRESETS["cw-9x1000"].describe()

The libraries are optional (`./run.sh peers`); `make` raises `PeerUnavailable` (an ImportError)
when the one a preset needs is missing. docs/peers.md lists every preset and its caveats.
"""
from ._imports import PeerUnavailable, available
from .adapter import ALIASES, PeerAttack, make, names
from .presets import FIXED_EPS, MIN_NORM, PRESETS, Preset

__all__ = ["ALIASES", "FIXED_EPS", "MIN_NORM", "PRESETS", "PeerAttack", "PeerUnavailable", "Preset",
           "available", "make", "names"]
