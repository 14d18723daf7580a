"""Options and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch


def add_data_options(p: argparse.ArgumentParser, dataset_default: str | None = "digits") -> None:
    p.add_argument("--dataset", default=dataset_default, help="digits | mnist | cifar10")
    p.add_argument("--data-root", default=None,
                   help="folder with the datasets (default: $TEAMATTACK_DATA)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", type=int, default=100, help="number of images (correctly classified, seeded choice)")
    p.add_argument("--seed", type=int, default=0, help="seed for the choice of images and targets")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")


def device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def command_line() -> str:
    return "teamattack " + " ".join(sys.argv[1:])


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Atomic write: a crash never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
