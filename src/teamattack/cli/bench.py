"""`teamattack bench`: every attack of a suite on the same N correctly classified images.

    teamattack bench --dataset mnist --model mnist-table1 --suite untargeted-l2 -n 500 --seed 0 \
        --json out.json [--attacks a,b,c] [--batch-size 100] [--eps 0.1,0.2] [--markdown out.md] [--exact] \
        [--plot DIR]

Finished work is appended to OUT.json.partial.jsonl as it completes; rerunning the same command
after an interruption resumes from there (see docs/bench.md). Under `torchrun --nproc-per-node K -m
teamattack.cli bench ...` the images are split over K processes and rank 0 writes the same JSON.
"""
from __future__ import annotations

import sys

from ..atomic import atomic_write_text
from .common import (
    UsageError,
    add_data_options,
    add_run_options,
    command_line,
    dataset_for,
    device,
    eps_list,
    load_model,
    positive_float,
    positive_int,
    positive_int_list,
    progress,
    write_json,
)


def register(sub) -> None:
    from ..bench.suites import SUITES

    p = sub.add_parser(
        "bench", help="run a suite of attacks side by side (resumable), print a table, write JSON",
        description="Run every attack of a suite on the same N correctly classified test images (seeded). "
                    "Targeted suites report the average (seeded random target), best and worst cases. "
                    "Results are saved per batch next to --json and a rerun resumes.",
    )
    add_data_options(p)
    p.add_argument("--model", required=True,
                   help="zoo name, weights file, or module:factory (with --weights)")
    p.add_argument("--suite", required=True, choices=sorted(SUITES), help="the list of attacks")
    add_run_options(p)
    p.add_argument("--attacks", default=None, help="comma-separated subset of the suite (or peer preset names)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per attack call")
    p.add_argument("--eps", default=None, type=eps_list,
                   help="fixed-budget mode: comma-separated eps values; robust accuracy at each (budget "
                        "attacks run at each eps; minimum-norm attacks: distance <= eps counts as broken)")
    p.add_argument("--targets", choices=["all", "random"], default="all",
                   help="targeted suites: run every target (average/best/worst, default) or only the random one")
    p.add_argument("--markdown", default=None, help="also write the table here")
    p.add_argument("--exact", action="store_true",
                   help="add ratio_to_optimum where the optimum is computable (affine model: L2/Linf; ReLU network: Linf MILP, L2 MIQP)")
    p.add_argument("--exact-time-limit", type=positive_float, default=60.0, help="MILP time limit per image, seconds")
    p.add_argument("--sidecar", default=None, help="resume file (default: JSON path + .partial.jsonl)")
    p.add_argument("--fresh", action="store_true", help="discard saved partial results and start again")
    p.add_argument("--thread-counts", type=positive_int_list, default=[1, 2],
                   help="--suite speed: comma-separated torch thread counts to time")
    p.add_argument("--repeats", type=positive_int, default=2, help="--suite speed: alternating runs per attack")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write PNGs here: the robustness curve (accuracy vs eps per attack, from the per-image "
                        "minimum-norm distances) and the distance distributions, per norm and case")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench import distributed
    from ..bench.suites import SuiteError, get_suite

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    try:
        specs, targeted = get_suite(args.suite, attacks)
    except SuiteError as e:
        raise UsageError(str(e)) from None
    if args.suite == "speed":  # wall time against the gradient floor (teamattack.bench.speed)
        from ..bench.speed import run_cli

        return run_cli(args, specs)
    eps_values = args.eps
    # under torchrun: this process's rank (gloo on CPU, nccl on CUDA, cuda:LOCAL_RANK)
    shard, dev = distributed.init_from_env(device(args.device))
    try:
        return _run(args, specs, targeted, eps_values, shard, dev)
    finally:
        distributed.shutdown()


def _run(args, specs, targeted, eps_list, shard, dev) -> int:
    """The benchmark on this process's shard (the whole of it for one process); rank 0 reports."""
    from ..bench import distributed, harness

    def log(s: str) -> None:
        if shard.is_main and not args.quiet:
            print(s, file=sys.stderr)

    model = load_model(args.model, args.weights, dev)
    dataset = dataset_for(model, args.dataset, args.model)
    x, y, idx = harness.load_images(dataset, model, args.n, args.seed, args.data_root, dev)
    meta = {"dataset": dataset, "model": args.model, "seed": args.seed, "command": command_line(),
            "suite": args.suite, "targeted": targeted, "n": len(idx), "batch_size": args.batch_size,
            "targets": args.targets if targeted else None, "eps": eps_list, "images": idx}
    store = None
    side_path = args.sidecar or (args.json + ".partial.jsonl" if args.json else None)
    if side_path:
        header = {"dataset": dataset, "model": args.model, "model_sha1": harness.model_fingerprint(model),
                  "seed": args.seed, "n": len(idx), "batch_size": args.batch_size, "images": idx}
        store = distributed.open_store(side_path, header, shard, fresh=args.fresh)  # ResumeMismatch: exit 2
        if store.units:
            log(f"resuming: {len(store.units)} finished units in {side_path}")
    result = harness.run_bench(
        model, x, y, specs, targeted=targeted, seed=args.seed, batch_size=args.batch_size,
        eps_list=eps_list, targets=args.targets, dataset=dataset, sidecar=store,
        exact=args.exact, exact_time_limit=args.exact_time_limit, progress=progress(args),
        log=log, shard=shard,
    )
    distributed.finish(store)
    if not shard.is_main:
        return 0
    doc = harness.bench_document(meta, result)
    if args.plot:
        from ..evaluation.plots import bench_plots

        doc["plots"] = [str(p) for p in bench_plots(doc, args.plot)]
        log(f"wrote {len(doc['plots'])} plots in {args.plot}")
    table = harness.render(doc)
    print(table)
    if args.json:
        write_json(args.json, doc)
        log(f"wrote {args.json}")
    if args.markdown:
        atomic_write_text(args.markdown, table)
    return 0
