"""`teamattack reproduce NAME | all`: run the papers' experiments, write their JSON, Markdown and PNGs."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import UsageError, command_line, device, device_name, nonneg_int, positive_int, progress, write_json


def _epilog() -> str:
    from ..experiments import load_all

    lines = ["experiments (NAME; `all` runs every one and writes OUT/index.md):"]
    for name, e in sorted(load_all().items()):
        default = "all" if e.default_n is None else e.default_n
        lines.append(f"  {name:<16} {e.help}")
        data = f"; --dataset {'|'.join(e.datasets)}" if e.datasets else ""
        shards = "; shards under torchrun" if e.shards else ""
        lines.append(f"  {'':<16} -n: {e.n_means}, default {default}{data}{shards}")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="reproduce a paper experiment (JSON + Markdown + PNG), or all of them",
        description="Run one registered experiment (or `all`); PNGs and tables go to --out, results to --json. "
                    "Finished work is saved in OUT/NAME-DATASET.partial.jsonl: rerunning resumes. Under "
                    "`torchrun --nproc-per-node K -m teamattack.cli reproduce NAME ...` the experiments marked "
                    "below split their images over the K processes; rank 0 writes the same files as one process.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from ..experiments import REGISTRY

    p.add_argument("name", metavar="NAME", choices=sorted(REGISTRY) + ["all"], help="experiment (listed below) or all")
    p.add_argument("-n", type=positive_int, default=None, help="number of images (meaning and default: per experiment, below)")
    p.add_argument("--dataset", default=None, choices=["digits", "mnist", "cifar10"],
                   help="for the paper experiments e1-e5 (default mnist; the others use their own data)")
    p.add_argument("--out", default="runs", help="folder for the PNGs and tables (default: runs)")
    p.add_argument("--json", default=None, help="results JSON (default: OUT/NAME[-DATASET].json; not with all)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the choice of images")
    p.add_argument("--device", default=None, type=device_name, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--data-root", default=None, help="folder with the datasets (default: $TEAMATTACK_DATA)")
    p.add_argument("--skip", default="", help="comma-separated attacks to leave out (e1, e2: e.g. cw-9x1000)")
    p.add_argument("--fresh", action="store_true", help="discard saved partial results and start again")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="e1, e2, e6: images per unit of work (default 100; 300 on CUDA for e6); under torchrun "
                        "the units are split over the processes, so choose at most N / K")
    # e6-distillation's options (--cache and --epochs also e7's)
    e6 = p.add_argument_group("e6-distillation / e7-adversarial-training")
    e6.add_argument("--temperatures", default=None, help="comma-separated G values (default 1,2,4,6,8,10,20,40,60,80,100)")
    e6.add_argument("--cache", default=None, help="folder of trained models to reuse (default OUT/e6-cache, OUT/e7-cache)")
    e6.add_argument("--epochs", type=positive_int, default=None, help="epochs of each training (default per dataset)")
    e6.add_argument("--train-n", type=positive_int, default=None,
                    help="e7: training images attacked for the offline protocol (default per dataset)")
    e6.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=None,
                    help="e7: start every model from the natural zoo model's weights (a tenth of its learning rate) "
                         "instead of training from scratch (default: per dataset, on for cifar10)")
    e6.add_argument("--attacks", default=None, help="comma-separated attack names to run (default all)")
    e6.add_argument("--skip-attacks", default=None, help="comma-separated attack names to leave out")
    e6.add_argument("--no-beyond", action="store_true", help="skip the min-norm / objective study on the highest G")
    p.set_defaults(func=run)


def _context(args: argparse.Namespace, dev=None, shard=None):
    from ..bench.distributed import Shard
    from ..experiments import Context

    shard = shard or Shard()
    return Context(n=args.n, seed=args.seed, device=dev if dev is not None else device(args.device),
                   data_root=args.data_root, out=Path(args.out), progress=progress(args) and shard.is_main,
                   shard=shard, batch_size=args.batch_size,
                   dataset=args.dataset, fresh=args.fresh,
                   skip=tuple(a.strip() for a in args.skip.split(",") if a.strip()), args=args)


def _run_one(exp, ctx, args, json_path: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    try:
        result = exp.func(ctx)
    finally:
        ctx.finish()
    wall = time.perf_counter() - t0
    payload = {"experiment": exp.name, "description": exp.help, "command": command_line(),
               "seed": args.seed, "device": str(ctx.device), "n_requested": args.n,
               "wall_seconds": wall, **result}
    write_json(json_path, payload)
    return payload, wall


def run(args: argparse.Namespace) -> int:
    from ..experiments import get

    if args.name == "all":
        return run_all(args)
    exp = get(args.name)
    if args.dataset and not exp.datasets:
        raise UsageError(f"{exp.name} runs on its own data; it takes no --dataset")
    # under torchrun the experiments that shard run their attacks through bench.harness.run_bench,
    # which splits the images over the ranks (bench/distributed.py; training shares each batch); the
    # rest of the experiment runs on every rank alike; only rank 0 writes files and reports
    from ..bench import distributed

    if distributed.launched() and not exp.shards:
        raise UsageError(f"{exp.name} does not split its work over processes; run it without torchrun "
                         f"(experiments that do: {', '.join(sorted(e.name for e in _sharding()))})")
    shard, dev = distributed.init_from_env(device(args.device))
    ctx = _context(args, dev, shard)
    path = Path(args.json) if args.json else ctx.out / exp.json_name(args.dataset or (exp.datasets and "mnist"))
    try:
        if not shard.is_main:
            try:
                exp.func(ctx)
            finally:
                ctx.finish()
            return 0
        _, wall = _run_one(exp, ctx, args, path)
    finally:
        distributed.shutdown()
    print(f"{exp.name}: done in {wall:.1f} s; JSON {path}; tables and PNGs in {ctx.out}/")
    return 0


def run_all(args: argparse.Namespace) -> int:
    """Every registered experiment in turn (a failure is reported and the others go on), then OUT/index.md."""
    from tqdm.auto import tqdm

    from ..experiments import load_all
    from ..experiments.index import Entry, files_in, write_index

    from ..bench import distributed

    if args.json:
        raise UsageError("reproduce all: --json names one file; the files go to --out")
    if distributed.launched():
        raise UsageError("reproduce all runs in one process; under torchrun name one experiment that shards: "
                         + ", ".join(sorted(e.name for e in _sharding())))
    ctx = _context(args)
    entries = []
    exps = sorted(load_all().values(), key=lambda e: e.name)
    bar = tqdm(exps, desc="reproduce all", unit="experiment", disable=not progress(args), file=sys.stderr)
    for exp in bar:
        bar.set_postfix_str(exp.name)
        path = ctx.out / exp.json_name(args.dataset or (exp.datasets and "mnist"))
        t0 = time.perf_counter()
        try:
            payload, wall = _run_one(exp, ctx, args, path)
        except Exception as err:  # noqa: BLE001 - one failed experiment must not stop the others
            entries.append(Entry(exp.name, exp.help, seconds=time.perf_counter() - t0,
                                 error=f"{type(err).__name__}: {err}".splitlines()[0]))
            print(f"{exp.name}: failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        entries.append(Entry(exp.name, exp.help, json=str(path), markdown=next(files_in(payload, ".md"), None),
                             pngs=list(files_in(payload, ".png")), seconds=wall))
    index = write_index(ctx.out / "index.md", entries, command_line())
    failed = [e.name for e in entries if e.error]
    print(f"reproduce all: {len(entries) - len(failed)} of {len(entries)} done; index {index}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _sharding():
    from ..experiments import load_all

    return [e for e in load_all().values() if e.shards]
