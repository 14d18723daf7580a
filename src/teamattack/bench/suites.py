"""Benchmark suites: named lists of attack specs run side by side on the same images.

A spec knows how to build its attack on a model (`factory(model, targeted, eps, seed)`), the norm
it is judged in, whether it is a minimum-norm attack or a fixed-budget one (then the harness gives
it an eps: the suite's, the dataset default for its norm, or the values of `--eps`), and whether
it is one of TEAM's variants (kept out of the `per-image-best` row of the peers).

TEAM is referenced lazily (imported inside its factory) so the harness works before it lands; a
spec whose attack cannot be built (library missing, mode unsupported) is skipped with the reason.

Suites (SPEC 8, 10):
  untargeted-l2  TEAM min-norm L2 vs C&W, DDN, FMN, ALMA, SuperDeepFool, DeepFool
  targeted-l2    TEAM min-norm L2 targeted vs C&W, DDN, FMN targeted (average / best / worst)
  linf           TEAM Linf (min-norm walk) vs FMN-Linf (min-norm)
                 and FGSM / BIM / PGD at a budget
  l0             TEAM L0 (iterated) vs JSMA (targeted only: run as best-over-targets) and FMN-L0
  paper-table4   targeted TEAM L0 / L2 / Linf (paper mode) vs JSMA / C&W / FGSM with seed 001's settings
  paper-table5   untargeted TEAM T1 / T4 (paper mode, L2) vs DeepFool / M-DI2-FGSM / PGD (paper settings)
  engine         the TEAM engine: each curvature source x mode (paper / iterated / min-norm), L2
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

# default budgets of fixed-budget attacks, per norm and dataset (pixel scale [0, 1])
DEFAULT_EPS: dict[str, dict[str, float]] = {
    "linf": {"mnist": 0.3, "digits": 0.3, "cifar10": 8 / 255},
    "l2": {"mnist": 2.0, "digits": 2.0, "cifar10": 0.5},
    "l0": {"mnist": 112, "digits": 16, "cifar10": 100},
}
MIN_NORM = "min-norm"
BUDGET = "budget"


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite.

    name:      unique within the suite; names the row and keys the resume sidecar.
    factory:   factory(model, targeted, eps, seed) -> Attack (eps None for minimum-norm attacks).
    norm:      the norm it is judged in (best/worst targets, per-image best, ratio to optimum).
    library:   where the attack comes from (teamattack, torchattacks, foolbox, adv_lib).
    kind:      "min-norm" or "budget" (fixed eps).
    eps:       budget of a fixed-budget attack: a number, None (the dataset default for its norm,
               DEFAULT_EPS) or "preset" (the attack's own default, e.g. the papers' settings).
    team:      one of TEAM's variants (not part of the peers' per-image best).
    untargeted_via_targets: the attack is targeted only; untargeted results are its best target.
    untargeted / targeted: the modes the attack supports.
    """

    name: str
    factory: Callable[..., Any]
    norm: str
    library: str = "teamattack"
    kind: str = MIN_NORM
    eps: float | str | None = None
    team: bool = False
    untargeted: bool = True
    targeted: bool = True
    untargeted_via_targets: bool = False
    note: str = ""
    settings: dict = field(default_factory=dict)

    def budget_for(self, dataset: str | None) -> float | None:
        """The eps this fixed-budget attack runs at without --eps (None: the attack's own default)."""
        if self.kind != BUDGET or self.eps == "preset":
            return None
        if self.eps is not None:
            return float(self.eps)
        table = DEFAULT_EPS.get(self.norm, {})
        return table.get((dataset or "").lower(), table.get("mnist"))

    def build(self, model: nn.Module, targeted: bool, eps: float | None = None, seed: int = 0):
        return self.factory(model, targeted, eps, seed)


class SuiteError(ValueError):
    pass


# ------------------------------------------------------------------------------------------
# spec builders
# ------------------------------------------------------------------------------------------
def team_spec(name: str, norm: str, note: str = "", **kwargs) -> AttackSpec:
    """A TEAM variant; `kwargs` go to teamattack.attacks.TEAM (imported when the attack is built)."""

    def factory(model, targeted, eps, seed):
        from ..attacks import TEAM  # lazy: the engine is written concurrently

        kw = dict(kwargs)
        if eps is not None:
            kw["eps"] = eps
        return TEAM(model, norm=norm, targeted=targeted, **kw)

    return AttackSpec(name=name, factory=factory, norm=norm, library="teamattack", team=True,
                      note=note, settings=dict(kwargs))


def _preset(name: str):
    try:
        from ..baselines import PRESETS
    except Exception:  # noqa: BLE001 - the adapter may be missing or broken; the spec is then skipped
        return None
    return PRESETS.get(name)


def peer_spec(preset: str, name: str | None = None, eps: float | str | None = None, norm: str | None = None,
              **overrides) -> AttackSpec:
    """A peer attack from teamattack.baselines (norm, library, budget kind and modes from PRESETS)."""
    p = _preset(preset)

    def factory(model, targeted, e, seed):
        from ..baselines import make

        kw = dict(overrides)
        if e is not None:
            kw["eps"] = e
        return make(preset, model, targeted=targeted, seed=seed, **kw)

    if p is None:  # unknown until the adapter exists: a best guess, the build will say what is wrong
        return AttackSpec(name=name or preset, factory=factory, norm=norm or "l2", library="peer",
                          kind=BUDGET if eps is not None else MIN_NORM, eps=eps, settings=dict(overrides))
    kind = BUDGET if p.budget == "fixed-eps" else MIN_NORM
    return AttackSpec(
        name=name or preset, factory=factory, norm=norm or p.norm, library=p.library, kind=kind,
        eps=eps if kind == BUDGET else None, untargeted=p.untargeted or p.targeted, targeted=p.targeted,
        untargeted_via_targets=p.targeted and not p.untargeted, note=p.source, settings=dict(overrides),
    )


def _first_preset(*names: str) -> str:
    for n in names:
        if _preset(n) is not None:
            return n
    return names[-1]


# ------------------------------------------------------------------------------------------
# the suites
# ------------------------------------------------------------------------------------------
def untargeted_l2() -> list[AttackSpec]:
    return [team_spec("team-l2", "l2", mode="min-norm")] + [
        peer_spec(n) for n in ("cw-9x1000", "ddn-100", "ddn-1000", "fmn-l2-100", "fmn-l2-1000",
                               "alma-1000", "sdf", "deepfool")
    ]


def targeted_l2() -> list[AttackSpec]:
    return [team_spec("team-l2", "l2", mode="min-norm")] + [
        peer_spec(n) for n in ("cw-9x1000", "ddn-1000", "fmn-l2-1000")
    ]


def linf() -> list[AttackSpec]:
    return [team_spec("team-linf", "linf", mode="min-norm"), peer_spec("fmn-linf-1000")] + [
        peer_spec(n, eps=None) for n in ("fgsm", "bim", "pgd")
    ]


def l0() -> list[AttackSpec]:
    return [team_spec("team-l0", "l0", mode="iterated"), peer_spec("jsma"), peer_spec("fmn-l0-1000")]


def paper_table4() -> list[AttackSpec]:
    """Seed 001 Table IV: targeted, paper settings (JSMA theta 1 until success; C&W L2; FGSM eps 0.01)."""
    return [
        team_spec("team-l0-paper", "l0", mode="paper"),
        peer_spec(_first_preset("jsma-paper", "jsma"), name="jsma-paper"),
        team_spec("team-l2-paper", "l2", mode="paper"),
        peer_spec(_first_preset("cw-paper", "cw-9x1000"), name="cw"),
        team_spec("team-linf-paper", "linf", mode="paper"),
        peer_spec(_first_preset("fgsm-paper", "fgsm"), name="fgsm-paper", eps="preset"),
    ]


def paper_table5() -> list[AttackSpec]:
    """Seed 001 Table V / seed 000: untargeted T1 / T4 (L2) vs DeepFool (3 steps), M-DI2-FGSM (eps 0.05), PGD (8/255)."""
    return [
        team_spec("team-T1-paper", "l2", mode="paper", objective="T1"),
        team_spec("team-T4-paper", "l2", mode="paper", objective="T4"),
        peer_spec(_first_preset("deepfool-paper", "deepfool"), name="deepfool-paper"),
        peer_spec(_first_preset("mdi2fgsm-paper", "mdi2fgsm"), name="mdi2fgsm-paper", eps="preset", norm="linf"),
        peer_spec("pgd", name="pgd-8/255", eps=8 / 255),
    ]


def engine_suite() -> list[AttackSpec]:
    """The TEAM engine benchmark: every curvature source in each mode, untargeted L2.

    What the second-order term buys is measured, not assumed (SPEC 12): the same mode and
    objective with hessian = none (first order), exact (low-rank on Table I nets, else dense),
    krylov (20 Lanczos HVPs) and ggn, plus the softmax objective T4 where curvature matters most.
    """
    specs = []
    for mode, objective in (("paper", "T1"), ("paper", "T4"), ("iterated", "T1"), ("iterated", "T4"),
                            ("min-norm", None)):
        for hessian in ("none", "exact", "krylov", "ggn"):
            if objective == "T1" and hessian == "ggn":
                continue  # the GGN of a logit objective is zero: identical to none
            if mode == "min-norm" and hessian == "ggn":
                continue  # the margin is linear in the logits: its GGN is zero, identical to none
            kw = {"mode": mode, "hessian": hessian}
            if objective:
                kw["objective"] = objective
            if mode == "min-norm":
                # one walk of 10 expansions: exact curvature costs p = 200 gradients per expansion
                # on MNIST Table I, so the default walk (80 expansions) would be 80x the first-order cost
                kw.update(steps=10, starts=1)
            name = f"team-{mode}-{objective or 'margin'}-{hessian}"
            specs.append(team_spec(name, "l2", **kw))
    return specs


SUITES: dict[str, tuple[Callable[[], list[AttackSpec]], bool]] = {
    # name: (spec list, targeted)
    "untargeted-l2": (untargeted_l2, False),
    "targeted-l2": (targeted_l2, True),
    "linf": (linf, False),
    "l0": (l0, False),
    "paper-table4": (paper_table4, True),
    "paper-table5": (paper_table5, False),
    "engine": (engine_suite, False),
}


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def with_settings(spec: AttackSpec, name: str) -> AttackSpec:
    """The TEAM spec `spec` with the settings of `name` ("base:key=value:key=value") applied."""
    kwargs = dict(spec.settings)
    for item in name.split(":")[1:]:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise SuiteError(f"{name!r}: settings are key=value pairs separated by ':'")
        kwargs[key] = _value(text)
    from ..attacks import TEAM

    try:  # fail now, not after the other attacks have run
        TEAM(nn.Linear(1, 2).eval(), norm=spec.norm, **kwargs)
    except (TypeError, ValueError) as err:
        raise SuiteError(f"{name!r}: {err}") from None
    return team_spec(name, spec.norm, note=spec.note, **kwargs)


def get_suite(name: str, attacks: list[str] | None = None) -> tuple[list[AttackSpec], bool]:
    """The specs of suite `name` (optionally only `attacks`, in that order) and whether it is targeted.

    Names in `attacks` that are not in the suite but are peer presets are added as such. A TEAM
    name with settings, `team-l2:starts=9:steps=300`, is that suite entry with those TEAM keyword
    arguments changed (`with_settings`).
    """
    try:
        make_specs, targeted = SUITES[name]
    except KeyError:
        raise SuiteError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}") from None
    specs = make_specs()
    if attacks:
        by = {s.name: s for s in specs}
        out = []
        for a in attacks:
            base = a.split(":")[0]
            if a in by:
                out.append(by[a])
            elif ":" in a and base in by and by[base].team:
                out.append(with_settings(by[base], a))
            elif _preset(a) is not None:
                out.append(peer_spec(a))
            else:
                raise SuiteError(f"attack {a!r} is neither in suite {name} ({', '.join(by)}) nor a peer preset")
        specs = out
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SuiteError(f"duplicate attack names in suite {name}: {names}")
    return specs, targeted
