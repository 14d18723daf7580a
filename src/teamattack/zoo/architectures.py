"""The zoo's architectures. All take inputs in [0, 1] (any normalisation lives inside the model).

Table-I style nets (``mnist-table1``, ``cifar10-table1``, ``digits-cnn``) are :class:`SplitNet`:
``forward(x) = head(smooth(features(x)))`` where ``features`` is piecewise linear (conv, ReLU,
max-pool, flatten, and the Linear giving the pre-activations of the smooth layer), ``smooth`` is
the Sigmoid and ``head`` the final Linear. The TEAM engine exploits that split: the input
Jacobian of ``features`` is exact in the current linear region and gives the exact, low-rank
Hessian of every logit.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)


class SplitNet(nn.Module):
    """``head(smooth(features(x)))``: piecewise-linear features up to the smooth layer's pre-activation."""

    def __init__(self, features: nn.Module, smooth: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.smooth = smooth
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.smooth(self.features(x)))


class Normalize(nn.Module):
    """(x - mean) / std per channel, as buffers (saved with the weights)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def table1(in_ch: int, side: int, c1: int, c2: int, hidden: int, classes: int = 10) -> SplitNet:
    """conv3x3xc1-relu-pool2-conv3x3xc2-relu-pool2-fc(hidden)-sigmoid-fc(classes), padding 1."""
    s = side // 4
    features = nn.Sequential(
        nn.Conv2d(in_ch, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * s * s, hidden),
    )
    return SplitNet(features, nn.Sigmoid(), nn.Linear(hidden, classes))


def mnist_table1() -> SplitNet:
    return table1(1, 28, 32, 64, 200)


def cifar10_table1() -> SplitNet:
    return table1(3, 32, 64, 128, 256)


def digits_cnn() -> SplitNet:
    """conv3x3x16-relu-conv3x3x32-relu-pool2-fc64-sigmoid-fc10 for 8x8 inputs, padding 1."""
    features = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64),
    )
    return SplitNet(features, nn.Sigmoid(), nn.Linear(64, 10))


def mlp(n_in: int, hidden: tuple[int, ...] = (32, 32), classes: int = 10) -> nn.Sequential:
    """Flatten then Linear-ReLU layers then a Linear to logits (plain ReLU MLP, MILP-verifiable)."""
    layers: list[nn.Module] = [nn.Flatten()]
    prev = n_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, classes))
    return nn.Sequential(*layers)


def linear(n_in: int, classes: int = 10) -> nn.Sequential:
    """Linear-softmax model (logits = W x + b on the flattened input)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, classes))


# ------------------------------------------------------------------------------------ ResNet56 (CIFAR)
class ShortcutA(nn.Module):
    """Option-A shortcut: take every second pixel and zero-pad planes//4 channels on each side."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            # option A: subsample by 2 and zero-pad the channels, no parameters
            self.shortcut = ShortcutA(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The standard CIFAR ResNet (He et al. 2016, sec. 4.2) with option-A shortcuts.

    Parameter names match the widely used pretrained checkpoints (conv1, bn1, layer1..3, linear);
    ``normalize`` (buffers only) maps [0,1] inputs to the normalised scale the weights expect.
    """

    def __init__(self, num_blocks=(9, 9, 9), num_classes: int = 10, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], 1)
        self.layer2 = self._make_layer(32, num_blocks[1], 2)
        self.layer3 = self._make_layer(64, num_blocks[2], 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet56() -> CifarResNet:
    return CifarResNet((9, 9, 9))


# name -> (builder, dataset, has the features/smooth/head split)
ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], str, bool]] = {
    "mnist-table1": (mnist_table1, "mnist", True),
    "cifar10-table1": (cifar10_table1, "cifar10", True),
    "digits-cnn": (digits_cnn, "digits", True),
    "mnist-mlp": (lambda: mlp(784), "mnist", False),
    "digits-mlp": (lambda: mlp(64), "digits", False),
    "mnist-linear": (lambda: linear(784), "mnist", False),
    "digits-linear": (lambda: linear(64), "digits", False),
    "cifar10-resnet56": (resnet56, "cifar10", False),
}


def build(arch: str) -> nn.Module:
    """An untrained model of the named architecture (eval mode is NOT set; it is a fresh module)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch][0]()


def dataset_of(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch][1]


def has_split(arch: str) -> bool:
    return ARCHITECTURES[arch][2]
