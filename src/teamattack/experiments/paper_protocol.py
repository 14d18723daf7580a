"""The papers' protocol shared by experiments e1-e5 (SPEC 8): models, images, resume, file names.

- dataset -> the Table I network of seeds 000 / 001 (digits: the small CNN shipped with the package);
- N correctly classified test images drawn with the seed (bench.harness.select_images); CIFAR-10:
  among the first 1017 test images, all that are available here;
- every finished unit of work goes to a resume file next to the outputs
  (OUT/NAME-DATASET.partial.jsonl, bench.harness.Sidecar); a rerun of the same command skips it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..atomic import atomic_write_text
from ..bench import harness
from . import Context
from .common import zoo_model

DATASETS = ("digits", "mnist", "cifar10")
MODELS = {"digits": "digits-cnn", "mnist": "mnist-table1", "cifar10": "cifar10-table1"}
DEFAULT_DATASET = "mnist"

PSNR_NOTE = ("PSNR = 10 log10(1 / MSE) with pixels in [0, 1], the standard definition; the papers' "
             "values (40-90 dB) cannot come from it (docs/paper.md)")
DATA_NOTES = {
    "digits": "scikit-learn 8x8 digits, the fixed test third (599 images); digits-cnn, not a paper model",
    "mnist": "MNIST test set (10000 images); the Table I MNIST network (mnist-table1)",
    "cifar10": "CIFAR-10: only the first 1017 test images are available here, images drawn among "
               "those; the Table I CIFAR-10 network (cifar10-table1)",
}


@dataclass
class Setup:
    """The model and the images of one run."""

    dataset: str
    model_name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    images: list[int]          # indices into the test split
    n_test: int                # size of the test split available
    num_classes: int

    def meta(self) -> dict:
        return {"dataset": self.dataset, "model": self.model_name, "n": len(self.images),
                "n_test_available": self.n_test, "images": self.images, "data": DATA_NOTES[self.dataset],
                "psnr": PSNR_NOTE}


def dataset_of(ctx: Context) -> str:
    name = (ctx.dataset or DEFAULT_DATASET).lower()
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {ctx.dataset!r}")
    return name


def setup(ctx: Context, default_n: int | None, all_images: bool = False) -> Setup:
    """Model and N correctly classified, seeded test images (all of them: n=None or all_images)."""
    from .. import data

    dataset = dataset_of(ctx)
    model = zoo_model(MODELS[dataset], ctx.device)
    x, y = data.load(dataset, "test", root=ctx.data_root)
    x, y = x.to(ctx.device), y.to(ctx.device)
    n = None if all_images else (ctx.n if ctx.n is not None else default_n)
    xs, ys, idx = harness.select_images(model, x, y, n, ctx.seed)
    with torch.no_grad():
        m = int(model(xs[:1]).shape[-1])
    return Setup(dataset, MODELS[dataset], model, xs, ys, idx, len(y), m)


def model_only(ctx: Context) -> tuple[str, str, nn.Module]:
    dataset = dataset_of(ctx)
    return dataset, MODELS[dataset], zoo_model(MODELS[dataset], ctx.device)


def stem(name: str, dataset: str) -> str:
    """File stem of an experiment's outputs: NAME-DATASET."""
    return f"{name}-{dataset}"


def resume_file(ctx: Context, name: str, dataset: str, header: dict):
    """The resume file OUT/NAME-DATASET.partial.jsonl (ctx.fresh: start again; under torchrun each
    rank's share of it, `Context.resume_store`)."""
    path = ctx.out / f"{stem(name, dataset)}.partial.jsonl"
    side = ctx.resume_store(path, {"experiment": name, **header}, fresh=ctx.fresh)
    if side.units:
        ctx.log(f"{name}: resuming, {len(side.units)} finished units in {path}")
    return side


def header(s: Setup, **extra) -> dict:
    """What a resume file must match: model weights, seed, images (and the experiment's settings)."""
    return {"dataset": s.dataset, "model": s.model_name, "model_sha1": harness.model_fingerprint(s.model),
            "images": s.images, **extra}


def write_markdown(ctx: Context, name: str, dataset: str, text: str) -> str:
    path = ctx.png(f"{stem(name, dataset)}.md")
    atomic_write_text(path, text.rstrip() + "\n")
    return str(path)


def team_mode_default() -> str:
    """The mode `TEAM(model, norm=...)` runs when no mode is given (the engine's current default)."""
    from ..attacks import TEAM

    return TEAM(nn.Linear(1, 2).eval(), norm="l2").mode
