"""Model zoo: architectures, safetensors weights with JSON cards, training.

    model = teamattack.zoo.load("digits-cnn")          # eval mode, committed weights
    model = teamattack.zoo.load("runs/my.safetensors")  # a file whose card sits beside it
    net = teamattack.zoo.build("mnist-table1")          # untrained
    teamattack.zoo.save(net, "runs/my.safetensors", {"arch": "mnist-table1", ...})

Table-I nets expose ``features`` (piecewise linear, up to the smooth layer's pre-activation),
``smooth`` (Sigmoid) and ``head`` (final Linear): ``model(x) == head(smooth(features(x)))``.
"""
from __future__ import annotations

from .architectures import (
    ARCHITECTURES,
    CIFAR_MEAN,
    CIFAR_STD,
    CifarResNet,
    Normalize,
    SplitNet,
    build,
    dataset_of,
    has_split,
)
from .registry import WEIGHTS_DIR, IntegrityError, card_path, load, names, read_card, resolve, save

__all__ = [
    "ARCHITECTURES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "WEIGHTS_DIR",
    "CifarResNet",
    "IntegrityError",
    "Normalize",
    "SplitNet",
    "build",
    "card_path",
    "dataset_of",
    "has_split",
    "load",
    "names",
    "read_card",
    "resolve",
    "save",
]
