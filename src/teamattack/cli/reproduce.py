"""`teamattack reproduce NAME`: run one of the papers' experiments, write its JSON and PNGs."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import command_line, device, write_json


def _epilog() -> str:
    from ..experiments import load_all

    lines = ["experiments (NAME):"]
    for name, e in sorted(load_all().items()):
        default = "all" if e.default_n is None else e.default_n
        lines.append(f"  {name:<16} {e.help}")
        lines.append(f"  {'':<16} -n: {e.n_means}, default {default}")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="reproduce a paper experiment (JSON + PNG)",
        description="Run one registered experiment; PNGs go to --out, results to --json.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from ..experiments import REGISTRY

    p.add_argument("name", metavar="NAME", choices=sorted(REGISTRY), help="experiment (listed below)")
    p.add_argument("-n", type=int, default=None, help="number of images (meaning and default: per experiment, below)")
    p.add_argument("--out", default="runs", help="folder for the PNGs (default: runs)")
    p.add_argument("--json", default=None, help="results JSON (default: OUT/NAME.json)")
    p.add_argument("--seed", type=int, default=0, help="seed for the choice of images")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--data-root", default=None, help="folder with the datasets (default: $TEAMATTACK_DATA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # e6-distillation's options
    e6 = p.add_argument_group("e6-distillation")
    e6.add_argument("--dataset", default=None, help="digits | mnist | cifar10 (default digits)")
    e6.add_argument("--temperatures", default=None, help="comma-separated G values (default 1,2,4,6,8,10,20,40,60,80,100)")
    e6.add_argument("--cache", default=None, help="folder of distilled models to reuse (default OUT/e6-cache)")
    e6.add_argument("--epochs", type=int, default=None, help="epochs of each training (default per dataset)")
    e6.add_argument("--attacks", default=None, help="comma-separated attack names to run (default all)")
    e6.add_argument("--skip-attacks", default=None, help="comma-separated attack names to leave out")
    e6.add_argument("--no-beyond", action="store_true", help="skip the min-norm / objective study on the highest G")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import Context, get

    exp = get(args.name)
    if args.n is not None and args.n < 1:
        raise SystemExit("teamattack reproduce: -n must be >= 1")
    out = Path(args.out)
    ctx = Context(n=args.n, seed=args.seed, device=device(args.device), data_root=args.data_root, out=out,
                  progress=not args.no_progress, args=args)
    t0 = time.perf_counter()
    result = exp.func(ctx)
    wall = time.perf_counter() - t0
    payload = {"experiment": exp.name, "description": exp.help, "command": command_line(),
               "seed": args.seed, "device": str(ctx.device), "n_requested": args.n,
               "wall_seconds": wall, **result}
    path = Path(args.json) if args.json else out / f"{exp.name}.json"
    write_json(path, payload)
    print(f"{exp.name}: done in {wall:.1f} s; JSON {path}; PNGs in {out}/")
    return 0
