"""`teamattack` command line: one module per subcommand, each with `register(subparsers)`.

Each module's `register` adds its parser and sets `func` (called with the parsed args).
`build_parser` gives every subcommand the same frame: help texts with their defaults, the common
options (-v/-q, --no-progress, --threads, and --weights where there is --model; cli/common.py) and
one-line usage errors. `main` checks the output paths and --data-root before the work, sets the
torch threads, and prints the library's expected errors in one line,
`teamattack CMD: error: MESSAGE`, with exit code 2 (usage / bad input) or 1 (runtime failure);
`-v` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ["demo", "train", "evaluate", "attack", "bench", "exact", "reproduce", "report"]
SUBCOMMANDS.append("distill")  # defensive distillation (issue 14)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless its help already says it, or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or any(action.default is v for v in (None, False, argparse.SUPPRESS)) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter that keeps the description's and epilog's line breaks."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: `teamattack CMD: error: ...` (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Subcommands:
    """The subparsers action as the modules see it: each parser gets the project's formatter."""

    def __init__(self, action) -> None:
        self._action = action
        self.parsers: list[argparse.ArgumentParser] = []

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        fmt = kwargs.get("formatter_class")
        kwargs["formatter_class"] = RawHelpFormatter if fmt is argparse.RawDescriptionHelpFormatter else (fmt or HelpFormatter)
        p = self._action.add_parser(name, **kwargs)
        self.parsers.append(p)
        return p


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from .common import add_common_options

    parser = Parser(
        prog="teamattack",
        description="TEAM second-order adversarial attacks, peers side by side, and the papers' experiments.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"teamattack {__version__}")
    sub = _Subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for name in SUBCOMMANDS:
        importlib.import_module(f"teamattack.cli.{name}").register(sub)
    for p in sub.parsers:
        add_common_options(p)
    return parser


def _one_line(err: BaseException) -> str:
    """The first line of the message (a trailing "Looked in:" dropped, the data-root line kept)."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    first = lines[0]
    if first.endswith(":") and ". " in first:
        first = first[: first.rindex(". ") + 1]
    first += "".join(" " + ln for ln in lines[1:] if ln.startswith("Data root:"))
    return first + (" (-v for details)" if len(lines) > 1 else "")


def _expected_errors() -> tuple[tuple[type[BaseException], int], ...]:
    """(error class, exit code) the CLI reports in one line, most specific first."""
    from ..bench.records import ResumeMismatch
    from ..bench.suites import SuiteError
    from ..data.readers import UnsafeDataError
    from ..validation import InputError
    from ..zoo.registry import IntegrityError
    from ..zoo.train import CheckpointError
    from .common import CLIError

    import torch

    return ((CLIError, -1), (InputError, 2), (SuiteError, 2), (ResumeMismatch, 2), (IntegrityError, 2),
            (UnsafeDataError, 2), (CheckpointError, 2), (FileNotFoundError, 2), (torch.OutOfMemoryError, 1),
            (OSError, 1), (ValueError, 2))


def main(argv: list[str] | None = None) -> int:
    from ..memory import tune_malloc_once
    from .common import check_outputs, default_threads

    args = build_parser().parse_args(argv)
    prog = f"teamattack {args.command}"
    tune_malloc_once()
    import torch

    threads_before = torch.get_num_threads()  # restored on return (main may run inside a test process)
    torch.set_num_threads(args.threads or default_threads())
    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is saved where the command writes it", file=sys.stderr)
        return 130
    except Exception as err:
        for cls, code in _expected_errors():
            if isinstance(err, cls):
                break
        else:
            raise
        if getattr(args, "verbose", 0):
            raise
        code = getattr(err, "code", 2) if code == -1 else code
        if isinstance(err, torch.OutOfMemoryError):
            msg = "out of memory (try a smaller --batch-size or -n)"
        else:
            msg = _one_line(err)
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return code
    finally:
        torch.set_num_threads(threads_before)
