"""Reproducible experiments: a registry `name -> Experiment(function, help, default n)`.

Each experiment is a function `func(ctx: Context) -> dict` that writes its PNGs under `ctx.out` and
returns a JSON-able dict; `teamattack reproduce NAME` runs it and writes that dict (plus the
command line, seed, device, wall time) to the `--json` path. New experiments join with

    from teamattack.experiments import Context, register

    @register("e1-objectives", "paper 001 Tables II-III: ...", default_n=100)
    def e1(ctx: Context) -> dict: ...

and by adding their module to `MODULES` below (imported by `load_all()`).
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..bench.distributed import Shard

# modules whose import registers experiments (E1-E7 add theirs here)
MODULES = ("teamattack.experiments.math_paper", "teamattack.experiments.theorems",
           "teamattack.experiments.paper_tables", "teamattack.experiments.paper_figures",
           "teamattack.experiments.distillation", "teamattack.experiments.adversarial_training")


@dataclass
class Context:
    """What every experiment receives: the common options of `teamattack reproduce`."""

    n: int | None = None          # number of images; None = the experiment's default
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data_root: str | None = None
    out: Path = field(default_factory=lambda: Path("results"))
    progress: bool = True
    dataset: str | None = None    # digits | mnist | cifar10 (experiments that take one); None = theirs
    fresh: bool = False           # discard saved partial results instead of resuming
    skip: tuple[str, ...] = ()    # attacks to leave out (experiments with peers)
    batch_size: int | None = None  # images per attack call and per unit of work (None: the experiment's)
    args: object | None = None    # the parsed command line (experiment-specific options, e.g. e6's)
    shard: Shard = field(default_factory=lambda: _one_process())  # this process's share under torchrun
    _stores: list = field(default_factory=list, repr=False)
    _scratch: Path | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """Whether this process reports and writes files (one process, or rank 0 under torchrun)."""
        return self.shard.is_main

    def n_or(self, default: int) -> int:
        return default if self.n is None else int(self.n)

    def log(self, *msg: object) -> None:
        if self.is_main:
            print(*msg, flush=True)

    def png(self, name: str) -> Path:
        """Where to write the output file `name`: under `out` (other ranks under torchrun compute the
        same figures and tables into a private scratch folder that `finish` removes)."""
        if not self.is_main:
            import tempfile

            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix=f"teamattack-rank{self.shard.rank}-"))
            return self._scratch / name
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name

    def resume_store(self, path: str | Path, header: dict, fresh: bool = False):
        """The resume file `path` of finished units (teamattack.bench.harness.Sidecar); under torchrun
        each rank's share (bench/distributed.py's ShardStore). Closed by `finish`."""
        from ..bench import distributed

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        store = distributed.open_store(path, header, self.shard, fresh=fresh)
        self._stores.append(store)
        return store

    def finish(self) -> None:
        """After the experiment: shard files of the resume stores removed, scratch folder too."""
        from ..bench import distributed

        for store in self._stores:
            distributed.finish(store)
        self._stores.clear()
        if self._scratch is not None:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def tqdm(self, iterable=None, **kw):
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=not self.progress, file=sys.stderr, leave=False, **kw)


def _one_process() -> Shard:
    from ..bench.distributed import Shard

    return Shard()


@dataclass(frozen=True)
class Experiment:
    name: str
    func: Callable[[Context], dict]
    help: str
    default_n: int | None
    n_means: str = "images"
    datasets: tuple[str, ...] | None = None   # the --dataset values it takes (None: its own data)
    shards: bool = False   # splits its images over torchrun's processes (its attacks run through bench)

    def json_name(self, dataset: str | None) -> str:
        return f"{self.name}-{dataset}.json" if self.datasets and dataset else f"{self.name}.json"


REGISTRY: dict[str, Experiment] = {}


def register(name: str, help: str, default_n: int | None = None, n_means: str = "images",
             datasets: tuple[str, ...] | None = None, shards: bool = False):
    """Decorator adding `func(ctx) -> dict` to the registry under `name` (datasets: --dataset values;
    shards: the experiment runs under torchrun, its images split over the ranks)."""

    def deco(func: Callable[[Context], dict]) -> Callable[[Context], dict]:
        if name in REGISTRY and REGISTRY[name].func is not func:
            raise ValueError(f"experiment {name!r} registered twice")
        REGISTRY[name] = Experiment(name, func, help, default_n, n_means, datasets, shards)
        return func

    return deco


def load_all() -> dict[str, Experiment]:
    for mod in MODULES:
        importlib.import_module(mod)
    return REGISTRY


def get(name: str) -> Experiment:
    load_all()
    if name not in REGISTRY:
        raise KeyError(f"unknown experiment {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def run(name: str, ctx: Context | None = None) -> dict:
    """Run a registered experiment in-process (what the CLI does, without writing JSON)."""
    ctx = ctx or Context()
    try:
        return get(name).func(ctx)
    finally:
        ctx.finish()


__all__ = ["MODULES", "REGISTRY", "Context", "Experiment", "get", "load_all", "register", "run"]
