"""The dense exact Hessian's memory bound against the process's real peak (CPU, resident set).

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/dense_hessian_memory.py --arch cifar10-resnet56 --memory-gb 2

Builds the architecture with its seeded random initialisation (cost does not depend on training),
measures `curvature.sources.hvp_bytes` on one image, runs `exact_dense` (objective T4) under
--memory-gb and prints one JSON line: the HVPs run at once, the bound (B n^2 floats + HVPs at
once x HVP_OVERHEAD x per-HVP bytes) and the growth of the peak resident set during `exact_dense` (ru_maxrss
minus the resident set before it; run one measurement per process).
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    from teamattack import data
    from teamattack.curvature.sources import HVP_OVERHEAD, dense_chunks, exact_dense, hvp_bytes
    from teamattack.objectives import get_objective
    from teamattack.zoo.architectures import build, dataset_of

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--memory-gb", type=float, default=2.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(a.arch).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(a.images, *data.input_shape(dataset_of(a.arch)))
    with torch.no_grad():
        y = model(x).argmax(1)
    obj = get_objective("T4")
    B, n = x.shape[0], x[0].numel()
    per = hvp_bytes(model, obj, x[:1], y[:1])
    e, c = dense_chunks(per, B, n, a.memory_gb * 1e9)
    saved = 4.0 * B * n * n + e * c * per  # the saved graph's count alone
    bound = 4.0 * B * n * n + e * c * per * HVP_OVERHEAD
    before = rss_bytes()
    t0 = time.perf_counter()
    exp = exact_dense(model, obj, x, y, memory_bytes=a.memory_gb * 1e9)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps({"arch": a.arch, "n": n, "images": B, "memory_gb": a.memory_gb, "hvp_bytes": per,
                      "examples_at_once": e, "hvps_at_once": c, "bound_bytes": bound, "peak_growth_bytes": peak,
                      "peak_over_bound": round(peak / bound, 3), "peak_over_saved_count": round(peak / saved, 3), "seconds": round(wall, 1),
                      "H_finite": bool(torch.isfinite(exp.H).all()), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
