"""The attacks of an evaluation: names ("team", peer presets), Attack objects, or eps -> Attack factories."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from ..attacks.base import Attack
from ..validation import InputError

NORMS = ("l2", "linf", "l0")



@dataclass(frozen=True)
class EvalAttack:
    """One attack of an evaluation.

    label:  its name in the result (a preset name resolved to the evaluation's norm, "team", ...).
    build:  build(eps) -> Attack. For a fixed-budget attack it is called once per eps; for a
            single-run attack (`per_eps` False) once with eps None.
    per_eps: True for fixed-budget attacks built per eps; False for an Attack object or a
            minimum-norm preset, run once: an image then counts as broken at eps where the
            attack succeeded within eps.
    """

    label: str
    build: Callable[[float | None], Attack]
    per_eps: bool


def _preset_for_norm(name: str, norm: str) -> str:
    """`name` if its preset is in `norm`, else `name-norm` when that preset exists (apgd-ce -> apgd-ce-l2)."""
    from ..baselines.presets import PRESETS

    if name not in PRESETS:
        raise InputError(f"unknown attack {name!r}: use 'team', 'team-min-norm', a peer preset ({', '.join(sorted(PRESETS))}), "
                         "an Attack object or a factory eps -> Attack")
    if PRESETS[name].norm == norm:
        return name
    alt = f"{name}-{norm}"
    if alt in PRESETS and PRESETS[alt].norm == norm:
        return alt
    raise InputError(f"{name} is an {PRESETS[name].norm} attack; the evaluation is in {norm}")


def resolve(model: nn.Module, norm: str, attacks: Sequence[object] | None) -> list[EvalAttack]:
    """The evaluation's attacks (default: TEAM's fixed-budget mode) as `EvalAttack`s.

    "team" (or "team-<norm>") is `TEAM(model, norm, eps=eps)`, "team:key=value:..." the same with
    TEAM's settings (as in `teamattack bench`: "team:starts=6:steps=28"); "team-min-norm" is `TEAM(model, norm)`
    (run once, judged by its distances); a peer preset name is
    `baselines.make(name, model, eps=eps)` (fixed budget) or `make(name, model)` (minimum norm,
    run once); a name in another norm is mapped to its `-<norm>` variant where one exists
    ("autoattack" -> "autoattack-l2"). Labels must be unique.
    """
    from ..attacks import TEAM

    if norm not in NORMS:
        raise InputError(f"norm must be one of {NORMS}, got {norm!r}")
    out: list[EvalAttack] = []
    for i, a in enumerate(["team"] if attacks is None else list(attacks)):
        if isinstance(a, str):
            base = a.split(":")[0]
            if base in ("team", f"team-{norm}"):  # "team:starts=6:steps=28": TEAM's own settings
                from ..bench.suites import SuiteError, settings_of

                try:
                    kw = settings_of(a)
                    TEAM(model, norm, eps=1.0, **kw)  # refuse a bad setting now, not after the other attacks
                except (SuiteError, TypeError, ValueError) as err:
                    raise InputError(f"{a!r}: {err}") from None
                label = "team" if a == base else a
                out.append(EvalAttack(label, lambda eps, kw=kw: TEAM(model, norm, eps=eps, **kw), True))
                continue
            if a == "team-min-norm":  # the minimum-norm mode, run once, judged at every eps
                out.append(EvalAttack(a, lambda eps: TEAM(model, norm), False))
                continue
            from ..baselines import make
            from ..baselines.presets import FIXED_EPS, PRESETS

            name = _preset_for_norm(a, norm)
            if PRESETS[name].budget == FIXED_EPS:
                out.append(EvalAttack(name, lambda eps, name=name: make(name, model, eps=eps), True))
            else:
                out.append(EvalAttack(name, lambda eps, name=name: make(name, model), False))
        elif isinstance(a, Attack):
            out.append(EvalAttack(getattr(a, "name", type(a).__name__), lambda eps, a=a: a, False))
        elif callable(a):
            out.append(EvalAttack(getattr(a, "__name__", f"attack{i}"), a, True))
        else:
            raise InputError(f"attacks[{i}] must be a name, an Attack or a factory eps -> Attack; got {type(a).__name__}")
    labels = [e.label for e in out]
    if len(set(labels)) != len(labels):
        raise InputError(f"attack labels must be unique, got {labels}")
    if not out:
        raise InputError("attacks must not be empty")
    return out
