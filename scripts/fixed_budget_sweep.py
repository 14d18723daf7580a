"""Fixed-budget TEAM against torchattacks' APGD-CE and PGD-100: robust accuracy over an eps sweep.

Same correctly classified test images (seeded) for every attack; success verified by a fresh
forward pass; every output checked to lie in the eps-ball and the [0, 1] box; gradients per image
counted by teamattack's CountingModel for all three. Writes JSON (every row) and Markdown.

    python scripts/fixed_budget_sweep.py --model digits-cnn --norm linf --eps 0.05,0.1,0.15 -n 500 \\
        --out docs/results/fixed-budget-digits-cnn-linf

`--attacks team --reuse OLD.json` reruns TEAM only and carries the peers' rows over from an earlier
run of the same model, norm, N and seed (the same images; the peers' code and seeds unchanged);
the Markdown says which rows were carried over.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import teamattack as ta
from teamattack.baselines import _imports
from teamattack.bench.harness import load_images
from teamattack.cli.common import write_json
from teamattack.counting import CountingModel


@dataclass
class Row:
    eps: float
    attack: str
    robust_accuracy: float
    gradients_per_image: float
    seconds_per_image: float
    reused: bool = False  # carried over from an earlier run (--reuse)


def _peer(name: str, model: torch.nn.Module, norm: str, eps: float):
    tam = _imports.torchattacks()
    if name == "apgd-ce-100":
        return tam.APGD(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=100, n_restarts=1,
                        loss="ce", seed=0)
    if name == "pgd-100":  # step 2.5 eps / steps (Madry et al.), uniform random start
        cls = tam.PGD if norm == "linf" else tam.PGDL2
        return cls(model, eps=eps, alpha=2.5 * eps / 100, steps=100, random_start=True)
    raise ValueError(name)


ATTACKS = ("team", "apgd-ce-100", "pgd-100")


def run(model_name: str, norm: str, eps_list: list[float], n: int, seed: int,
        attacks=ATTACKS) -> tuple[list[Row], int]:
    model = ta.zoo.load(model_name)
    dataset = model_name.split("-")[0]
    x, y, _ = load_images(dataset, model, n, seed)
    rows = []
    for eps in eps_list:
        for name in attacks:
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            if name == "team":
                res = ta.TEAM(model, norm=norm, eps=eps)(x, y)
                x_adv, grads = res.x_adv, res.counters.gradients
            else:
                counting = CountingModel(model)
                x_adv, grads = _peer(name, counting, norm, eps)(x, y), counting.gradients
            seconds = time.perf_counter() - t0
            d = (x_adv - x).flatten(1)
            size = d.norm(dim=1) if norm == "l2" else d.abs().amax(1)
            if not bool((size <= eps * (1 + 1e-5) + 1e-6).all()) or x_adv.min() < 0 or x_adv.max() > 1:
                raise RuntimeError(f"{name} left the eps-ball or the box")
            with torch.no_grad():
                robust = float((model(x_adv).argmax(1) == y).float().mean())
            rows.append(Row(eps, name, robust, grads / len(x), seconds / len(x)))
            print(f"eps={eps:.4g} {name:12s} robust accuracy {robust:.3f}  grads/img {grads / len(x):.1f}  "
                  f"s/img {seconds / len(x):.4f}", flush=True)
    return rows, len(x)


def reused_rows(path: str, model: str, norm: str, n: int, seed: int, eps_list: list[float],
                attacks) -> tuple[list[Row], str]:
    """The rows of `attacks` at `eps_list` from an earlier run's JSON (same model, norm, N, seed)
    and the command of that run (`reused_from` where it had itself carried rows over)."""
    import json

    doc = json.loads(Path(path).read_text())
    for key, want in (("model", model), ("norm", norm), ("n", n), ("seed", seed)):
        if doc.get(key) != want:
            raise SystemExit(f"--reuse {path}: {key} is {doc.get(key)!r}, this run has {want!r}")
    rows = [Row(**r) for r in doc["rows"] if r["attack"] in attacks and
            any(abs(r["eps"] - e) <= 1e-12 for e in eps_list)]
    missing = {(e, a) for e in eps_list for a in attacks} - {(r.eps, r.attack) for r in rows}
    if missing:
        raise SystemExit(f"--reuse {path}: no rows for {sorted(missing)}")
    return rows, doc.get("reused_from") or doc["command"]


def markdown(model_name: str, norm: str, n: int, rows: list[Row], cmd: str, reused: str | None = None) -> str:
    out = [f"# Fixed-budget TEAM vs APGD-CE-100 and PGD-100: {model_name}, {norm}, N = {n}", "",
           f"Command: `{cmd}`", "",
           "Robust accuracy over the N correctly classified test images (lower is a stronger attack); "
           "gradients per image as counted by teamattack's CountingModel; seconds per image on 2 shared "
           "CPU cores (one torch thread), indicative only.", "",
           ]
    if reused:
        out += [f"Rows marked * were carried over from the earlier run `{reused}` (the same images; the "
                "peers' code and seeds unchanged); the others were run by the command above.", ""]
    out += ["| eps | attack | robust accuracy | grads/img | s/img |", "|---|---|---|---|---|"]
    for r in rows:
        mark = "*" if r.reused else ""
        out.append(f"| {r.eps:.4g} | {r.attack}{mark} | {r.robust_accuracy:.3f} | {r.gradients_per_image:.1f} | "
                   f"{r.seconds_per_image:.4f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--norm", choices=("l2", "linf"), required=True)
    p.add_argument("--eps", required=True, help="comma-separated budgets")
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="path without suffix: writes OUT.json and OUT.md")
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated subset of {ATTACKS}")
    p.add_argument("--reuse", default=None, help="earlier JSON of this sweep: the rows of the attacks not run")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    attacks = [t for t in a.attacks.split(",") if t]
    if set(attacks) - set(ATTACKS):
        raise SystemExit(f"--attacks: choose from {ATTACKS}")
    eps_list = [float(e) for e in a.eps.split(",")]
    rest = [t for t in ATTACKS if t not in attacks]
    old, reused_from = [], None
    if a.reuse and rest:
        kept, reused_from = reused_rows(a.reuse, a.model, a.norm, a.n, a.seed, eps_list, rest)
        old = [Row(**{**asdict(r), "reused": True}) for r in kept]
    rows, n = run(a.model, a.norm, eps_list, a.n, a.seed, attacks)
    order = {t: i for i, t in enumerate(ATTACKS)}
    rows = sorted(rows + old, key=lambda r: (r.eps, order[r.attack]))
    cmd = "python scripts/fixed_budget_sweep.py " + " ".join(sys.argv[1:])
    write_json(a.out + ".json", {"model": a.model, "norm": a.norm, "n": n, "seed": a.seed, "command": cmd, "reused_from": reused_from,
                                 "teamattack": ta.__version__, "rows": [asdict(r) for r in rows]})
    Path(a.out + ".md").write_text(markdown(a.model, a.norm, n, rows, cmd, reused_from))


if __name__ == "__main__":
    main()
