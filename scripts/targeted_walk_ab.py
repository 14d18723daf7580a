"""Targeted L2 walk schedules image by image against a reference: strong peers, or the exact optimum.

Why TEAM's targeted walk is two walks (`boundary_walk.TARGETED_WALKS`): this script runs each
schedule alone and together on the same N correctly classified test images with a seeded random
target each (the bench's images and targets for that seed), and compares every image's distance
with a reference: the per-image best of peer attacks (`--refs`), or with `--exact FILE` the proven
optima of a `bench --exact` JSON (its images, targets and seed; only the images solved to
optimality count). Prints a Markdown table; `--out` also writes it with a JSON beside it.

    python scripts/targeted_walk_ab.py --model digits-mlp --dataset digits -n 200 --seed 1 --refs cw-9x1000,ddn-1000
    python scripts/targeted_walk_ab.py --model digits-mlp --exact docs/results/exact/targeted-l2-digits-mlp.json
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

import teamattack as ta
from teamattack import baselines
from teamattack.attacks.boundary_walk import TARGETED_WALKS, boundary_walk, walk_budget
from teamattack.bench.harness import load_images
from teamattack.bench.seeds import random_targets
from teamattack.counting import CountingModel
from teamattack.curvature import expand

COLD, HOT = TARGETED_WALKS
STEPS = walk_budget(40, 6, 8)      # one targeted walk of TEAM's defaults (steps 40, starts 6, screen 8)
VARIANTS = {                       # name: (walks, steps per walk)
    "cold walk": ((COLD,), STEPS),
    "hot walk": ((HOT,), STEPS),
    "cold walk, twice as long": ((COLD,), 2 * STEPS),
    "hot walk, twice as long": ((HOT,), 2 * STEPS),
    "cold + hot (the default)": (TARGETED_WALKS, STEPS),
}


def _images(a) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The model, images, labels, targets and the reference distances (NaN where none)."""
    model = ta.zoo.load(a.model).eval()
    if a.exact:
        doc = json.loads(Path(a.exact).read_text())
        x, y, idx = load_images(doc["dataset"], model, doc["n"], seed=doc["seed"])
        if idx != doc["images"]:
            raise SystemExit(f"{a.exact}: the images of seed {doc['seed']} differ from the file's")
        t = (y + random_targets(y.cpu(), 10, doc["seed"]).to(y.device)) % 10
        (key, entry), = doc["exact"].items()
        opt = [p["eps"] if p["status"] == "optimal" else float("nan") for p in entry["per_image"]]
        return model, x, y, t, {"exact optimum": torch.tensor(opt, dtype=torch.float64)}
    x, y, _ = load_images(a.dataset, model, a.n, seed=a.seed)
    t = (y + random_targets(y.cpu(), 10, a.seed).to(y.device)) % 10
    refs = {}
    for name in a.refs.split(","):
        r = baselines.make(name, model, targeted=True)(x, y, t)
        refs[name] = torch.where(r.success, r.l2, torch.full_like(r.l2, float("nan"))).double()
    return model, x, y, t, refs


def _row(name: str, dist: torch.Tensor, ref: torch.Tensor, grads: float, seconds: float) -> dict:
    ok = torch.isfinite(ref)
    r = (dist.double() / ref)[ok].nan_to_num(float("inf"))
    return {"variant": name, "gradients_per_image": grads, "seconds": seconds, "n": int(ok.sum()),
            "median": float(r.median()), "p90": float(r.quantile(0.9)), "worst": float(r.max()),
            "above_1pct": int((r > 1.01).sum()), "failures": int((~torch.isfinite(r)).sum())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="digits")
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--refs", default="cw-9x1000,ddn-1000", help="peer presets whose per-image best is the reference")
    p.add_argument("--exact", default=None, help="a `bench --exact` JSON (targeted L2): its optima are the reference")
    p.add_argument("--out", default=None, help="Markdown file (a .json is written beside it)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, x, y, t, refs = _images(a)
    ref = torch.stack(list(refs.values()), 1).nan_to_num(float("inf")).min(1).values
    ref = torch.where(torch.isfinite(ref), ref, torch.full_like(ref, float("nan")))
    rows = [_row(f"reference: {k}", v, ref, float("nan"), 0.0) for k, v in refs.items()] if len(refs) > 1 else []
    first_order = functools.partial(expand, source="none")
    for name, (walks, steps) in VARIANTS.items():
        counting = CountingModel(model)
        t0 = time.perf_counter()
        adv, dist = boundary_walk(counting, first_order, x, y, t, steps=steps, starts=1, targeted_walks=walks)
        secs = time.perf_counter() - t0
        with torch.no_grad():
            assert bool((model(adv).argmax(1) == t)[torch.isfinite(dist)].all()), "an unverified point"
        rows.append(_row(name, dist, ref, counting.gradients / len(x), secs))
    what = "the proven optimum" if a.exact else "the per-image best of " + ", ".join(refs)
    cmd = f"python scripts/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}"
    lines = [f"# Targeted L2 walk schedules on {a.model}", "", f"Command: `{cmd}`", "",
             f"Ratio = the walk's L2 / {what}, image by image ({rows[-1]['n']} images with a reference; "
             f"a random target each). First-order walks (`hessian='none'`), 10 bisection steps at the end.", "",
             "| variant | gradients / image | ratio median | p90 | worst | images > 1% above | failures |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        g = "" if r["gradients_per_image"] != r["gradients_per_image"] else f"{r['gradients_per_image']:.0f}"
        lines.append(f"| {r['variant']} | {g} | {r['median']:.4f} | {r['p90']:.4f} | {r['worst']:.3f} | "
                     f"{r['above_1pct']} | {r['failures']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
        Path(a.out).with_suffix(".json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
