"""The images an e6 distilled student keeps within the L2 budget: does any attack break them?

e6 (docs/distillation.md) leaves a few digits images unbroken within L2 0.8571 at G = 1 and 10,
by TEAM and by every peer of the run. This script takes the images TEAM's fixed-budget attack with
the target sweep (`TEAM(model, "l2", eps=..., targets=3)`) leaves and throws everything at them:
TEAM's default walk and a long one (9 starts, 16 screening steps, 200 steps), TEAM's targeted walk
toward every other class, DDN-1000, ALMA-1000, FMN-L2-1000 and C&W 9x1000 (minimum norm), and
APGD-T and AutoAttack (L2, at eps). Every distance is of a point a fresh forward pass of the
student finds adversarial (toward its target for the targeted walks). Prints (and with --out
writes) a Markdown table: per image, each attack's distance and the smallest.

    python scripts/distilled_unbroken.py --cache runs/e6-digits-cache -G 1 -n 300 --out docs/results/e6-distillation/unbroken-digits-G1.md

--cache holds the e6 recipe's teacher and student (the files of `teamattack reproduce
e6-distillation --cache`; trained there when missing); --model attacks a zoo name or weights file
instead (no training).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import teamattack as ta
from teamattack import baselines
from teamattack.bench.harness import load_images
from teamattack.experiments.distillation import BUDGETS, RECIPES, distilled

LONG_WALK = {"starts": 9, "screen": 16, "steps": 200}
MIN_NORM_PEERS = ("ddn-1000", "alma-1000", "fmn-l2-1000", "cw-9x1000")
FIXED_PEERS = ("apgd-t-l2", "autoattack-l2")


def _distance(model, x, y, x_adv, target=None) -> torch.Tensor:
    """L2 distance of each row of x_adv, inf where a fresh forward pass finds it not adversarial."""
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    ok = pred != y if target is None else pred == target
    d = (x_adv - x).flatten(1).norm(dim=1)
    return torch.where(ok, d, torch.full_like(d, float("inf")))


def battery(model, x: torch.Tensor, y: torch.Tensor, eps: float, classes: int = 10) -> dict[str, torch.Tensor]:
    """Each attack's verified L2 distance per image (inf where it fails)."""
    out = {"team (default walk)": _distance(model, x, y, ta.TEAM(model, norm="l2")(x, y).x_adv),
           "team (" + ", ".join(f"{k}={v}" for k, v in LONG_WALK.items()) + ")":
               _distance(model, x, y, ta.TEAM(model, norm="l2", **LONG_WALK)(x, y).x_adv)}
    targeted = torch.full((len(y),), float("inf"))
    walk = ta.TEAM(model, norm="l2", targeted=True)
    for c in range(classes):
        m = y != c
        if m.any():
            t = torch.full_like(y[m], c)
            targeted[m] = torch.minimum(targeted[m], _distance(model, x[m], y[m], walk(x[m], y[m], target=t).x_adv, t))
    out["team targeted walk (best class)"] = targeted
    for name in MIN_NORM_PEERS:
        out[name] = _distance(model, x, y, baselines.make(name, model)(x, y).x_adv)
    for name in FIXED_PEERS:
        out[f"{name} (eps)"] = _distance(model, x, y, baselines.make(name, model, eps=eps)(x, y).x_adv)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=tuple(RECIPES), default="digits")
    p.add_argument("--epochs", type=int, default=None, help="both trainings (default: e6's recipe)")
    p.add_argument("--data", default=None, help="dataset root (default: TEAMATTACK_DATA or ../shared/datasets)")
    p.add_argument("-G", type=float, default=1.0)
    p.add_argument("-n", type=int, default=300)
    p.add_argument("--eps", type=float, default=None, help="L2 budget (default: e6's for the dataset)")
    p.add_argument("--cache", default="runs/e6-digits-cache")
    p.add_argument("--model", default=None, help="a zoo name or weights file to attack instead of the e6 student")
    p.add_argument("--out", default=None, help="Markdown file (default: stdout only)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    eps = a.eps if a.eps is not None else BUDGETS[a.dataset]["l2"]
    if a.model is None:
        d = distilled(a.dataset, a.G, Path(a.cache), a.epochs, seed=0, root=a.data)
        model, what = ta.zoo.load(d.student), (f"the e6 {RECIPES[a.dataset].arch} student at G = {a.G:g} "
                                               f"(test accuracy {d.student_card['test_accuracy']:.4f})")
    else:
        model, what = ta.zoo.load(a.model), a.model
    model.eval().requires_grad_(False)
    x, y, _ = load_images(a.dataset, model, a.n, seed=0, root=a.data)
    fixed = ta.TEAM(model, norm="l2", eps=eps, targets=3)(x, y)
    left = torch.nonzero(_distance(model, x, y, fixed.x_adv) > eps).flatten()
    rows = [f"# The images {what} keeps within L2 {eps:g} against TEAM ({a.dataset})", "",
            f"Command: `python scripts/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
            f"N = {len(y)} correctly classified test images (seed 0). TEAM's fixed-budget attack with the target "
            f"sweep (`targets=3`) breaks {len(y) - len(left)} within L2 {eps:g}; on the {len(left)} it leaves, each "
            "attack's L2 distance (of a point a fresh forward pass finds adversarial; `-` where it found none; "
            "the fixed-budget peers only look within eps).", ""]
    if not len(left):
        rows.append("No image is left.")
    else:
        res = battery(model, x[left], y[left], eps)
        names = list(res)
        best = torch.stack([res[k] for k in names]).min(0).values
        rows += ["| image (position) | label | " + " | ".join(names) + " | smallest |",
                 "|---|---|" + "---|" * (len(names) + 1)]
        fmt = lambda v: "-" if v == float("inf") else f"{v:.4f}"
        for i, pos in enumerate(left.tolist()):
            rows.append(f"| {pos} | {int(y[pos])} | " + " | ".join(fmt(float(res[k][i])) for k in names)
                        + f" | {fmt(float(best[i]))} |")
        within = {k: int((v <= eps).sum()) for k, v in res.items()}
        rows += ["", f"Broken within L2 {eps:g}: " + ", ".join(f"{k} {v}" for k, v in within.items())
                 + f"; any attack {int((best <= eps).sum())} of {len(left)}."]
    text = "\n".join(rows) + "\n"
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
