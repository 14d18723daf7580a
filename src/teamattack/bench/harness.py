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

The stages (plan units -> execute -> assemble, and the optional exact stage) are in bench/stages.py;
sharding the units over processes with torch.distributed is in bench/distributed.py.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..data import predict
from . import distributed, stages
from . import records as R
from .distributed import Shard
from .records import SIDECAR_VERSION, ResumeMismatch, Sidecar  # noqa: F401 - the resume sidecar (bench/records.py)
from .seeds import derive_seed, random_targets, seed_everything  # noqa: F401 - part of the harness API
from .stages import BenchResult
from .suites import AttackSpec


# ------------------------------------------------------------------------------------------
# images, seeds, fingerprints
# ------------------------------------------------------------------------------------------
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


def model_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# the benchmark: plan -> execute -> (exact) -> assemble (bench/stages.py)
# ------------------------------------------------------------------------------------------
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
    shard: Shard | None = None,
) -> BenchResult:
    """Run `specs` on (x, y): a BenchResult (runs, robust_accuracy, exact, skipped, num_classes).

    targeted: the suite's mode. targets: "all" (every target once: average / best / worst) or
    "random" (only the seeded random target: average). eps_list: fixed-budget mode (robust accuracy
    at each eps; budget attacks run at each eps). exact: add ratio_to_optimum where the optimum of
    the model is computable (affine model: L2 / Linf; ReLU network: Linf MILP, L2 MIQP).
    shard: run only this process's share of the images (torch.distributed, bench/distributed.py;
    default: the process group's, when one is up); every rank returns the same merged result.
    on_unit(key) is called after every finished unit (tests use it to simulate an interruption).
    """
    config = stages.BenchConfig(targeted=targeted, seed=seed, batch_size=batch_size,
                                eps_list=tuple(eps_list) if eps_list else None, targets=targets, dataset=dataset)
    shard = shard if shard is not None else distributed.current()
    the_plan = stages.plan(model, x, y, specs, config, log=log)
    store = sidecar if sidecar is not None else stages.MemoryStore()
    keep = exact and _exact_applies(model, x, specs)  # the points are the exact solvers' starts
    if shard is None or shard.world == 1:
        values = stages.execute(the_plan, model, x, y, store, progress=progress, keep_points=keep,
                                on_unit=on_unit)
    else:
        values = shard.execute(the_plan, model, x, y, store, progress=progress, keep_points=keep,
                               on_unit=on_unit)
    exact_fn = None
    if exact:
        exact_fn = stages.exact_stage(model, x, y, store, time_limit=exact_time_limit, progress=progress, log=log)
        if shard is not None and shard.world > 1:
            exact_fn = shard.on_rank0(exact_fn)
    return stages.assemble(the_plan, values, exact=exact_fn)


def _exact_applies(model: nn.Module, x: torch.Tensor, specs: Sequence[AttackSpec]) -> bool:
    """Whether the exact stage can solve any norm of the suite on this model."""
    from .. import exact as X

    return any(X.applicable(model, tuple(x.shape[1:]), n) for n in {s.norm for s in specs})


# ------------------------------------------------------------------------------------------
# the whole command
# ------------------------------------------------------------------------------------------
def bench_document(meta: dict, result: BenchResult) -> dict:
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
