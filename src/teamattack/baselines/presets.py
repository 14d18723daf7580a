"""The registry of peer attacks: name -> library, function, norm, modes, budget kind, defaults.

Keyword names in `kwargs` are the library's own (so a reader can check them against its docs);
`make(name, model, **overrides)` accepts the same names, plus `seed` and the alias `steps`.
See docs/peers.md for where each preset comes from and how it differs from the papers.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..kinds import AttackKind

MIN_NORM = "min-norm"
FIXED_EPS = "fixed-eps"


@dataclass(frozen=True)
class Preset:
    """One peer attack with its standard settings.

    name:        registry key (`make(name, ...)`).
    library:     "torchattacks", "foolbox" or "adv_lib" (goes into the attack's `library`).
    function:    the library entry point called, e.g. "foolbox.attacks.L2CarliniWagnerAttack".
    algorithm:   the adapter routine that drives it.
    norm:        "l0", "l2" or "linf": the norm the attack minimises or is bounded in.
    untargeted / targeted: the modes the library supports (make raises for the other).
    budget:      "min-norm" (returns the smallest adversarial it found, x where it failed) or
                 "fixed-eps" (stays within `eps`; returns its last iterate, adversarial or not).
    kwargs:      default keyword arguments, in the library's own names.
    source:      where the defaults come from.
    """

    name: str
    library: str
    function: str
    algorithm: str
    norm: str
    untargeted: bool
    targeted: bool
    budget: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def kind(self) -> AttackKind:
        """The budget kind as the type shared with attacks and bench suites."""
        return AttackKind.parse(self.budget)

    def describe(self) -> str:
        modes = "/".join(m for m, ok in (("untargeted", self.untargeted), ("targeted", self.targeted)) if ok)
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}: {self.function}({args}) [{self.norm}, {self.budget}, {modes}]"


def _p(name, library, function, algorithm, norm, untargeted, targeted, budget, source="", /, **kwargs) -> Preset:
    return Preset(name, library, function, algorithm, norm, untargeted, targeted, budget,
                  MappingProxyType(dict(kwargs)), source)


_TA, _FB, _AL = "torchattacks", "foolbox", "adv_lib"

_LIST = [
    # ---- fixed budget (torchattacks) -------------------------------------------------------------
    _p("fgsm", _TA, "torchattacks.FGSM", "ta:FGSM", "linf", True, True, FIXED_EPS,
       "Goodfellow et al. 2015; eps 0.3 = the usual MNIST L-inf budget (Madry et al.)", eps=0.3),
    _p("fgsm-paper", _TA, "torchattacks.FGSM", "ta:FGSM", "linf", True, True, FIXED_EPS,
       "seed 001 Sec. V: eps = 0.01, one step", eps=0.01),
    _p("bim", _TA, "torchattacks.BIM", "ta:BIM", "linf", True, True, FIXED_EPS,
       "Kurakin et al. 2017: alpha 1/255, steps=0 -> min(255 eps + 4, 1.25 * 255 eps); clipped to the "
       "eps-ball and [0,1] every step", eps=0.3, alpha=1 / 255, steps=0),
    _p("pgd", _TA, "torchattacks.PGD", "ta:PGD", "linf", True, True, FIXED_EPS,
       "Madry et al. 2018 MNIST: eps 0.3, step 0.01, 40 steps, uniform random start",
       eps=0.3, alpha=0.01, steps=40, random_start=True),
    _p("pgd-l2", _TA, "torchattacks.PGDL2", "ta:PGDL2", "l2", True, True, FIXED_EPS,
       "L2 PGD, eps 2.0 (a common MNIST L2 budget), step 0.1, 40 steps, random start in the ball",
       eps=2.0, alpha=0.1, steps=40, random_start=True),
    _p("mdi2fgsm", _TA, "torchattacks.DIFGSM", "ta:DIFGSM", "linf", True, True, FIXED_EPS,
       "Xie et al. 2019 M-DI2-FGSM = DI2-FGSM with momentum decay 1.0, diversity prob 0.5; "
       "alpha=None -> eps/steps; needs NCHW images", eps=0.3, alpha=None, steps=10, decay=1.0,
       resize_rate=0.9, diversity_prob=0.5, random_start=False),
    _p("mdi2fgsm-paper", _TA, "torchattacks.DIFGSM", "ta:DIFGSM", "linf", True, True, FIXED_EPS,
       "seed 001 Sec. V: eps 0.05, decay 1", eps=0.05, alpha=None, steps=10, decay=1.0,
       resize_rate=0.9, diversity_prob=0.5, random_start=False),
    # ---- AutoAttack and its parts (torchattacks; robust accuracy, teamattack.evaluate) ----------
    _p("autoattack", _TA, "torchattacks.AutoAttack", "ta:AutoAttack", "linf", True, False, FIXED_EPS,
       "Croce & Hein 2020, torchattacks' standard version as shipped: APGD-CE, APGD-T, FAB-T (each "
       "at torchattacks' default 10 steps, not the paper's 100), Square 5000 queries, each on the "
       "images the earlier ones left", norm="Linf", eps=0.3, version="standard", n_classes=10, seed=0),
    _p("autoattack-l2", _TA, "torchattacks.AutoAttack", "ta:AutoAttack", "l2", True, False, FIXED_EPS,
       "as autoattack, L2 (eps 2.0)", norm="L2", eps=2.0, version="standard", n_classes=10, seed=0),
    _p("apgd-ce", _TA, "torchattacks.APGD", "ta:APGD", "linf", True, False, FIXED_EPS,
       "APGD-CE with AutoAttack's budget (Croce & Hein 2020): 100 steps, 1 restart, rho 0.75",
       norm="Linf", eps=0.3, steps=100, n_restarts=1, loss="ce", seed=0),
    _p("apgd-ce-l2", _TA, "torchattacks.APGD", "ta:APGD", "l2", True, False, FIXED_EPS,
       "as apgd-ce, L2 (eps 2.0)", norm="L2", eps=2.0, steps=100, n_restarts=1, loss="ce", seed=0),
    _p("apgd-t", _TA, "torchattacks.APGDT", "ta:APGDT", "linf", True, False, FIXED_EPS,
       "APGD-T (DLR-targeted) with AutoAttack's budget: 9 target classes x 100 steps",
       norm="Linf", eps=0.3, steps=100, n_restarts=1, n_classes=10, seed=0),
    _p("apgd-t-l2", _TA, "torchattacks.APGDT", "ta:APGDT", "l2", True, False, FIXED_EPS,
       "as apgd-t, L2 (eps 2.0)", norm="L2", eps=2.0, steps=100, n_restarts=1, n_classes=10, seed=0),
    _p("fab-t", _TA, "torchattacks.FAB", "ta:FAB", "linf", True, False, FIXED_EPS,
       "FAB-T with AutoAttack's budget: 9 target classes x 100 steps; counts only within eps",
       norm="Linf", eps=0.3, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, seed=0),
    _p("fab-t-l2", _TA, "torchattacks.FAB", "ta:FAB", "l2", True, False, FIXED_EPS,
       "as fab-t, L2 (eps 2.0)", norm="L2", eps=2.0, steps=100, n_restarts=1, multi_targeted=True,
       n_classes=10, seed=0),
    # ---- JSMA (torchattacks, targeted only) ---------------------------------------------------
    _p("jsma", _TA, "torchattacks.JSMA", "ta:JSMA", "l0", False, True, MIN_NORM,
       "Papernot et al. 2016 MNIST: theta +1, at most gamma = 14.5% of the features", theta=1.0, gamma=0.145),
    _p("jsma-paper", _TA, "torchattacks.JSMA", "ta:JSMA", "l0", False, True, MIN_NORM,
       "seed 001 Sec. V: theta 1, no limit on changed pixels (stop at success)", theta=1.0, gamma=1.0),
    # ---- DeepFool / C&W (foolbox) -------------------------------------------------------------
    _p("deepfool", _FB, "foolbox.attacks.L2DeepFoolAttack", "fb:L2DeepFoolAttack", "l2", True, False,
       MIN_NORM, "foolbox defaults (Moosavi-Dezfooli et al. 2016): 50 steps, overshoot 0.02",
       steps=50, candidates=10, overshoot=0.02, loss="logits"),
    _p("deepfool-paper", _FB, "foolbox.attacks.L2DeepFoolAttack", "fb:L2DeepFoolAttack", "l2", True, False,
       MIN_NORM, "seed 001 Sec. V: 'epochs = 3'", steps=3, candidates=10, overshoot=0.02, loss="logits"),
    _p("cw-9x1000", _FB, "foolbox.attacks.L2CarliniWagnerAttack", "fb:L2CarliniWagnerAttack", "l2", True, True,
       MIN_NORM, "Carlini & Wagner 2017: 9 binary-search steps x 1000 Adam steps, lr 0.01, c0 1e-3, kappa 0",
       binary_search_steps=9, steps=1000, stepsize=0.01, confidence=0.0, initial_const=0.001, abort_early=True),
    _p("cw-9x100", _FB, "foolbox.attacks.L2CarliniWagnerAttack", "fb:L2CarliniWagnerAttack", "l2", True, True,
       MIN_NORM, "cheap C&W: 9 x 100 steps", binary_search_steps=9, steps=100, stepsize=0.01,
       confidence=0.0, initial_const=0.001, abort_early=True),
    # ---- the papers' weak C&W (experiment e2-table4) -------------------------------------------
    _p("cw-paper", _FB, "foolbox.attacks.L2CarliniWagnerAttack", "fb:L2CarliniWagnerAttack", "l2", True, True,
       MIN_NORM, "seed 001 Sec. V: C&W L2 with the constant C = 1.0 (one constant, no binary search); "
       "1000 Adam steps at lr 0.01 (not given by the paper)", binary_search_steps=1, steps=1000, stepsize=0.01,
       confidence=0.0, initial_const=1.0, abort_early=True),
    # ---- modern minimum-norm attacks (adv-lib) ------------------------------------------------
    _p("ddn-100", _AL, "adv_lib.attacks.ddn", "al:ddn", "l2", True, True, MIN_NORM,
       "Rony et al. 2019 (adv-lib benchmark DDN_100)", steps=100, γ=0.05, init_norm=1.0, levels=256),
    _p("ddn-1000", _AL, "adv_lib.attacks.ddn", "al:ddn", "l2", True, True, MIN_NORM,
       "Rony et al. 2019 (adv-lib benchmark DDN_1000)", steps=1000, γ=0.05, init_norm=1.0, levels=256),
]
for _norm, _lp in (("l2", 2), ("linf", float("inf")), ("l0", 0)):
    for _steps in (100, 1000):
        _LIST.append(_p(f"fmn-{_norm}-{_steps}", _AL, "adv_lib.attacks.fmn", "al:fmn", _norm, True, True, MIN_NORM,
                        "Pintor et al. 2021; adv-lib defaults (alpha 1 -> 0.01, gamma 0.05 -> 0.001, cosine)",
                        norm=_lp, steps=_steps, α_init=1.0, γ_init=0.05, γ_final=0.001))
_LIST += [
    _p("alma-100", _AL, "adv_lib.attacks.alma", "al:alma", "l2", True, True, MIN_NORM,
       "Rony et al. 2021 (adv-lib benchmark ALMA_l2_100)", penalty="P2", distance="l2",
       num_steps=100, init_lr_distance=0.1, α=0.5),
    _p("alma-1000", _AL, "adv_lib.attacks.alma", "al:alma", "l2", True, True, MIN_NORM,
       "Rony et al. 2021 (adv-lib benchmark ALMA_l2_1000)", penalty="P2", distance="l2",
       num_steps=1000, init_lr_distance=0.1, α=0.9),
    _p("sdf", _AL, "adv_lib.attacks.sdf", "al:sdf", "l2", True, False, MIN_NORM,
       "Abdollahpoorrostam et al. 2023 SuperDeepFool, adv-lib defaults",
       steps=100, df_steps=100, overshoot=0.02, search_iter=10),
]

PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _LIST})


@dataclass(frozen=True)
class Bound:
    """The admissible values of a numeric option (`validation.check_number`'s keywords); `none`:
    None is accepted too (the library's own default then applies)."""

    low: float | None = 0.0
    strict: bool = False
    high: float | None = None
    integer: bool = False
    none: bool = False


_POS, _NONNEG, _COUNT, _FRACTION = Bound(strict=True), Bound(), Bound(low=1, integer=True), Bound(strict=True, high=1.0)

# numeric options of the peers (library names), checked where `make` receives them
BOUNDS: Mapping[str, Bound] = MappingProxyType({
    "eps": _POS, "alpha": Bound(strict=True, none=True), "steps": _COUNT, "eps_for_division": _POS,
    "decay": _NONNEG, "resize_rate": _POS, "diversity_prob": Bound(high=1.0), "theta": Bound(low=None),
    "gamma": _FRACTION, "candidates": Bound(low=2, integer=True, none=True), "overshoot": _NONNEG,
    "binary_search_steps": _COUNT, "stepsize": _POS, "confidence": _NONNEG, "initial_const": _POS,
    "γ": _POS, "init_norm": _POS, "levels": Bound(low=2, integer=True, none=True),
    "α_init": _POS, "α_final": Bound(strict=True, none=True), "γ_init": _POS, "γ_final": _POS,
    "num_steps": _COUNT, "lr_init": _POS, "lr_reduction": _POS, "init_lr_distance": Bound(strict=True, none=True),
    "μ_init": _POS, "ρ_init": _POS, "check_steps": _COUNT, "τ": _FRACTION, "α": _FRACTION,
    "α_rms": Bound(strict=True, high=1.0, none=True), "momentum": Bound(high=1.0, none=True),
    "logit_tolerance": _NONNEG, "df_steps": _COUNT, "search_iter": _COUNT,
})
