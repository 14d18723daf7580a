"""Datasets as float32 NCHW tensors in [0, 1] with int64 labels, read without torchvision.

    x, y = teamattack.data.load("digits", "test")              # embedded, no files needed
    x, y = teamattack.data.load("mnist", "test", n=100, seed=0, root="/path/to/data")
    x, y = teamattack.data.correctly_classified(model, x, y)

Datasets: ``digits`` (sklearn's 8x8 digits, fixed 2/3-1/3 split), ``mnist`` (idx files),
``cifar10`` (official python batches, or the npz files; see :mod:`teamattack.data.readers`).
The data root is ``root=``, else ``$TEAMATTACK_DATA``, else :func:`default_root`
(``$XDG_DATA_HOME/teamattack``, i.e. ``~/.local/share/teamattack``; never the current
directory). CIFAR-10 python batches are read by an unpickler that admits nothing but numpy arrays
and builtins (a batch whose md5 is not the official one gets a warning). A missing dataset raises
:class:`DatasetNotFoundError` (a ``FileNotFoundError``) naming where it looked and how to get it.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

from .readers import (
    CIFAR10_CLASSES,
    ENV_VAR,
    DatasetNotFoundError,
    UnsafeDataError,
    default_root,
    digits_split_indices,
    read_cifar10,
    read_digits,
    read_mnist,
    resolve_root,
    verify_md5,
)

DATASETS = ("digits", "mnist", "cifar10")
SPLITS = ("train", "test")

_INFO = {
    "digits": {"shape": (1, 8, 8), "classes": tuple(str(i) for i in range(10))},
    "mnist": {"shape": (1, 28, 28), "classes": tuple(str(i) for i in range(10))},
    "cifar10": {"shape": (3, 32, 32), "classes": CIFAR10_CLASSES},
}

__all__ = ["DATASETS", "ENV_VAR", "DatasetNotFoundError", "UnsafeDataError", "available", "class_names",
           "correctly_classified", "default_root", "digits_split_indices", "input_shape", "load", "load_arrays",
           "num_classes", "resolve_root", "subset_indices", "verify_md5"]


def _check_name(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _INFO:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    return split


def num_classes(name: str) -> int:
    return len(_INFO[_check_name(name)]["classes"])


def class_names(name: str) -> tuple[str, ...]:
    return _INFO[_check_name(name)]["classes"]


def input_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of one example."""
    return _INFO[_check_name(name)]["shape"]


@functools.lru_cache(maxsize=8)
def _arrays_cached(name: str, split: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    from pathlib import Path

    if name == "digits":
        images, labels = read_digits(split)
        images = (images / 16.0).astype(np.float32)
    elif name == "mnist":
        images, labels = read_mnist(Path(root), split)
    else:
        images, labels = read_cifar10(Path(root), split)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_arrays(name: str, split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The raw arrays (NHWC; uint8 for MNIST/CIFAR-10, float32 in [0,1] for digits), cached, read-only."""
    name, split = _check_name(name), _check_split(split)
    key_root = "" if name == "digits" else str(resolve_root(root).resolve())
    return _arrays_cached(name, split, key_root)


def subset_indices(total: int, n: int | None, seed: int = 0) -> np.ndarray:
    """Indices chosen by :func:`load`: all (in order) for n=None, else the first n of a seeded permutation."""
    if n is None:
        return np.arange(total)
    if n < 0 or n > total:
        raise ValueError(f"n={n} but the split has {total} examples")
    return np.random.RandomState(seed).permutation(total)[:n]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """NHWC uint8 (or float in [0,1]) -> float32 NCHW in [0, 1]."""
    if images.dtype == np.uint8:
        t = torch.from_numpy(np.array(images, copy=True)).float().div_(255.0)
    else:
        t = torch.tensor(np.asarray(images), dtype=torch.float32)
    return t.permute(0, 3, 1, 2).contiguous()


def load(
    name: str,
    split: str = "test",
    n: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    return_indices: bool = False,
):
    """(x float32 (N,C,H,W) in [0,1], y int64 (N,)) of a dataset split.

    n=None gives the whole split in its official order; otherwise n examples drawn at random
    (``numpy.random.RandomState(seed).permutation``, so the same n and seed always give the same
    examples, in the order drawn). ``return_indices=True`` also returns their indices in the split.
    """
    images, labels = load_arrays(name, split, root)
    idx = subset_indices(len(labels), n, seed)
    x = to_tensor(images[idx] if n is not None else images)
    y = torch.tensor(labels[idx] if n is not None else labels, dtype=torch.long)
    if return_indices:
        return x, y, torch.from_numpy(idx).long()
    return x, y


def available(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether both splits of the dataset can be read (without raising)."""
    try:
        for split in SPLITS:
            load_arrays(name, split, root)
        return True
    except DatasetNotFoundError:
        return False


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted classes (on x's device), evaluated in batches on the model's device.

    Raises `InputError` (teamattack.validation.check_logits) where the model's output is not a
    (B, classes) tensor or is NaN / infinite for some example (naming them): an argmax of NaN
    logits is not a prediction.
    """
    from ..validation import check_logits

    try:
        dev = next(model.parameters()).device
    except StopIteration:
        dev = x.device
    preds = [check_logits(model(x[i : i + batch_size].to(dev)), len(x[i : i + batch_size]), offset=i)
             .argmax(1).to(x.device) for i in range(0, len(x), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Share of x the model classifies as y (NaN for no example); refuses non-finite outputs (`predict`)."""
    return float((predict(model, x, batch_size) == y.to(x.device)).float().mean()) if len(y) else float("nan")


def correctly_classified(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 500,
    return_mask: bool = False,
):
    """(x, y) restricted to the examples the model classifies correctly (order kept)."""
    mask = predict(model, x, batch_size) == y.to(x.device)
    out = (x[mask], y[mask.to(y.device)])
    return (*out, mask) if return_mask else out
