"""`teamattack` command line: one module per subcommand, each with `register(subparsers)`.

Each module's `register` adds its parser and sets `func` (called with the parsed args).
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ["demo", "train", "evaluate", "attack", "bench", "exact", "reproduce", "report"]
SUBCOMMANDS.append("distill")  # defensive distillation (issue 14)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teamattack",
        description="TEAM second-order adversarial attacks, peers side by side, and the papers' experiments.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"teamattack.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..memory import limit_fragmentation

    args = build_parser().parse_args(argv)
    limit_fragmentation()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is saved where the command writes it", file=sys.stderr)
        return 130
