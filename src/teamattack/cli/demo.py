"""`teamattack demo`: the main job on the embedded digits data (no files needed).

Loads the digits model shipped with the package (teamattack train --arch digits-cnn makes it), attacks
100 correctly classified test digits with FGSM and TEAM (L2 / Linf minimum-norm, L2 / Linf / L0
iterated, L2 paper mode), prints the table and writes a PNG grid of originals and adversarials.
"""
from __future__ import annotations

import sys

from .common import command_line, device, write_json


def register(sub) -> None:
    p = sub.add_parser("demo", help="attack 100 digits with FGSM and TEAM; print a table, write demo.png")
    p.add_argument("-n", type=int, default=100, help="number of test digits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="demo.png", help="PNG grid of originals and adversarial examples")
    p.add_argument("--json", default=None, help="also write the records here")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def attacks(model):
    from ..attacks import TEAM
    from ..paper import FGSM

    return [
        ("fgsm (eps 0.1)", "linf", FGSM(model, eps=0.1)),
        ("team paper L2", "l2", TEAM(model, norm="l2", mode="paper")),
        ("team min-norm L2", "l2", TEAM(model, norm="l2", mode="min-norm")),
        ("team iterated L2", "l2", TEAM(model, norm="l2", mode="iterated")),
        ("team iterated Linf", "linf", TEAM(model, norm="linf", mode="iterated")),
        ("team min-norm Linf", "linf", TEAM(model, norm="linf", mode="min-norm")),
        ("team iterated L0", "l0", TEAM(model, norm="l0")),
    ]


def save_grid(path: str, x, rows: list[tuple[str, object]], k: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = min(k, len(x))
    fig, axes = plt.subplots(len(rows) + 1, k, figsize=(1.1 * k, 1.2 * (len(rows) + 1)))
    for j in range(k):
        for i, (label, xs) in enumerate([("original", x)] + rows):
            ax = axes[i, j]
            ax.imshow(xs[j, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> int:
    import torch
    from tqdm.auto import tqdm

    from .. import data, zoo
    from ..bench import records
    from ..bench.harness import select_images

    torch.manual_seed(args.seed)
    dev = device(args.device)
    model = zoo.load("digits-cnn").to(dev).eval()  # weights ship with the package
    x_all, y_all = data.load("digits", "test")
    x, y, idx = select_images(model, x_all.to(dev), y_all.to(dev), args.n, args.seed)
    runs, rows = [], []
    for name, norm, attack in tqdm(attacks(model), desc="attacks", leave=False):
        res = attack(x, y)
        runs.append(records.run_record(x, res, name, "teamattack", norm, False))
        rows.append((name, res.x_adv))
    print(records.markdown_table(runs, title=f"demo: digits-cnn, {len(idx)} correctly classified test digits"))
    save_grid(args.out, x, rows)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        write_json(args.json, {"dataset": "digits", "model": "digits-cnn", "seed": args.seed,
                               "command": command_line(), "runs": runs})
    return 0
