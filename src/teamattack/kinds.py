"""What kind of attack something is: minimum-norm or fixed-budget (one type for attacks, peer presets, suites)."""
from __future__ import annotations

from enum import StrEnum


class AttackKind(StrEnum):
    """MIN_NORM: returns the least perturbation it found (x itself where it failed); judged by distance.
    BUDGET: stays inside a fixed eps-ball; judged by success at that eps (robust accuracy).

    A StrEnum: its members compare equal to, and serialise as, "min-norm" and "budget".
    """

    MIN_NORM = "min-norm"
    BUDGET = "budget"

    @classmethod
    def parse(cls, text: str | AttackKind) -> AttackKind:
        """The kind named `text`; "fixed-eps" (the peer presets' word) means BUDGET."""
        if isinstance(text, cls):
            return text
        if text == "fixed-eps":
            return cls.BUDGET
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown attack kind {text!r}; choose 'min-norm' or 'budget'") from None
