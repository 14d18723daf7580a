"""`teamattack demo`: the main job on the embedded digits data (no files needed).

Loads the digits model shipped with the package (teamattack train --arch digits-cnn makes it), attacks
100 correctly classified test digits with FGSM and TEAM (L2 / Linf minimum-norm, L2 / Linf / L0
iterated, L2 paper mode), prints the table and writes a PNG grid of originals and adversarials.
"""
from __future__ import annotations

from .common import command_line, device, device_name, nonneg_int, note, positive_int, progress, write_json


def register(sub) -> None:
    p = sub.add_parser("demo", help="attack 100 digits with FGSM and TEAM; print a table, write demo.png")
    p.add_argument("-n", type=positive_int, default=100, help="number of test digits")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the choice of digits")
    p.add_argument("--out", default="demo.png", help="PNG grid of originals and adversarial examples")
    p.add_argument("--json", default=None, help="also write the records here")
    p.add_argument("--device", default=None, type=device_name, help="cpu | cuda | cuda:N (default: cuda if available)")
    # the digits model is too small to gain from more threads, and extra threads on a busy machine
    # cost several times the work (the common default, one per core, is for the larger models)
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads")
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


def save_grid(path: str, model, x, y, rows: list[tuple[str, str, object]], k: int = 10,
              perturbation_of: str = "team min-norm L2") -> None:
    """demo.png: originals, then each attack's adversarials (true -> predicted class, success, distance
    in its norm) and the perturbation row of `perturbation_of` (experiments.plotting.image_grid)."""
    import torch

    from .. import metrics
    from ..experiments.plotting import GridCell, image_grid

    k = min(k, len(x))
    img = lambda t: t.detach().cpu().permute(1, 2, 0).numpy()
    cells = [[GridCell(img(x[j]), true=int(y[j])) for j in range(k)]]
    labels = ["original"]
    pert_cells = None
    for label, norm, xs in rows:
        with torch.no_grad():
            pred = model(xs[:k]).argmax(1)
        dist = {"l0": metrics.l0, "l2": metrics.l2, "linf": metrics.linf}[norm](x[:k], xs[:k])
        cells.append([GridCell(img(xs[j]), true=int(y[j]), pred=int(pred[j]), success=bool(pred[j] != y[j]),
                               distance=float(dist[j]), norm=norm) for j in range(k)])
        labels.append(label)
        if label == perturbation_of:
            pert_cells = [GridCell(img(xs[j] - x[j]), perturbation=True, title=f"x' - x ({norm})") for j in range(k)]
    if pert_cells is not None:
        cells.append(pert_cells)
        labels.append(f"perturbation\n{perturbation_of}")
    image_grid(path, cells, labels, suptitle="teamattack demo: digits-cnn (red: the attack failed)")


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
    for name, norm, attack in tqdm(attacks(model), desc="attacks", leave=False, disable=not progress(args)):
        res = attack(x, y)
        runs.append(records.run_record(x, res, name, "teamattack", norm, False))
        rows.append((name, norm, res.x_adv))
    print(records.markdown_table(runs, title=f"demo: digits-cnn, {len(idx)} correctly classified test digits"))
    save_grid(args.out, model, x, y, rows)
    note(args, f"wrote {args.out}")
    if args.json:
        write_json(args.json, {"dataset": "digits", "model": "digits-cnn", "seed": args.seed,
                               "command": command_line(), "runs": runs})
    return 0
