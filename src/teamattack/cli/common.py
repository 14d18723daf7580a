"""Options, validators, errors and helpers shared by the subcommands.

- Errors: :class:`CLIError` (exit 1, a runtime failure) and :class:`UsageError` (exit 2, bad usage or
  input) are printed by ``teamattack.cli.main`` as one line, ``teamattack CMD: error: MESSAGE``.
- Validators for argparse ``type=``: :func:`positive_int`, :func:`nonneg_int`, :func:`positive_float`,
  :func:`nonneg_float`, :func:`prob`, :func:`eps_list`, :func:`dataset_name`, :func:`device_name`;
  a bad value is a one-line usage error before any work.
- Models: :func:`load_model` (a zoo name, a weights file, or ``module:factory`` with ``--weights``),
  :func:`dataset_for` (``--dataset``, else the model's card; checked to fit the model).
- Outputs: :func:`check_outputs` tries every output path before the work; :func:`write_json` is atomic.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from pathlib import Path

import torch

from ..atomic import atomic_write_text, check_writable


class CLIError(Exception):
    """An expected failure, reported in one line with exit code ``code`` (1: a runtime failure)."""

    code = 1


class UsageError(CLIError):
    """Bad usage or bad input (unknown name, files that do not fit, unwritable path): exit code 2."""

    code = 2


# ------------------------------------------------------------------------------------------
# validators (argparse type=): ArgumentTypeError becomes "teamattack CMD: error: argument -n: ..."
# ------------------------------------------------------------------------------------------
def _number(text: str, cast):
    try:
        v = cast(text)
    except (TypeError, ValueError):
        kind = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: -n, --epochs, --batch-size, --steps, --threads)."""
    v = _number(text, int)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {v}")
    return v


def nonneg_int(text: str) -> int:
    """An integer >= 0 (seeds)."""
    v = _number(text, int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {v}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (budgets, learning rates, time limits, temperatures)."""
    v = _number(text, float)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {v:g}")
    return v


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (weight decay)."""
    v = _number(text, float)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {v:g}")
    return v


def prob(text: str) -> float:
    """A probability in [0, 1]."""
    v = _number(text, float)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {v:g}")
    return v


def eps_list(text: str) -> list[float]:
    """Comma-separated budgets, each a finite number > 0 (bench --eps 0.1,0.2)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("give one or more comma-separated numbers > 0")
    return [positive_float(p) for p in parts]


def positive_int_list(text: str) -> list[int]:
    """Comma-separated integers >= 1 (bench --suite speed --thread-counts 1,2)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("give one or more comma-separated integers >= 1")
    return [positive_int(p) for p in parts]


def dataset_name(text: str) -> str:
    """A dataset name (digits, mnist, cifar10; case and '-' / '_' ignored), in its canonical spelling."""
    from .. import data

    try:
        return data._check_name(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose one of {', '.join(data.DATASETS)}") from None


def device_name(text: str) -> str:
    """A torch device that exists here: cpu, cuda, cuda:N (CUDA checked now, not after loading data)."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available here (torch {torch.__version__}); "
                                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise argparse.ArgumentTypeError(f"{text!r}: unsupported device type; use cpu or cuda")
    return text


# ------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------
def add_data_options(p: argparse.ArgumentParser, dataset_default: str | None = None) -> None:
    p.add_argument("--dataset", default=dataset_default, type=dataset_name,
                   help="digits | mnist | cifar10 (default: the dataset named by the model's card)")
    p.add_argument("--data-root", default=None,
                   help="folder with the datasets (default: $TEAMATTACK_DATA, else teamattack.data.default_root())")


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", type=positive_int, default=100, help="number of images (correctly classified, seeded choice)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the choice of images and targets")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    p.add_argument("--device", default=None, type=device_name, help="cpu | cuda | cuda:N (default: cuda if available)")


def add_common_options(p: argparse.ArgumentParser) -> None:
    """The options every subcommand has (added by build_parser; a subcommand's own wins)."""
    have = set(p._option_string_actions)  # noqa: SLF001 - argparse has no public way to ask
    g = p.add_argument_group("common options")
    if not {"-v", "--verbose"} & have:
        g.add_argument("-v", "--verbose", action="count", default=0,
                       help="more detail; on an error, the full traceback")
    if not {"-q", "--quiet"} & have:
        g.add_argument("-q", "--quiet", action="store_true", help="only the results and errors (no notes, no progress)")
    if "--no-progress" not in have:
        g.add_argument("--no-progress", action="store_true", help="no progress bars")
    if "--threads" not in have:
        g.add_argument("--threads", type=positive_int, default=None,
                       help="torch threads (default: $OMP_NUM_THREADS if set, else one per core)")
    if "--model" in have and "--weights" not in have:
        g.add_argument("--weights", default=None,
                       help="weights (.safetensors) for --model module:factory (or a zoo architecture name)")


def default_threads() -> int:
    """$OMP_NUM_THREADS when set to a positive integer, else the number of cores."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
        if n >= 1:
            return n
    except ValueError:
        pass
    return os.cpu_count() or 1


def progress(args: argparse.Namespace) -> bool:
    """Whether to show progress bars (off with --no-progress or -q)."""
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


def note(args: argparse.Namespace, message: str) -> None:
    """A note on stderr (silent with -q)."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def command_line() -> str:
    return "teamattack " + " ".join(sys.argv[1:])


# ------------------------------------------------------------------------------------------
# checks before the work
# ------------------------------------------------------------------------------------------
# options naming a file the command writes; `--out` and `--plot` are files too, except for the
# commands FOLDERS names (there they are folders)
OUTPUT_FILES = ("json", "markdown", "html", "save_adv", "sidecar", "out", "plot")
FOLDERS = {"out": ("reproduce",), "plot": ("bench",)}


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path of the command can be written (folder created, a temporary file made
    there and removed), and --data-root exists: UsageError otherwise, before any work."""
    for name in OUTPUT_FILES:
        path = getattr(args, name, None)
        if not path:
            continue
        folder = getattr(args, "command", None) in FOLDERS.get(name, ())
        try:
            check_writable(path, folder=folder)
        except OSError as err:
            why = err.strerror or str(err)
            raise UsageError(f"cannot write --{name.replace('_', '-')} {path}: {why}") from None
    root = getattr(args, "data_root", None)
    if root and not Path(root).expanduser().is_dir():
        raise UsageError(f"--data-root {root}: no such folder")


# ------------------------------------------------------------------------------------------
# models and datasets
# ------------------------------------------------------------------------------------------
def _load_weights(model: torch.nn.Module, weights: str | os.PathLike) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..zoo.registry import IntegrityError

    if not Path(weights).is_file():
        raise UsageError(f"--weights {weights}: no such file")
    try:
        state = load_file(str(weights), device="cpu")
    except SafetensorError as err:
        raise IntegrityError(f"{weights}: not a readable safetensors file ({err})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UsageError(f"{weights} does not fit the model: {' '.join(str(err).split())[:300]}") from None


def load_model(spec: str, weights: str | None = None, dev: torch.device | str | None = None) -> torch.nn.Module:
    """The model named by --model, in eval mode on ``dev``.

    ``spec``: a zoo name or weights file (teamattack.zoo.load); a zoo architecture name with
    ``weights`` (that architecture with those weights); or ``module:factory`` (imported and called
    with no arguments; must return a torch.nn.Module), with ``weights`` loaded into it when given.
    """
    from .. import zoo

    if ":" in spec and not Path(spec).exists():
        mod_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(mod_name)
        except ImportError as err:
            raise UsageError(f"--model {spec}: cannot import {mod_name} ({err})") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise UsageError(f"--model {spec}: {mod_name} has no callable {attr!r}")
        try:
            model = factory()
        except Exception as err:  # noqa: BLE001 - the user's code: report it in one line
            raise UsageError(f"--model {spec}: {attr}() failed: {type(err).__name__}: {err}") from None
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"--model {spec}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
        if weights:
            _load_weights(model, weights)
        model.card = {}  # type: ignore[attr-defined]
    elif weights:
        if spec not in zoo.ARCHITECTURES:
            raise UsageError(f"--weights goes with --model module:factory or a zoo architecture "
                             f"({', '.join(zoo.ARCHITECTURES)}); got --model {spec}")
        model = zoo.build(spec)
        _load_weights(model, weights)
        model.card = {"arch": spec, "dataset": zoo.dataset_of(spec)}  # type: ignore[attr-defined]
    else:
        model = zoo.load(spec)
    if dev is not None:
        model = model.to(dev)
    return model.eval()


def dataset_for(model: torch.nn.Module, given: str | None, model_name: str = "the model") -> str:
    """--dataset if given, else the dataset of the model's card; checked to fit the model's input."""
    from .. import data

    card = getattr(model, "card", None) or {}
    card_ds = card.get("dataset")
    dataset = given or card_ds
    if dataset is None:
        raise UsageError(f"--dataset is needed: {model_name} has no card naming its dataset")
    dataset = data._check_name(dataset)
    if card_ds is not None and data.input_shape(card_ds) != data.input_shape(dataset):
        raise UsageError(f"{model_name} takes {card_ds} inputs {data.input_shape(card_ds)}, not {dataset} "
                         f"{data.input_shape(dataset)}; drop --dataset or give --dataset {card_ds}")
    if card_ds is None:  # a user's model: try one image of the dataset's shape
        shape = data.input_shape(dataset)
        p = next(iter(model.parameters()), None)
        x = torch.zeros(1, *shape, device=p.device if p is not None else "cpu",
                        dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as err:  # noqa: BLE001 - the user's model: report it in one line
            raise UsageError(f"{model_name} does not take {dataset} inputs {shape}: {type(err).__name__}: "
                             f"{' '.join(str(err).split())[:200]}") from None
        if not torch.is_tensor(out) or out.dim() != 2 or out.shape[1] != data.num_classes(dataset):
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise UsageError(f"{model_name} must output (batch, {data.num_classes(dataset)}) logits for {dataset}; "
                             f"got {got}")
    return dataset


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Atomic write (teamattack.atomic): a crash never leaves a half-written file behind."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
