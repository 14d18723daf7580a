"""Where the target sweep's wins come from: the fixed-budget walk's distance / eps of each image
the sweep breaks, beside how many images it looked at, per budget of the robust-accuracy files.

    python scripts/sweep_wins.py docs/results/robust-accuracy-[dm]*.json > sweep-wins.md

For each file (its model, norm, eps and seeded images) TEAM(model, norm, eps=eps, targets=3) runs
on the clean-correct images, one torch thread; `TEAM.target_sweep` is wrapped to record the
walk distance (`Budget.walk_distance`) of the images the untargeted fixed-budget attack left and
the sweep looked at (walk within SWEEP_RANGE x eps) and of those it broke. It tells what a
tighter SWEEP_RANGE would keep and save (docs/engine.md, "Modes"); it times nothing.
"""
from __future__ import annotations

import argparse
import json

import torch

BINS = (1.05, 1.10, 1.15, 1.20, 1.25)


def _bins(ratios: list[float]) -> list[int]:
    lo = [1.0, *BINS[:-1]]
    return [sum(1 for r in ratios if a < r <= b) for a, b in zip(lo, BINS)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="robust-accuracy JSON documents of `teamattack evaluate`")
    p.add_argument("--data-root", default=None, help="folder with the datasets (default: $TEAMATTACK_DATA)")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    from teamattack.attacks import team as T

    seen: dict[str, list[float]] = {}
    original = T.TEAM.target_sweep

    def recording(self, model, expand_fn, x, y, res, rows, screened=None):
        out = original(self, model, expand_fn, x, y, res, rows, screened)
        eps = float(self.eps)
        with torch.no_grad():
            broken = model(out).argmax(1) != y
        looked = ~res.adversarial & ~(res.walk_distance > T.SWEEP_RANGE * eps)
        seen["looked"] += (res.walk_distance[looked] / eps).tolist()
        seen["won"] += (res.walk_distance[broken & ~res.adversarial] / eps).tolist()
        return out

    T.TEAM.target_sweep = recording
    try:
        _tables(args, seen)
    finally:
        T.TEAM.target_sweep = original
        torch.set_num_threads(threads)
    return 0


def _tables(args, seen: dict[str, list[float]]) -> None:
    import teamattack as ta
    from teamattack import data, zoo
    from teamattack.attacks import team as T

    head = " | ".join(f"({a:.2f}, {b:.2f}]" for a, b in zip([1.0, *BINS[:-1]], BINS))
    print(f"# The target sweep's wins by the fixed-budget walk's distance / eps (SWEEP_RANGE {T.SWEEP_RANGE})\n")
    print(f"| file | eps | looked at | of them by walk / eps: {head} | broke | their walk / eps |")
    print("|---|---|---|" + "---|" * len(BINS) + "---|---|")
    totals = {"looked": [], "won": []}
    for path in args.files:
        doc = json.load(open(path))
        model = zoo.load(doc["model"])
        x, y = data.load(doc["dataset"], "test", n=doc["n"], seed=doc["seed"], root=args.data_root)
        ok = data.predict(model, x) == y
        x, y = x[ok], y[ok]
        for eps in doc["eps"]:
            seen["looked"], seen["won"] = [], []
            ta.TEAM(model, doc["norm"], eps=eps, targets=3)(x, y)
            won = sorted(seen["won"])
            totals["looked"] += seen["looked"]
            totals["won"] += won
            cells = " | ".join(str(c) for c in _bins(seen["looked"]))
            print(f"| {doc['model']} {doc['norm']} | {eps:g} | {len(seen['looked'])} | {cells} | {len(won)} | "
                  + (", ".join(f"{r:.3f}" for r in won) or "-") + " |", flush=True)
    cells = " | ".join(str(c) for c in _bins(totals["looked"]))
    print(f"| all | | {len(totals['looked'])} | {cells} | {len(totals['won'])} | "
          f"max {max(totals['won'], default=float('nan')):.3f} |")


if __name__ == "__main__":
    raise SystemExit(main())
