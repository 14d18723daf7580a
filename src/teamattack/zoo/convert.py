"""Convert the pretrained CIFAR-10 ResNet56 checkpoint (akamaster/pytorch_resnet_cifar10,
``resnet56-4bfd9763.th``) to the zoo's safetensors + card format.

    python -m teamattack.zoo.convert SRC.th OUT.safetensors [--data-root R]

The checkpoint is read with ``torch.load(..., weights_only=True)`` (no arbitrary unpickling), the
``module.`` prefix is stripped, the normalisation buffers are added (mean (0.485,0.456,0.406),
std (0.229,0.224,0.225), inside the model so it takes [0,1] inputs), and the accuracy on the
available CIFAR-10 test images is measured and written into the card.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import sys
import time
from pathlib import Path

import torch

from .. import data
from .architectures import CIFAR_MEAN, CIFAR_STD, build
from .registry import save

UPSTREAM = "akamaster/pytorch_resnet_cifar10@d5489e8995e81e91ce6b1d69dcc98ad579b0b153:pretrained_models/resnet56-4bfd9763.th"


def resnet56_state_dict(src: str | Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(str(src), map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    return {(k.removeprefix("module.")): v for k, v in sd.items()}


def convert_resnet56(src: str | Path, out: str | Path, root: str | Path | None = None,
                     command: str | None = None) -> dict:
    t0 = time.time()
    model = build("cifar10-resnet56")
    sd = resnet56_state_dict(src)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or set(missing) != {"normalize.mean", "normalize.std"}:
        raise ValueError(f"checkpoint does not match ResNet56: missing {missing}, unexpected {unexpected}")
    model.eval()
    x, y = data.load("cifar10", "test", root=root)
    correct = int((data.predict(model, x, 200) == y).sum())
    card = {
        "name": "cifar10-resnet56",
        "arch": "cifar10-resnet56",
        "dataset": "cifar10",
        "test_accuracy": correct / len(y),
        "test_correct": correct,
        "test_n": len(y),
        "test_set": ("CIFAR-10 test set: only its first 1017 images (the complete test set is not available here)"
                     if len(y) == 1017 else f"CIFAR-10 test set, {len(y)} images"),
        "source": UPSTREAM,
        "source_sha256": hashlib.sha256(Path(src).read_bytes()).hexdigest(),
        "normalisation": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD), "inside_model": True},
        "training": "pretrained upstream (not trained by this project); upstream reports 93.39% on the full test set",
        "parameters": sum(p.numel() for p in model.parameters()),
        "command": command,
        "conversion_time_s": round(time.time() - t0, 1),
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    save(model, out, card)
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m teamattack.zoo.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--data-root", default=None)
    a = p.parse_args(argv)
    cmd = "python -m teamattack.zoo.convert " + " ".join(sys.argv[1:] if argv is None else argv)
    card = convert_resnet56(a.src, a.out, a.data_root, cmd)
    print(f"wrote {a.out}: {card['test_correct']}/{card['test_n']} = {card['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
