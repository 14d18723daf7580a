"""The benchmark in three stages over dataclasses: plan units -> execute them -> assemble records.

    p = plan(model, x, y, specs, BenchConfig(targeted=False, seed=0, batch_size=100))
    values = execute(p, model, x, y, store)            # {unit key: per-example arrays}
    result = assemble(p, values)                       # BenchResult: runs, robust accuracy, skipped

`plan` decides every attack call (a `Unit`: attack, mode, eps, target offset, batch) and which
attacks are skipped; `execute` runs the units a `store` (the resume sidecar) does not hold yet, each
seeded from its own key, optionally only those of one shard; `assemble` turns the arrays into the
JSON run records (targeted cases, per-image best, robust accuracy). The exact optima are a fourth,
optional stage between the last two: `assemble(..., exact=function)`, where the function maps the
plan and the units' arrays to per-image optima (see `exact_stage`; it starts the solvers from the
best attack's points, which `execute(..., keep_points=True)` keeps).
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..kinds import AttackKind
from . import records as R
from .seeds import derive_seed, random_targets, seed_everything
from .suites import AttackSpec

UNTARGETED = 0      # target offset of an untargeted unit
RANDOM_TARGET = "r"  # target offset of the seeded random target's unit


def eps_key(e: float | None) -> str:
    return "-" if e is None else R.fmt_eps(e)


# ------------------------------------------------------------------------------------------
# plan
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchConfig:
    """What a benchmark is asked for (the harness's options, SPEC 8).

    targeted: the suite's mode. targets: "all" (every target once: average / best / worst) or
    "random" (only the seeded random target: average). eps_list: fixed-budget mode (robust accuracy
    at each eps; budget attacks run at each eps). dataset: picks the default budget of budget attacks.
    """

    targeted: bool = False
    seed: int = 0
    batch_size: int = 100
    eps_list: tuple[float, ...] | None = None
    targets: str = "all"
    dataset: str | None = None

    def __post_init__(self) -> None:
        if self.targets not in ("all", "random"):
            raise ValueError("targets must be 'all' or 'random'")
        if self.eps_list is not None:
            object.__setattr__(self, "eps_list", tuple(float(e) for e in self.eps_list) or None)

    @property
    def case_names(self) -> list[str]:
        if not self.targeted:
            return ["untargeted"]
        return ["average"] if self.targets == "random" else ["average", "best", "worst"]


@dataclass(frozen=True)
class Unit:
    """One attack call: `attack` in mode `targeted` at `eps` against target offset `offset` on batch `batch`.

    offset: 0 (untargeted), k in 1..m-1 (target (y + k) mod m) or "r" (the seeded random target).
    """

    attack: str
    targeted: bool
    eps: float | None
    offset: int | str
    batch: int

    @property
    def key(self) -> str:
        """The unit's name in the resume sidecar (also what its seed is derived from)."""
        return f"{self.attack}|{'T' if self.targeted else 'U'}|eps={eps_key(self.eps)}|k={self.offset}|b={self.batch}"

    def seed(self, base: int) -> int:
        return derive_seed(base, self.attack, self.targeted, eps_key(self.eps), self.offset, self.batch)


@dataclass(frozen=True)
class RunPlan:
    """The units of one attack at one eps (one or more rows of the output)."""

    spec: AttackSpec
    eps: float | None
    targeted: bool                 # the mode the attack runs in
    offsets: tuple[int | str, ...]
    units: tuple[Unit, ...]

    @property
    def label(self) -> str:
        return self.spec.name + ("" if self.eps is None else f" eps={eps_key(self.eps)}")


@dataclass(frozen=True)
class Skipped:
    """An attack of the suite that could not run, and why."""

    attack: str
    reason: str

    def record(self) -> dict:
        return {"attack": self.attack, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    config: BenchConfig
    n: int
    num_classes: int
    batches: tuple[tuple[int, int], ...]
    random_offsets: torch.Tensor   # per image, k in 1..m-1: the seeded random target is (y + k) mod m
    runs: tuple[RunPlan, ...]
    skipped: tuple[Skipped, ...]

    @property
    def units(self) -> list[Unit]:
        return [u for r in self.runs for u in r.units]

    def targets_of(self, unit: Unit, y: torch.Tensor) -> torch.Tensor | None:
        """The target labels of `unit`'s batch (None when untargeted)."""
        if unit.offset == UNTARGETED:
            return None
        lo, hi = self.batches[unit.batch]
        off = self.random_offsets[lo:hi] if unit.offset == RANDOM_TARGET else torch.full((hi - lo,), int(unit.offset))
        return (y[lo:hi] + off.to(y.device)) % self.num_classes


def _log(s: str) -> None:
    print(s, file=sys.stderr)


def check_devices(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise a ValueError that says so when the model's parameters and the images are on different devices."""
    p = next((t for t in model.parameters()), None)
    if p is None:
        p = next((t for t in model.buffers()), None)
    if p is not None and p.device != x.device:
        raise ValueError(f"the model is on {p.device} but the images are on {x.device}: "
                         "put both on one device (model.to(d), x.to(d); the CLI's --device)")
    if y.device != x.device:
        raise ValueError(f"the images are on {x.device} but the labels on {y.device}")


def plan(model: nn.Module, x: torch.Tensor, y: torch.Tensor, specs: Sequence[AttackSpec], config: BenchConfig,
         log: Callable[[str], None] | None = None) -> Plan:
    """Every unit of the benchmark; attacks that cannot be built (library missing, mode unsupported)
    are checked here, once, and skipped with the reason."""
    log = log or _log
    check_devices(model, x, y)
    n = len(x)
    with torch.no_grad():
        m = int(model(x[:1]).shape[-1])
    batches = tuple((i, min(i + config.batch_size, n)) for i in range(0, n, config.batch_size))
    runs: list[RunPlan] = []
    skipped: list[Skipped] = []
    for spec in specs:
        mode_targeted = config.targeted or spec.untargeted_via_targets
        if config.targeted and not spec.targeted:
            skipped.append(Skipped(spec.name, "the attack has no targeted mode"))
            log(f"skip {spec.name}: no targeted mode")
            continue
        if spec.kind == AttackKind.BUDGET:
            eps_values = list(config.eps_list) if config.eps_list is not None else [spec.budget_for(config.dataset)]
        else:
            eps_values = [None]
        if not mode_targeted:
            offsets: tuple = (UNTARGETED,)
        elif config.targets == "all" or not config.targeted:
            offsets = tuple(range(1, m))
        else:
            offsets = (RANDOM_TARGET,)
        try:  # can the attack be built at all (library present, mode supported)?
            spec.build(model, mode_targeted, eps_values[0], seed=config.seed)
        except Exception as e:  # noqa: BLE001 - report and go on with the other attacks
            skipped.append(Skipped(spec.name, f"{type(e).__name__}: {e}"))
            log(f"skip {spec.name}: {type(e).__name__}: {e}")
            continue
        for e in eps_values:
            units = tuple(Unit(spec.name, mode_targeted, e, k, b) for k in offsets for b in range(len(batches)))
            runs.append(RunPlan(spec, e, mode_targeted, offsets, units))
    return Plan(config, n, m, batches, random_targets(y.cpu(), m, config.seed), tuple(runs), tuple(skipped))


# ------------------------------------------------------------------------------------------
# execute
# ------------------------------------------------------------------------------------------
class Store(Protocol):
    """Where finished units are kept (the resume sidecar, or memory)."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...


class MemoryStore:
    """A store that saves nothing to disk."""

    def __init__(self) -> None:
        self.units: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        return self.units.get(key)

    def put(self, key: str, value: dict) -> None:
        self.units[key] = value


def _roundtrip(obj: dict) -> dict:
    return json.loads(json.dumps(obj))


def run_unit(plan_: Plan, unit: Unit, spec: AttackSpec, model: nn.Module, x: torch.Tensor,
             y: torch.Tensor, keep_points: bool = False) -> R.Arrays:
    """One attack call, seeded from the unit alone (so it does not depend on what ran before).
    keep_points: the arrays also hold the attack's points (`R.encode_points`)."""
    lo, hi = plan_.batches[unit.batch]
    xb, yb = x[lo:hi], y[lo:hi]
    useed = unit.seed(plan_.config.seed)
    seed_everything(useed)
    attack = spec.build(model, unit.targeted, unit.eps, seed=useed)
    res = attack(xb, yb, plan_.targets_of(unit, y))
    arr = R.example_arrays(xb, res)
    if keep_points:
        arr["points"] = R.encode_points(res.x_adv)
    return _roundtrip(arr)


def execute(plan_: Plan, model: nn.Module, x: torch.Tensor, y: torch.Tensor, store: Store | None = None, *,
            owns: Callable[[Unit], bool] | None = None, progress: bool = True, keep_points: bool = False,
            on_unit: Callable[[str], None] | None = None) -> dict[str, R.Arrays]:
    """Run the planned units `store` does not hold yet (only those `owns` accepts, when given).

    Returns {unit key: arrays} for every unit held or run. keep_points: the arrays of the units
    run now also hold their points (the exact stage starts its solvers from them). on_unit(key) is
    called after every finished unit (tests use it to simulate an interruption).
    """
    from tqdm.auto import tqdm

    store = store if store is not None else MemoryStore()
    values: dict[str, R.Arrays] = {}
    for run in plan_.runs:
        mine = [u for u in run.units if owns is None or owns(u)]
        if not mine:
            continue
        bar = tqdm(total=len(mine), desc=run.label, disable=not progress, leave=False, unit="batch")
        for unit in mine:
            val = store.get(unit.key)
            if val is None:
                val = run_unit(plan_, unit, run.spec, model, x, y, keep_points=keep_points)
                store.put(unit.key, val)
                if on_unit is not None:
                    on_unit(unit.key)
            values[unit.key] = val
            bar.update(1)
        bar.close()
    return values


# ------------------------------------------------------------------------------------------
# assemble
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunArrays:
    """The joined arrays of one RunPlan, per case ("untargeted" | "average" | "best" | "worst"), and
    what the counters of each case are divided by for the per-image figures."""

    spec: AttackSpec
    eps: float | None
    cases: Mapping[str, R.Arrays]
    divisor: Mapping[str, int]


def join(plan_: Plan, values: Mapping[str, R.Arrays]) -> list[RunArrays]:
    """Per run the arrays of its batches joined and its targets folded into the suite's cases."""
    cfg, n, m = plan_.config, plan_.n, plan_.num_classes
    k_rand = [int(k) - 1 for k in plan_.random_offsets]
    out = []
    for run in plan_.runs:
        per_k: dict[object, list] = {k: [] for k in run.offsets}
        for u in run.units:
            per_k[u.offset].append(values[u.key])
        joined = [R.concat(per_k[k]) for k in run.offsets]
        if not run.targeted:
            cases, div = {"untargeted": joined[0]}, {"untargeted": n}
        elif not cfg.targeted:  # targeted-only attack in an untargeted suite: its best target
            c = R.targeted_cases(joined, k_rand, run.spec.norm)
            cases, div = {"untargeted": c["best"]}, {"untargeted": n}
        elif run.offsets == (RANDOM_TARGET,):
            cases, div = {"average": joined[0]}, {"average": n}
        else:
            cases = R.targeted_cases(joined, k_rand, run.spec.norm)
            div = {"average": n * (m - 1), "best": n, "worst": n}
        out.append(RunArrays(run.spec, run.eps, cases, div))
    return out


def main_runs(plan_: Plan, runs: Sequence[RunArrays]) -> list[RunArrays]:
    """The runs that make the distance rows (in fixed-budget mode: the minimum-norm attacks only)."""
    return [r for r in runs if r.spec.kind != AttackKind.BUDGET or plan_.config.eps_list is None]


def norms(runs: Iterable[RunArrays]) -> list[str]:
    out: list[str] = []
    for r in runs:
        if r.spec.norm not in out:
            out.append(r.spec.norm)
    return out


@dataclass(frozen=True)
class ExactOutcome:
    """Per (norm, case) the per-image optima (nan where unknown), and the JSON summary per problem."""

    optima: Mapping[tuple[str, str], list[float]] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)


ExactFunction = Callable[[Plan, Mapping[str, R.Arrays]], ExactOutcome]


@dataclass
class BenchResult:
    """What a benchmark produced: the run records (the JSON rows), robust accuracy rows (fixed-budget
    mode), the exact-optimum summaries, the skipped attacks, and the number of classes.

    It also reads as a mapping (`result["runs"]`, `{**result}`), as code written against the
    earlier dict does.
    """

    runs: list[dict]
    robust_accuracy: list[dict]
    exact: dict
    skipped: list[dict]
    num_classes: int

    def __getitem__(self, key: str):
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]


def assemble(plan_: Plan, values: Mapping[str, R.Arrays], exact: ExactFunction | None = None) -> BenchResult:
    """The run records of the planned runs from the units' arrays (and the optima, if `exact` is given)."""
    cfg, n = plan_.config, plan_.n
    eps_list = list(cfg.eps_list) if cfg.eps_list is not None else None
    runs = join(plan_, values)
    main = main_runs(plan_, runs)
    outcome = exact(plan_, values) if exact is not None else ExactOutcome()
    optima = outcome.optima

    out_runs: list[dict] = []
    ra_rows: list[dict] = []
    for case in cfg.case_names:
        for r in runs:
            spec, e = r.spec, r.eps
            if case not in r.cases:
                continue
            arr = r.cases[case]
            extra: dict = {}
            if e is not None:
                extra["eps"] = e
            elif spec.kind == AttackKind.BUDGET:
                extra["eps"] = "preset"
            if spec.untargeted_via_targets and not cfg.targeted:
                extra["via"] = "best target"
            extra["per_image"] = {"success": list(arr["success"]), spec.norm: list(arr[spec.norm])}
            if eps_list is not None and spec.kind != AttackKind.BUDGET:
                extra["robust_accuracy"] = R.robust_accuracy_min_norm(arr, spec.norm, eps_list)
            if eps_list is not None and spec.kind == AttackKind.BUDGET:
                extra["robust_accuracy"] = {R.fmt_eps(e): 1.0 - sum(arr["success"]) / max(n, 1)}
            out_runs.append(R.record_from_arrays(arr, spec.name, spec.library, spec.norm, cfg.targeted, case,
                                                 optimum=optima.get((spec.norm, case)),
                                                 per_image_divisor=r.divisor[case], extra=extra))
        out_runs += _best_rows(main, case, cfg.targeted, eps_list, optima)
        if eps_list is not None:
            ra_rows += _robust_rows(runs, case, eps_list, n)
    return BenchResult(out_runs, ra_rows, dict(outcome.summary), [s.record() for s in plan_.skipped],
                       plan_.num_classes)


def _best_rows(main: Sequence[RunArrays], case: str, targeted: bool, eps_list, optima) -> list[dict]:
    """Per norm the per-image best of the peers, and of the peers with TEAM."""
    rows = []
    for norm in norms(main):
        group = [r for r in main if r.spec.norm == norm and case in r.cases]
        peers = [r for r in group if not r.spec.team]
        for label, members in (("per-image-best", peers), ("per-image-best+team", group)):
            if len(members) < 2 or (label == "per-image-best+team" and len(members) == len(peers)):
                continue
            arrs = [r.cases[case] for r in members]
            best, won = R.per_image_best(arrs, norm)
            wins = {r.spec.name: sum(1 for w in won if w == j) for j, r in enumerate(members)}
            extra: dict = {"of": [r.spec.name for r in members], "wins": wins}
            extra["per_image"] = {"success": list(best["success"]), norm: list(best[norm])}
            if eps_list is not None:
                extra["robust_accuracy"] = R.robust_accuracy_min_norm(best, norm, eps_list)
            rows.append(R.record_from_arrays(best, label, "-", norm, targeted, case, optimum=optima.get((norm, case)),
                                             per_image_divisor=members[0].divisor[case], extra=extra))
    return rows


def _robust_rows(runs: Sequence[RunArrays], case: str, eps_list: Sequence[float], n: int) -> list[dict]:
    rows: list[dict] = []
    broken: dict[str, dict[str, list[list[bool]]]] = {}  # norm -> eps -> per-attack broken flags
    for r in runs:
        spec, e = r.spec, r.eps
        if case not in r.cases:
            continue
        arr = r.cases[case]
        if spec.kind == AttackKind.BUDGET:
            if e is None:
                continue
            flags = {R.fmt_eps(e): [bool(s) for s in arr["success"]]}
        else:
            flags = {R.fmt_eps(v): [bool(s) and d <= v + 1e-6 for s, d in zip(arr["success"], arr[spec.norm])]
                     for v in eps_list}
        row = next((w for w in rows if w["attack"] == spec.name), None)
        if row is None:
            row = {"attack": spec.name, "library": spec.library, "case": case, "norm": spec.norm,
                   "kind": str(spec.kind), "accuracy": {}}
            rows.append(row)
        for ek, f in flags.items():
            row["accuracy"][ek] = 1.0 - sum(f) / max(n, 1)
            broken.setdefault(spec.norm, {}).setdefault(ek, []).append(f)
    for norm, by_eps in broken.items():
        rows.append({"attack": "any attack", "library": "-", "case": case, "norm": norm, "kind": "per-image",
                     "accuracy": {ek: R.robust_accuracy_any(fl) for ek, fl in by_eps.items()}})
    return rows


# ------------------------------------------------------------------------------------------
# the exact stage (optima of the model where computable)
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Incumbents:
    """Per image the least distance of any successful attack (inf where none) and its point (a row
    of nan where none, or where its unit kept no points): what the exact solvers start from."""

    distance: list[float]
    points: np.ndarray


def incumbents(plan_: Plan, values: Mapping[str, R.Arrays], x: torch.Tensor, norm: str, problem: str) -> Incumbents:
    """The best successful point per image among the minimum-norm runs' units.

    problem: "untargeted" (any unit counts: an untargeted run, or any target of a targeted one) or
    "random" (only the units of the image's seeded random target).
    """
    n = plan_.n
    dist = [math.inf] * n
    pts = np.full((n, int(np.prod(x.shape[1:]))), np.nan)
    eps_list = plan_.config.eps_list
    for run in plan_.runs:
        if run.spec.kind == AttackKind.BUDGET and eps_list is not None:
            continue
        for u in run.units:
            arr = values.get(u.key)
            if arr is None:
                continue
            lo, hi = plan_.batches[u.batch]
            decoded = None
            for j in range(hi - lo):
                i = lo + j
                if problem == "random" and u.offset not in (RANDOM_TARGET, int(plan_.random_offsets[i])):
                    continue
                d = arr[norm][j]
                if not (arr["success"][j] and d < dist[i]):
                    continue
                dist[i] = d
                if "points" in arr:
                    decoded = R.decode_points(arr["points"]) if decoded is None else decoded
                    pts[i] = decoded[j].reshape(-1).double().numpy()
                else:
                    pts[i] = np.nan
    return Incumbents(dist, pts)


def exact_stage(model: nn.Module, x: torch.Tensor, y: torch.Tensor, store: Store | None = None, *,
                time_limit: float = 60.0, progress: bool = True,
                log: Callable[[str], None] | None = None) -> ExactFunction:
    """The exact stage of `bench --exact`: per-image optima for the suite's norms where computable
    (teamattack.exact decides where), cached in `store` per batch."""
    store = store if store is not None else MemoryStore()
    log = log or _log

    def run(plan_: Plan, values: Mapping[str, R.Arrays]) -> ExactOutcome:
        from .. import exact as X

        cfg, n, m = plan_.config, plan_.n, plan_.num_classes
        main = main_runs(plan_, join(plan_, values))
        optima: dict[tuple[str, str], list[float]] = {}
        summary: dict = {}
        shape = tuple(x.shape[1:])
        for norm in norms(main):
            if norm not in ("l2", "linf") or not X.applicable(model, shape, norm):
                log(f"exact: no {norm} optimum for this model (affine models or ReLU networks only)")
                continue
            # which optimum each case needs: the untargeted one (untargeted, best), the random target's (average)
            kinds = {case: "untargeted" if case in ("untargeted", "best") else ("random" if case == "average" else None)
                     for case in cfg.case_names}
            for kind in sorted({k for k in kinds.values() if k}):
                # eps_max and the start for the solver: the least distance (in this norm) of any
                # successful attack, and its point
                inc = incumbents(plan_, values, x, norm, kind)
                ub = inc.distance
                vals: list[dict] = []
                for b, (lo, hi) in enumerate(plan_.batches):
                    key = f"exact|{norm}|{kind}|b={b}"
                    val = store.get(key)
                    if val is None:
                        tb = None if kind == "untargeted" else \
                            (y[lo:hi] + plan_.random_offsets[lo:hi].to(y.device)) % m
                        em = torch.tensor([u * (1 + 1e-4) + 1e-6 if math.isfinite(u) else math.inf for u in ub[lo:hi]])
                        res = X.exact_optimum(model, x[lo:hi], y[lo:hi], norm, target=tb, eps_max=em,
                                              time_limit=time_limit, progress=progress,
                                              x_start=torch.from_numpy(inc.points[lo:hi]))
                        val = _roundtrip({"records": res.records()})
                        store.put(key, val)
                    vals += val["records"]
                opt = [v["eps"] if (v["status"] == "optimal" and v["eps"] is not None) else math.nan for v in vals]
                for case, k in kinds.items():
                    if k == kind:
                        optima[(norm, case)] = opt
                statuses: dict[str, int] = {}
                for v in vals:
                    statuses[v["status"]] = statuses.get(v["status"], 0) + 1
                st = R.stats(o for o in opt if math.isfinite(o))
                summary[f"{norm}/{kind}"] = {"norm": norm, "problem": kind, "n": n, "statuses": statuses,
                                             "verified": sum(1 for v in vals if v["verified"]),
                                             "optimum": st, "per_image": vals}
        return ExactOutcome(optima, summary)

    return run
