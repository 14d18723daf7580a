"""The boundary walk's CPU chunking against torch threads: one table, alternating runs in one process.

    python scripts/walk_chunks.py --threads 1,2 --repeats 3
    python scripts/walk_chunks.py --models cifar10-resnet56 -n 16 --threads 1 --repeats 3

TEAM's minimum-norm L2 walk on N (-n, default 100) correctly classified test images of each of
--models (default digits-cnn and mnist-table1), with the walk's passes chunked at 16 MB of
activations, at 32 MB, and not at all
(`boundary_walk.CHUNK_BYTES` / `CHUNK_BYTES_THREADS` set for the run), the three settings
alternating (A B C A B C) so that a slow spell of a shared machine hits each alike. Prints, per
model and thread count, the fastest and median wall seconds of each setting and which one the
library's rule (`boundary_walk.chunk_rows`) picks, and the largest difference between the
settings' adversarial examples (the walks' rows are independent: the same up to float rounding;
only the time differs). docs/engine.md, "Speed", quotes this table.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import teamattack as ta
from teamattack.attacks import boundary_walk as bw
from teamattack.bench.harness import load_images

SETTINGS = {"16 MB": 16e6, "32 MB": 32e6, "none": float("inf")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--models", default="digits-cnn,mnist-table1",
                    help="zoo models, comma-separated (cifar10-resnet56 too; its dataset from the zoo)")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    before = torch.get_num_threads()
    print("| model | threads | rule's chunk (rows) | " + " | ".join(f"{k}: fastest / median s" for k in SETTINGS)
          + " | max difference of the outputs |")
    print("|---|---|---|" + "---|" * (len(SETTINGS) + 1))
    saved = bw.CHUNK_BYTES, bw.CHUNK_BYTES_THREADS
    for name in args.models.split(","):
        dataset = ta.zoo.dataset_of(name)
        model = ta.zoo.load(name)
        for p in model.parameters():
            p.requires_grad_(False)
        x, y, _ = load_images(dataset, model, args.n, 0, args.data_root, torch.device("cpu"))
        for t in (int(v) for v in args.threads.split(",")):
            torch.set_num_threads(t)
            bw.CHUNK_BYTES, bw.CHUNK_BYTES_THREADS = saved
            rule = bw.chunk_rows(model, x[:1])
            attack = ta.TEAM(model, "l2")
            attack(x[:2], y[:2])                      # warm-up, untimed
            times: dict[str, list[float]] = {k: [] for k in SETTINGS}
            outputs: dict[str, torch.Tensor] = {}
            for _ in range(args.repeats):
                for key, budget in SETTINGS.items():
                    bw.CHUNK_BYTES = bw.CHUNK_BYTES_THREADS = budget
                    t0 = time.perf_counter()
                    outputs[key] = attack(x, y).x_adv
                    times[key].append(time.perf_counter() - t0)
            bw.CHUNK_BYTES, bw.CHUNK_BYTES_THREADS = saved
            first = next(iter(outputs.values()))
            diff = max(float((o - first).abs().max()) for o in outputs.values())
            cells = " | ".join(f"{min(v):.3f} / {statistics.median(v):.3f}" for v in times.values())
            print(f"| {name} | {t} | {min(rule, 6 * len(x))} | {cells} | {diff:.2g} |", flush=True)
    torch.set_num_threads(before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
