"""Cost against input size: seconds, gradients, HVPs and peak memory per image for each curvature
source (TEAM paper mode, objective T4: one second-order expansion) and for the min-norm walk.

    python -m teamattack.bench.scaling --sizes 28,32,64,224 -n 1 --json out.json --markdown out.md

Sizes: 28 = 1x28x28 (mnist-table1, trained), 32 = 3x32x32 (cifar10-resnet56, trained); any other
size s = 3 x s x s on the ResNet56 architecture with random weights (cost only: accuracy is
meaningless there, the "label" is the model's own prediction). The exact Hessian runs only where
`curvature.sources.curvature_bytes` says it fits under --memory-gb (what `hessian="auto"` uses).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..atomic import atomic_write_text

SOURCES = ("none", "ggn", "krylov", "exact")


@dataclass(frozen=True)
class Row:
    size: str
    n_inputs: int
    model: str
    trained: bool
    method: str          # "paper/<source>" or "walk"
    images: int
    seconds_per_image: float | None
    grads_per_image: float | None
    hvps_per_image: float | None
    peak_memory_mb: float | None
    success: float | None
    note: str = ""


def _model(size: int) -> tuple[nn.Module, tuple[int, ...], str, bool]:
    from .. import zoo

    if size == 28:
        return zoo.load("mnist-table1").eval(), (1, 28, 28), "mnist-table1", True
    if size == 32:
        return zoo.load("cifar10-resnet56").eval(), (3, 32, 32), "cifar10-resnet56", True
    from ..zoo.architectures import build

    torch.manual_seed(0)
    return build("cifar10-resnet56").eval(), (3, size, size), "resnet56 (random weights)", False


def _images(size: int, shape, model, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images for the trained models; uniform noise (seeded) for the random-weight ones."""
    from .harness import load_images

    if size in (28, 32):
        x, y, _ = load_images("mnist" if size == 28 else "cifar10", model, n, seed=0, device=device)
        return x, y
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, *shape), generator=g).to(device)
    with torch.no_grad():
        return x, model(x).argmax(1)


def measure(sizes, n: int = 1, memory_gb: float = 2.0, device: str = "cpu", walk_steps: int | None = None,
            log=lambda s: print(s, file=sys.stderr)) -> list[Row]:
    from ..attacks import TEAM
    from ..curvature.sources import curvature_bytes

    dev = torch.device(device)
    rows: list[Row] = []
    for size in sizes:
        model, shape, name, trained = _model(size)
        model = model.to(dev)
        for p in model.parameters():
            p.requires_grad_(False)
        x, y = _images(size, shape, model, n, dev)
        n_in = x[0].numel()
        need = curvature_bytes(model, x)
        methods = [f"paper/{s}" for s in SOURCES] + ["walk"]
        for method in methods:
            note = ""
            if method == "paper/exact" and min(need["exact-dense"], need["exact-lowrank"]) > memory_gb * 1e9:
                rows.append(Row(f"{'x'.join(map(str, shape))}", n_in, name, trained, method, len(x), None, None, None,
                                None, None, f"not run: needs {need['exact-dense'] / 1e9:.3g} GB > {memory_gb:g} GB"))
                log(f"{size}: {method} skipped")
                continue
            if method == "walk":
                attack = TEAM(model, norm="l2", mode="min-norm", hessian="none",
                              **({"steps": walk_steps} if walk_steps else {}))
            else:
                attack = TEAM(model, norm="l2", mode="paper", objective="T4", hessian=method.split("/")[1])
            t0 = time.perf_counter()
            res = attack(x, y)
            wall = time.perf_counter() - t0
            c = res.counters
            rows.append(Row("x".join(map(str, shape)), n_in, name, trained, method, len(x), wall / len(x),
                            c.gradients / len(x), c.hvps / len(x), float(c.peak_memory_mb),
                            float(res.success.float().mean()), note))
            log(f"{size}: {method} {wall / len(x):.3g} s/img")
    return rows


def markdown(rows: list[Row]) -> str:
    head = ["input", "n", "model", "method", "images", "s/img", "grads/img", "HVPs/img", "peak MB", "success", "note"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]

    def f(v, d=4):
        return "-" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))

    for r in rows:
        out.append("| " + " | ".join([r.size, str(r.n_inputs), r.model, r.method, str(r.images),
                                      f(r.seconds_per_image, 3), f(r.grads_per_image), f(r.hvps_per_image),
                                      f(r.peak_memory_mb), f(r.success, 3), r.note]) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m teamattack.bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="28,32,64,224", help="comma-separated: 28, 32, or s for 3 x s x s")
    p.add_argument("-n", type=int, default=1, help="images per size")
    p.add_argument("--memory-gb", type=float, default=2.0, help="bound on the exact Hessian's memory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--walk-steps", type=int, default=None, help="the walk's steps (default: TEAM's)")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure([int(s) for s in args.sizes.split(",")], args.n, args.memory_gb, args.device, args.walk_steps)
    md = markdown(rows)
    print(md)
    if args.json:
        from ..cli.common import write_json

        write_json(args.json, {"command": "python -m teamattack.bench.scaling " + " ".join(sys.argv[1:]),
                               "device": args.device, "torch": torch.__version__, "threads": args.threads,
                               "rows": [asdict(r) for r in rows]})
    if args.markdown:
        atomic_write_text(args.markdown, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
