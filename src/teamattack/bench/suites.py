"""Benchmark suites: named lists of attack specs run side by side on the same images.

A spec knows how to build its attack on a model (`factory(model, targeted, eps, seed)`), the norm
it is judged in, whether it is a minimum-norm attack or a fixed-budget one (then the harness gives
it an eps: the suite's, the dataset default for its norm, or the values of `--eps`), and whether
it is one of TEAM's variants (kept out of the `per-image-best` row of the peers).

A spec whose attack cannot be built (peer library missing, mode unsupported) is skipped by the
harness with the reason. Suites are registered in `SUITES` (name -> `Suite`); a module that adds
one calls `register(Suite(...))`.

Suites (SPEC 8, 10):
  untargeted-l2  TEAM min-norm L2 vs C&W, DDN, FMN, ALMA, SuperDeepFool, DeepFool
  targeted-l2    TEAM min-norm L2 targeted vs C&W, DDN, FMN targeted (average / best / worst)
  linf           TEAM Linf (min-norm walk) vs FMN-Linf (min-norm)
                 and FGSM / BIM / PGD at a budget
  l0             TEAM L0 (iterated) vs JSMA (targeted only: run as best-over-targets) and FMN-L0
  paper-table4   targeted TEAM L0 / L2 / Linf (paper mode) vs JSMA / C&W / FGSM with seed 001's settings
  paper-table5   untargeted TEAM T1 / T4 (paper mode, L2) vs DeepFool / M-DI2-FGSM / PGD (paper settings)
  engine         the TEAM engine: each curvature source x mode (paper / iterated / min-norm), L2
  speed          TEAM min-norm L2 / Linf vs DDN-100 (foolbox, adv_lib), FMN-100: wall time against
                 TEAM's gradient floor at 1 and 2 threads (teamattack.bench.speed)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..attacks import TEAM
from ..baselines.presets import PRESETS
from ..kinds import AttackKind

# default budgets of fixed-budget attacks, per norm and dataset (pixel scale [0, 1])
DEFAULT_EPS: dict[str, dict[str, float]] = {
    "linf": {"mnist": 0.3, "digits": 0.3, "cifar10": 8 / 255},
    "l2": {"mnist": 2.0, "digits": 2.0, "cifar10": 0.5},
    "l0": {"mnist": 112, "digits": 16, "cifar10": 100},
}
MIN_NORM = AttackKind.MIN_NORM
BUDGET = AttackKind.BUDGET


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite.

    name:      unique within the suite; names the row and keys the resume sidecar.
    factory:   factory(model, targeted, eps, seed) -> Attack (eps None for minimum-norm attacks).
    norm:      the norm it is judged in (best/worst targets, per-image best, ratio to optimum).
    library:   where the attack comes from (teamattack, torchattacks, foolbox, adv_lib).
    kind:      AttackKind.MIN_NORM or AttackKind.BUDGET (fixed eps).
    eps:       budget of a fixed-budget attack: a number, None (the dataset default for its norm,
               DEFAULT_EPS) or "preset" (the attack's own default, e.g. the papers' settings).
    team:      one of TEAM's variants (not part of the peers' per-image best).
    untargeted_via_targets: the attack is targeted only; untargeted results are its best target.
    untargeted / targeted: the modes the attack supports.
    settings:  the keyword arguments that distinguish it (TEAM's, or a peer preset's overrides).
    """

    name: str
    factory: Callable[..., Any]
    norm: str
    library: str = "teamattack"
    kind: AttackKind = AttackKind.MIN_NORM
    eps: float | str | None = None
    team: bool = False
    untargeted: bool = True
    targeted: bool = True
    untargeted_via_targets: bool = False
    note: str = ""
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", AttackKind.parse(self.kind))

    def budget_for(self, dataset: str | None) -> float | None:
        """The eps this fixed-budget attack runs at without --eps (None: the attack's own default)."""
        if self.kind != AttackKind.BUDGET or self.eps == "preset":
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
    """A TEAM variant; `kwargs` go to teamattack.attacks.TEAM."""

    def factory(model, targeted, eps, seed):
        kw = dict(kwargs)
        if eps is not None:
            kw["eps"] = eps
        return TEAM(model, norm=norm, targeted=targeted, **kw)

    return AttackSpec(name=name, factory=factory, norm=norm, library="teamattack", team=True,
                      note=note, settings=dict(kwargs))


def peer_spec(preset: str, name: str | None = None, eps: float | str | None = None, norm: str | None = None,
              **overrides) -> AttackSpec:
    """A peer attack from teamattack.baselines (norm, library, budget kind and modes from PRESETS).

    overrides: keyword arguments of the preset changed (the library's own names, see docs/peers.md).
    The peer library itself is imported when the attack is built (it may be missing: then skipped).
    """
    p = PRESETS.get(preset)
    if p is None:
        raise SuiteError(f"unknown peer preset {preset!r}")

    def factory(model, targeted, e, seed):
        from ..baselines import make

        kw = dict(overrides)
        if e is not None:
            kw["eps"] = e
        return make(preset, model, targeted=targeted, seed=seed, **kw)

    kind = p.kind
    return AttackSpec(
        name=name or preset, factory=factory, norm=norm or p.norm, library=p.library, kind=kind,
        eps=eps if kind == AttackKind.BUDGET else None, untargeted=p.untargeted or p.targeted, targeted=p.targeted,
        untargeted_via_targets=p.targeted and not p.untargeted, note=p.source, settings=dict(overrides),
    )


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
        peer_spec("jsma-paper"),
        team_spec("team-l2-paper", "l2", mode="paper"),
        peer_spec("cw-9x1000", name="cw"),
        team_spec("team-linf-paper", "linf", mode="paper"),
        peer_spec("fgsm-paper", eps="preset"),
    ]


def paper_table5() -> list[AttackSpec]:
    """Seed 001 Table V / seed 000: untargeted T1 / T4 (L2) vs DeepFool (3 steps), M-DI2-FGSM (eps 0.05), PGD (8/255)."""
    return [
        team_spec("team-T1-paper", "l2", mode="paper", objective="T1"),
        team_spec("team-T4-paper", "l2", mode="paper", objective="T4"),
        peer_spec("deepfool-paper"),
        peer_spec("mdi2fgsm-paper", eps="preset", norm="linf"),
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


def speed_suite() -> list[AttackSpec]:
    """The speed suite (`teamattack.bench.speed`): TEAM min-norm L2 / Linf vs DDN-100 (foolbox and
    adv_lib) and FMN-100 (L2 and Linf), timed against TEAM's gradient floor."""
    from types import MappingProxyType

    from ..baselines.presets import MIN_NORM as PRESET_MIN_NORM, Preset

    ddn_fb = Preset("ddn-100-foolbox", "foolbox", "foolbox.attacks.DDNAttack", "fb:DDNAttack", "l2", True, True,
                    PRESET_MIN_NORM, MappingProxyType({"steps": 100, "init_epsilon": 1.0, "gamma": 0.05}),
                    "Rony et al. 2019, foolbox's DDNAttack, 100 steps (no preset of its own)")

    def foolbox_ddn(model, targeted, eps, seed):
        from ..baselines.adapter import PeerAttack

        return PeerAttack(model, ddn_fb, targeted=targeted, seed=seed)

    return [team_spec("team-l2", "l2", mode="min-norm"), team_spec("team-linf", "linf", mode="min-norm"),
            AttackSpec("ddn-100-foolbox", foolbox_ddn, "l2", library="foolbox", note=ddn_fb.source)] + [
        peer_spec(n) for n in ("ddn-100", "fmn-l2-100", "fmn-linf-100")
    ]


@dataclass(frozen=True)
class Suite:
    """A named list of attacks run side by side; `targeted` is the suite's mode."""

    name: str
    specs: Callable[[], list[AttackSpec]]
    targeted: bool = False
    help: str = ""


SUITES: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    """Add `suite` to the registry (`teamattack bench --suite NAME`)."""
    if suite.name in SUITES:
        raise ValueError(f"suite {suite.name!r} is already registered")
    SUITES[suite.name] = suite
    return suite


for _suite in (
    Suite("untargeted-l2", untargeted_l2, False, "TEAM min-norm L2 vs C&W, DDN, FMN, ALMA, SuperDeepFool, DeepFool"),
    Suite("targeted-l2", targeted_l2, True, "targeted TEAM min-norm L2 vs C&W, DDN, FMN (average / best / worst)"),
    Suite("linf", linf, False, "TEAM Linf vs FMN-Linf and FGSM / BIM / PGD at a budget"),
    Suite("l0", l0, False, "TEAM L0 vs JSMA (best over targets) and FMN-L0"),
    Suite("paper-table4", paper_table4, True, "seed 001 Table IV: targeted TEAM L0 / L2 / Linf (paper mode) vs JSMA / C&W / FGSM"),
    Suite("paper-table5", paper_table5, False, "seed 001 Table V: TEAM T1 / T4 (paper mode) vs DeepFool / M-DI2-FGSM / PGD"),
    Suite("engine", engine_suite, False, "the TEAM engine: each curvature source x mode, L2"),
    Suite("speed", speed_suite, False, "wall time vs TEAM's gradient floor: TEAM min-norm vs DDN-100, FMN-100"),
):
    register(_suite)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text == "None":  # Python's spelling only: "none" stays a string (hessian="none")
        return None
    return {"true": True, "false": False}.get(text.lower(), text)


def settings_of(name: str) -> dict:
    """The key=value settings of an attack name "base:key=value:key=value"."""
    out = {}
    for item in name.split(":")[1:]:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise SuiteError(f"{name!r}: settings are key=value pairs separated by ':'")
        out[key] = _value(text)
    return out


def with_settings(spec: AttackSpec, name: str, eps: float | None = None) -> AttackSpec:
    """The TEAM spec `spec` with the settings of `name` ("base:key=value:key=value") applied.

    eps: the budget it will run at, if known (settings of the fixed-budget attack, such as
    `targets`, are checked against that mode)."""
    kwargs = {**spec.settings, **settings_of(name)}
    if eps is None and spec.kind == BUDGET:
        eps = 1.0
    try:  # fail now, not after the other attacks have run (on a ReLU net, which every setting accepts)
        probe = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 2)).eval()
        TEAM(probe, norm=spec.norm, **({} if eps is None else {"eps": eps}), **kwargs)
    except (TypeError, ValueError) as err:
        raise SuiteError(f"{name!r}: {err}") from None
    return team_spec(name, spec.norm, note=spec.note, **kwargs)


def peer_with_settings(name: str) -> AttackSpec:
    """The peer preset of `name` ("preset:key=value:...") with those keyword arguments changed,
    e.g. `ddn-100:levels=None` (DDN without its quantisation to 256 levels)."""
    from ..baselines.adapter import ALIASES

    preset = name.split(":")[0]
    overrides = settings_of(name)
    known = set(PRESETS[preset].kwargs) | set(ALIASES)
    bad = sorted(k for k in overrides if k not in known)
    if bad:
        raise SuiteError(f"{name!r}: {preset} has no setting {', '.join(bad)} (it has {', '.join(PRESETS[preset].kwargs)})")
    return peer_spec(preset, name=name, **overrides)


def get_suite(name: str, attacks: list[str] | None = None) -> tuple[list[AttackSpec], bool]:
    """The specs of suite `name` (optionally only `attacks`, in that order) and whether it is targeted.

    Names in `attacks` that are not in the suite but are peer presets are added as such. A name
    with settings, `team-l2:starts=9:steps=300` or `ddn-100:levels=None`, is that suite entry (TEAM
    keyword arguments, `with_settings`) or peer preset (its keyword arguments) with those changed.
    """
    try:
        suite = SUITES[name]
    except KeyError:
        raise SuiteError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}") from None
    specs = suite.specs()
    if attacks:
        by = {s.name: s for s in specs}
        out = []
        for a in attacks:
            base = a.split(":")[0]
            if a in by:
                out.append(by[a])
            elif ":" in a and base in by and by[base].team:
                out.append(with_settings(by[base], a))
            elif base in PRESETS:
                out.append(peer_with_settings(a) if ":" in a else peer_spec(a))
            else:
                raise SuiteError(f"attack {a!r} is neither in suite {name} ({', '.join(by)}) nor a peer preset")
        specs = out
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SuiteError(f"duplicate attack names in suite {name}: {names}")
    return specs, suite.targeted
