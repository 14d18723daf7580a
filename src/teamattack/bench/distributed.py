"""Sharding a benchmark over processes with torch.distributed (gloo on CPU, nccl on CUDA).

    torchrun --nproc-per-node 4 -m teamattack.cli bench --suite untargeted-l2 ... --json out.json

Every rank loads the same images and plans the same units; rank r runs the units of the batches
b with b % world == r (so the images are split over the ranks, each unit still seeded from its own
key), the per-unit arrays are gathered on every rank, and the records are assembled from them:
identical to one process's (timings aside). Only rank 0 prints and writes files.

Resume: each rank r > 0 appends its finished units to its own shard file (`SIDECAR.rank<r>`),
rank 0 to the sidecar itself; rank 0
copies every gathered unit into the main sidecar after each gather and removes the shard files when
the run is over (`ShardStore.finish`); at the start of any later run (sharded or not, with any
number of ranks) leftover shard files are folded into the sidecar, so an interrupted sharded run
resumes. A store may serve several gathers (`teamattack reproduce` runs one per table group).

Training (`teamattack train`, plain or adversarial) joins the process group with `init_from_env`
the same way and shares each batch over the ranks (teamattack.zoo.train, "Several processes").
"""
from __future__ import annotations

import datetime
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import stages


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Shard:
    """This process's share of a benchmark: rank `rank` of `world`."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, unit: stages.Unit) -> bool:
        return unit.batch % self.world == self.rank

    # -- collectives (no-ops for one process) --------------------------------------------
    def all_gather(self, obj: object) -> list[object]:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        parts: list[object] = [None] * self.world
        dist.all_gather_object(parts, obj)
        return parts

    def broadcast(self, obj: object) -> object:
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # -- the benchmark's stages --------------------------------------------------------------
    def execute(self, plan: stages.Plan, model, x, y, store: stages.Store, *, progress: bool = True,
                keep_points: bool = False, on_unit: Callable[[str], None] | None = None) -> dict:
        """This rank's units, then every rank's arrays gathered (the same dict on every rank)."""
        local = stages.execute(plan, model, x, y, store, owns=self.owns, progress=progress and self.is_main,
                               keep_points=keep_points, on_unit=on_unit)
        merged: dict = {}
        for part in self.all_gather(local):
            merged.update(part)
        if isinstance(store, ShardStore):
            store.absorb(merged if self.is_main else {})
        return merged

    def on_rank0(self, fn: stages.ExactFunction) -> stages.ExactFunction:
        """`fn` computed on rank 0 only, its outcome sent to every rank."""

        def run(plan: stages.Plan, values) -> stages.ExactOutcome:
            err, out = None, None
            if self.is_main:
                try:
                    out = fn(plan, values)
                except Exception as e:  # noqa: BLE001 - re-raised on every rank below
                    err = f"{type(e).__name__}: {e}"
            err, out = self.broadcast((err, out))
            if err is not None:
                raise RuntimeError(f"exact stage failed on rank 0: {err}")
            return out

        return run


def current() -> Shard | None:
    """The shard of this process when a torch.distributed process group is up, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Shard(dist.get_rank(), dist.get_world_size())
    return None


def init_from_env(device: torch.device) -> tuple[Shard, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT).

    Backend nccl when `device` is CUDA (then each rank takes cuda:LOCAL_RANK), gloo otherwise.
    One process (no launcher): Shard(0, 1) and `device` unchanged. The collective timeout is
    $TEAMATTACK_DIST_TIMEOUT seconds (default 6 hours: ranks wait for the slowest one's units).
    """
    if not launched():
        return Shard(), device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("TEAMATTACK_DIST_TIMEOUT", 6 * 3600)))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Shard(dist.get_rank(), dist.get_world_size()), device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------
# resume with shards
# ------------------------------------------------------------------------------------------
def shard_files(path: str | os.PathLike) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(glob.escape(str(path)) + ".rank*"))]


class ShardStore:
    """A rank's view of the resume files: finished units from the main sidecar and its own shard
    file. New units go to its shard file (rank 0's own file is the main sidecar); after each gather `absorb` copies every rank's units into
    the main sidecar (rank 0, its only writer); `finish` removes the shard files at the end."""

    def __init__(self, main, own, path: str | os.PathLike, is_main: bool) -> None:
        self.main, self.own, self.path, self.is_main = main, own, Path(path), is_main

    @property
    def units(self) -> dict[str, dict]:
        return {**self.main.units, **self.own.units}

    def get(self, key: str) -> dict | None:
        v = self.own.get(key)
        return v if v is not None else self.main.get(key)

    def put(self, key: str, value: dict) -> None:
        self.own.put(key, value)

    def absorb(self, values: dict) -> None:
        """After a gather: rank 0 copies the units it lacks into the main sidecar."""
        if self.is_main:
            for k, v in values.items():
                if self.main.get(k) is None:
                    self.main.put(k, v)

    def finish(self) -> None:
        """At the end of the run, after the last gather (no rank writes any more): rank 0 removes
        the shard files, whose units are all in the main sidecar by now."""
        if self.is_main:
            for f in shard_files(self.path):
                f.unlink()


def finish(store) -> None:
    """End a run's resume store: a ShardStore's shard files are removed (a Sidecar needs nothing)."""
    if isinstance(store, ShardStore):
        store.finish()


def fold_shards(main, path: str | os.PathLike, header: dict, fresh: bool = False) -> int:
    """Move the units of leftover shard files (an interrupted sharded run) into `main`; returns how many."""
    from .harness import Sidecar

    moved = 0
    for f in shard_files(path):
        if not fresh:
            for k, v in Sidecar(f, header).units.items():
                if main.get(k) is None:
                    main.put(k, v)
                    moved += 1
        f.unlink()
    return moved


def open_store(path: str | os.PathLike, header: dict, shard: Shard, fresh: bool = False):
    """The resume store of this rank: the main Sidecar for one process, else a ShardStore.

    Rank 0 opens (or, with `fresh`, restarts) the main sidecar and folds leftover shard files into
    it before any other rank reads it; a ResumeMismatch there is raised on every rank.
    """
    from .harness import ResumeMismatch, Sidecar

    main, err = None, None
    if shard.is_main:
        try:
            main = Sidecar(path, header, fresh=fresh)
            fold_shards(main, path, header, fresh=fresh)
        except ResumeMismatch as e:
            err = str(e)
    err = shard.broadcast(err)
    if err is not None:
        raise ResumeMismatch(err)
    if shard.world == 1:
        return main
    if not shard.is_main:
        main = Sidecar(path, header)
    own = main if shard.is_main else Sidecar(f"{path}.rank{shard.rank}", header)  # rank 0 writes the sidecar
    return ShardStore(main, own, path, shard.is_main)
