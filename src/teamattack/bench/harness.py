"""The side-by-side harness: every attack of a suite on the same images, resumable, deterministic.

Protocol (SPEC 8): N correctly classified test images drawn with a fixed seed, the same for every
attack; distortion statistics over successes only; targeted suites report `average` (one seeded
random target != y per image), `best` and `worst` (over every target, derived from the same runs);
each record carries wall time and gradient / HVP / forward counts per image.

Work is split into units (attack, eps, target, batch). Before a unit runs, torch / numpy / random
are seeded from (seed, attack, eps, target, batch), and the attack is built afresh, so a unit's
result does not depend on what ran before it. Every finished unit is appended (one JSON line with
per-example arrays and counters) to a sidecar file; a rerun reads the sidecar and runs only the
missing units, so an interrupted benchmark resumes and yields the same JSON (timings aside).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import records as R
from .suites import BUDGET, AttackSpec

SIDECAR_VERSION = 1


# ------------------------------------------------------------------------------------------
# images, seeds, fingerprints
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def select_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int = 0,
                  batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """N correctly classified images chosen with `seed` (sorted indices into x); all if n is None."""
    correct = torch.nonzero(predict(model, x, batch_size).cpu() == y.cpu()).flatten()
    if n is not None and n < len(correct):
        g = torch.Generator().manual_seed(int(seed))
        correct = correct[torch.randperm(len(correct), generator=g)[:n]].sort().values
    elif n is not None and n > len(correct):
        print(f"note: only {len(correct)} correctly classified images; using all of them", file=sys.stderr)
    idx = correct.tolist()
    return x[correct.to(x.device)], y[correct.to(y.device)], idx


def load_images(dataset: str, model: nn.Module, n: int | None, seed: int = 0, root: str | None = None,
                device: torch.device | str | None = None, split: str = "test"):
    """Load `split` of `dataset` (teamattack.data.load) and select N correctly classified images."""
    from .. import data

    x, y = data.load(dataset, split, root=root)
    if device is not None:
        x, y = x.to(device), y.to(device)
    return select_images(model, x, y, n, seed)


def derive_seed(*parts: object) -> int:
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def seed_everything(s: int) -> None:
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def model_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def random_targets(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Offset k in 1..m-1 per image (the target is (y + k) mod m), seeded: uniform over t != y."""
    g = torch.Generator().manual_seed(derive_seed(seed, "targets"))
    return torch.randint(1, num_classes, (len(y),), generator=g)


# ------------------------------------------------------------------------------------------
# sidecar (resume)
# ------------------------------------------------------------------------------------------
class ResumeMismatch(RuntimeError):
    pass


class Sidecar:
    """Append-only JSON-lines file: a header line, then one line per finished unit."""

    def __init__(self, path: str | os.PathLike, header: dict, fresh: bool = False) -> None:
        self.path = Path(path)
        self.header = {"sidecar": SIDECAR_VERSION, **header}
        self.units: dict[str, dict] = {}
        if fresh and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_lines([json.dumps({"header": self.header})])

    def _write_lines(self, lines: list[str]) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(self.path)

    def _load(self) -> None:
        text = self.path.read_text()
        lines = text.split("\n")
        good: list[str] = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                if i >= len(lines) - 2:  # a line cut by the interruption: drop it
                    continue
                raise
            if i == 0:
                old = obj.get("header")
                if old != self.header:
                    diff = sorted(k for k in set(old or {}) | set(self.header)
                                  if (old or {}).get(k) != self.header.get(k))
                    raise ResumeMismatch(
                        f"{self.path} belongs to another benchmark (differs in {', '.join(diff)}); "
                        "rerun with --fresh to discard it or choose another --json")
            else:
                self.units[obj["key"]] = obj["value"]
            good.append(line)
        if not text.endswith("\n") or len(good) != sum(1 for ln in lines if ln.strip()):
            self._write_lines(good)

    def get(self, key: str) -> dict | None:
        return self.units.get(key)

    def put(self, key: str, value: dict) -> None:
        line = json.dumps({"key": key, "value": value})
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.units[key] = value


class _Memory:
    """Sidecar stand-in when nothing is to be saved."""

    def __init__(self) -> None:
        self.units: dict[str, dict] = {}

    def get(self, key):
        return self.units.get(key)

    def put(self, key, value):
        self.units[key] = value


# ------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------
def _eps_key(e: float | None) -> str:
    return "-" if e is None else R.fmt_eps(e)


def _roundtrip(obj: dict) -> dict:
    return json.loads(json.dumps(obj))


def run_bench(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    specs: Sequence[AttackSpec],
    *,
    targeted: bool = False,
    seed: int = 0,
    batch_size: int = 100,
    eps_list: Sequence[float] | None = None,
    targets: str = "all",
    dataset: str | None = None,
    sidecar: Sidecar | None = None,
    exact: bool = False,
    exact_time_limit: float = 60.0,
    progress: bool = True,
    on_unit: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run `specs` on (x, y) and return {"runs", "robust_accuracy", "exact", "skipped"}.

    targeted: the suite's mode. targets: "all" (every target once: average / best / worst) or
    "random" (only the seeded random target: average). eps_list: fixed-budget mode (robust accuracy
    at each eps; budget attacks run at each eps). exact: add ratio_to_optimum where the optimum of
    the model is computable (affine model: L2 / Linf; ReLU network: Linf MILP, L2 MIQP).
    on_unit(key) is called after every finished unit (tests use it to simulate an interruption).
    """
    from tqdm.auto import tqdm

    log = log or (lambda s: print(s, file=sys.stderr))
    store = sidecar if sidecar is not None else _Memory()
    if targets not in ("all", "random"):
        raise ValueError("targets must be 'all' or 'random'")
    n = len(x)
    with torch.no_grad():
        m = int(model(x[:1]).shape[-1])
    k_rand = random_targets(y.cpu(), m, seed)  # offsets 1..m-1
    batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    eps_list = [float(e) for e in eps_list] if eps_list else None

    runs_arrays: list[dict] = []  # {"spec", "eps", "cases": {case: arrays}, "divisor": {case: d}}
    skipped: list[dict] = []

    for spec in specs:
        mode_targeted = targeted or spec.untargeted_via_targets
        if targeted and not spec.targeted:
            skipped.append({"attack": spec.name, "reason": "the attack has no targeted mode"})
            log(f"skip {spec.name}: no targeted mode")
            continue
        if spec.kind == BUDGET:
            eps_values = eps_list if eps_list is not None else [spec.budget_for(dataset)]
        else:
            eps_values = [None]
        if mode_targeted:
            offsets = list(range(1, m)) if targets == "all" or not targeted else ["r"]
        else:
            offsets = [0]
        # check that the attack can be built at all (library present, mode supported)
        try:
            spec.build(model, mode_targeted, eps_values[0], seed=seed)
        except Exception as e:  # noqa: BLE001 - report and go on with the other attacks
            skipped.append({"attack": spec.name, "reason": f"{type(e).__name__}: {e}"})
            log(f"skip {spec.name}: {type(e).__name__}: {e}")
            continue
        for e in eps_values:
            todo = [(k, b) for k in offsets for b in range(len(batches))]
            bar = tqdm(total=len(todo), desc=spec.name + ("" if e is None else f" eps={_eps_key(e)}"),
                       disable=not progress, leave=False, unit="batch")
            per_k: dict[object, list[dict]] = {k: [] for k in offsets}
            for k, b in todo:
                key = f"{spec.name}|{'T' if mode_targeted else 'U'}|eps={_eps_key(e)}|k={k}|b={b}"
                val = store.get(key)
                if val is None:
                    lo, hi = batches[b]
                    xb, yb = x[lo:hi], y[lo:hi]
                    if k == 0:
                        tb = None
                    else:
                        off = k_rand[lo:hi] if k == "r" else torch.full((hi - lo,), int(k))
                        tb = (yb + off.to(yb.device)) % m
                    useed = derive_seed(seed, spec.name, mode_targeted, _eps_key(e), k, b)
                    seed_everything(useed)
                    attack = spec.build(model, mode_targeted, e, seed=useed)
                    res = attack(xb, yb, tb)
                    val = _roundtrip(R.example_arrays(xb, res))
                    store.put(key, val)
                    if on_unit is not None:
                        on_unit(key)
                per_k[k].append(val)
                bar.update(1)
            bar.close()
            joined = [R.concat(per_k[k]) for k in offsets]
            if not mode_targeted:
                cases, div = {"untargeted": joined[0]}, {"untargeted": n}
            elif not targeted:  # targeted-only attack in an untargeted suite: its best target
                c = R.targeted_cases(joined, [int(k) - 1 for k in k_rand], spec.norm)
                cases, div = {"untargeted": c["best"]}, {"untargeted": n}
            elif offsets == ["r"]:
                cases, div = {"average": joined[0]}, {"average": n}
            else:
                cases = R.targeted_cases(joined, [int(k) - 1 for k in k_rand], spec.norm)
                div = {"average": n * (m - 1), "best": n, "worst": n}
            runs_arrays.append({"spec": spec, "eps": e, "cases": cases, "divisor": div})

    main_runs = [r for r in runs_arrays if r["spec"].kind != BUDGET or eps_list is None]
    case_names = ["untargeted"] if not targeted else (["average"] if targets == "random" else
                                                       ["average", "best", "worst"])

    # ---- exact optima --------------------------------------------------------------------
    optima: dict[tuple[str, str], list[float]] = {}
    exact_summary: dict = {}
    if exact:
        optima, exact_summary = _exact(model, x, y, m, k_rand, batches, main_runs, case_names, targeted,
                                       targets, store, exact_time_limit, progress, log)

    # ---- records -------------------------------------------------------------------------
    out_runs: list[dict] = []
    ra_rows: list[dict] = []
    for case in case_names:
        for r in runs_arrays:
            spec, e = r["spec"], r["eps"]
            if case not in r["cases"]:
                continue
            arr = r["cases"][case]
            extra: dict = {}
            if e is not None:
                extra["eps"] = e
            elif spec.kind == BUDGET:
                extra["eps"] = "preset"
            if spec.untargeted_via_targets and not targeted:
                extra["via"] = "best target"
            if eps_list is not None and spec.kind != BUDGET:
                extra["robust_accuracy"] = R.robust_accuracy_min_norm(arr, spec.norm, eps_list)
            if eps_list is not None and spec.kind == BUDGET:
                extra["robust_accuracy"] = {R.fmt_eps(e): 1.0 - sum(arr["success"]) / max(n, 1)}
            rec = R.record_from_arrays(arr, spec.name, spec.library, spec.norm, targeted, case,
                                       optimum=optima.get((spec.norm, case)),
                                       per_image_divisor=r["divisor"][case], extra=extra)
            out_runs.append(rec)
        # per-image best rows, per norm
        for norm in _norms(main_runs):
            group = [r for r in main_runs if r["spec"].norm == norm and case in r["cases"]]
            peers = [r for r in group if not r["spec"].team]
            for label, members in (("per-image-best", peers), ("per-image-best+team", group)):
                if len(members) < 2 or (label == "per-image-best+team" and len(members) == len(peers)):
                    continue
                arrs = [r["cases"][case] for r in members]
                best, won = R.per_image_best(arrs, norm)
                wins = {r["spec"].name: sum(1 for w in won if w == j) for j, r in enumerate(members)}
                extra = {"of": [r["spec"].name for r in members], "wins": wins}
                if eps_list is not None:
                    extra["robust_accuracy"] = R.robust_accuracy_min_norm(best, norm, eps_list)
                out_runs.append(R.record_from_arrays(
                    best, label, "-", norm, targeted, case, optimum=optima.get((norm, case)),
                    per_image_divisor=members[0]["divisor"][case], extra=extra))
        if eps_list is not None:
            ra_rows += _robust_rows(runs_arrays, case, eps_list, n)

    return {"runs": out_runs, "robust_accuracy": ra_rows, "exact": exact_summary, "skipped": skipped,
            "num_classes": m}


def _norms(runs) -> list[str]:
    out = []
    for r in runs:
        if r["spec"].norm not in out:
            out.append(r["spec"].norm)
    return out


def _robust_rows(runs_arrays, case, eps_list, n) -> list[dict]:
    rows = []
    broken: dict[str, dict[str, list[list[bool]]]] = {}  # norm -> eps -> per-attack broken flags
    for r in runs_arrays:
        spec, e = r["spec"], r["eps"]
        if case not in r["cases"]:
            continue
        arr = r["cases"][case]
        if spec.kind == BUDGET:
            if e is None:
                continue
            flags = {R.fmt_eps(e): [bool(s) for s in arr["success"]]}
        else:
            flags = {R.fmt_eps(x): [bool(s) and d <= x + 1e-6 for s, d in zip(arr["success"], arr[spec.norm])]
                     for x in eps_list}
        row = next((w for w in rows if w["attack"] == spec.name), None)
        if row is None:
            row = {"attack": spec.name, "library": spec.library, "case": case, "norm": spec.norm,
                   "kind": spec.kind, "accuracy": {}}
            rows.append(row)
        for ek, f in flags.items():
            row["accuracy"][ek] = 1.0 - sum(f) / max(n, 1)
            broken.setdefault(spec.norm, {}).setdefault(ek, []).append(f)
    for norm, by_eps in broken.items():
        rows.append({"attack": "any attack", "library": "-", "case": case, "norm": norm, "kind": "per-image",
                     "accuracy": {ek: R.robust_accuracy_any(fl) for ek, fl in by_eps.items()}})
    return rows


def _exact(model, x, y, m, k_rand, batches, main_runs, case_names, targeted, targets, store,
           time_limit, progress, log):
    """Per-image optima for the suite's norms where computable; cached in the sidecar per batch."""
    from .. import exact as X

    optima: dict[tuple[str, str], list[float]] = {}
    summary: dict = {}
    shape = tuple(x.shape[1:])
    n = len(x)
    for norm in _norms(main_runs):
        if norm not in ("l2", "linf") or not X.applicable(model, shape, norm):
            log(f"exact: no {norm} optimum for this model (affine models or ReLU networks only)")
            continue
        # which optimum each case needs: the untargeted one (untargeted, best), the random target's (average)
        kinds = {}
        for case in case_names:
            kinds[case] = "untargeted" if case in ("untargeted", "best") else ("random" if case == "average" else None)
        for kind in sorted({k for k in kinds.values() if k}):
            # eps_max for the solver: the least distance (in this norm) of any successful attack on that problem
            src_case = "untargeted" if not targeted else ("best" if kind == "untargeted" else "average")
            ub = [math.inf] * n
            for r in main_runs:
                arr = r["cases"].get(src_case)
                if arr is None:
                    continue
                for i in range(n):
                    if arr["success"][i]:
                        ub[i] = min(ub[i], arr[norm][i])
            vals: list[dict] = []
            for b, (lo, hi) in enumerate(batches):
                key = f"exact|{norm}|{kind}|b={b}"
                val = store.get(key)
                if val is None:
                    tb = None if kind == "untargeted" else (y[lo:hi] + k_rand[lo:hi].to(y.device)) % m
                    em = torch.tensor([u * (1 + 1e-4) + 1e-6 if math.isfinite(u) else math.inf for u in ub[lo:hi]])
                    res = X.exact_optimum(model, x[lo:hi], y[lo:hi], norm, target=tb, eps_max=em,
                                          time_limit=time_limit, progress=progress)
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
    return optima, summary


# ------------------------------------------------------------------------------------------
# the whole command
# ------------------------------------------------------------------------------------------
def bench_document(meta: dict, result: dict) -> dict:
    """The JSON document: {"dataset","model","seed","command", ..., "runs": [...]}."""
    doc = dict(meta)
    doc["runs"] = result["runs"]
    if result.get("robust_accuracy"):
        doc["robust_accuracy"] = result["robust_accuracy"]
    if result.get("exact"):
        doc["exact"] = result["exact"]
    doc["skipped"] = result.get("skipped", [])
    return doc


def render(doc: dict) -> str:
    """Markdown: the runs table, robust accuracy and exact optimum summaries, skipped attacks."""
    title = f"{doc.get('suite', 'bench')} on {doc.get('dataset')} / {doc.get('model')} (n={doc.get('n')}, seed={doc.get('seed')})"
    out = [R.markdown_table(doc["runs"], title=title)]
    if doc.get("robust_accuracy"):
        out += ["", "Robust accuracy (share of the images not broken):", "",
                R.robust_accuracy_table(doc["robust_accuracy"])]
    if doc.get("exact"):
        out.append("")
    for k, v in (doc.get("exact") or {}).items():
        st = v["optimum"]
        out.append(f"- exact {k}: {v['statuses']}, verified {v['verified']}/{v['n']}, optimum median "
                   f"{R._fmt(st['median'])} mean {R._fmt(st['mean'])}")
    if doc.get("skipped"):
        out.append("")
    for s in doc.get("skipped", []):
        out.append(f"- skipped {s['attack']}: {s['reason']}")
    return "\n".join(out).rstrip() + "\n"
