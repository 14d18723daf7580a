"""Are the images where an attack misses the exact optimum hard for a fixed-budget attack too?

Reads a `teamattack bench --exact` document (untargeted L2 or Linf), takes the images where the
chosen attack ended more than 1% above the proven optimum, and runs APGD-style ascents
(`teamattack.attacks.fixed_budget.ascent`, margin and cross-entropy loss, from x and from random
starts) inside balls of radius f x that attack's distance, for each f of `--fractions`. Every
fraction below 1 / ratio still holds the optimum's point, so an adversarial point exists there;
the table says whether gradient ascent finds one. Usage:

    python scripts/exact_misses.py docs/results/exact/untargeted-l2-digits-mlp.json \
        --out docs/results/exact/misses-untargeted-l2-digits-mlp.md
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import teamattack as ta
from teamattack import zoo
from teamattack.attacks import fixed_budget as fb
from teamattack.bench.harness import load_images
from teamattack.counting import CountingModel


@dataclass(frozen=True)
class Miss:
    """One image past 1%: its bench position, the attack's distance and the optimum."""

    position: int
    distance: float
    optimum: float

    @property
    def ratio(self) -> float:
        return self.distance / self.optimum


def exact_problem(doc: dict) -> dict:
    """The document's untargeted exact record (norm, per-image optima)."""
    (exact,) = (v for k, v in doc["exact"].items() if k.endswith("/untargeted"))
    return exact


def distances(doc: dict, attack: str) -> list[float | None] | None:
    """The attack's per-image distances in the document (None where it failed; None: not kept)."""
    run = next((r for r in doc["runs"] if r["attack"] == attack), None)
    if run is None:
        raise SystemExit(f"no run named {attack!r} in the document ({[r['attack'] for r in doc['runs']]})")
    if "per_image" not in run:
        return None
    per = run["per_image"]
    return [d if ok else None for ok, d in zip(per["success"], per[exact_problem(doc)["norm"]])]


def misses(doc: dict, dist: list[float | None], tol: float = 0.01) -> list[Miss]:
    """The images whose proven optimum the distances exceed by more than tol."""
    out = []
    for i, (e, d) in enumerate(zip(exact_problem(doc)["per_image"], dist)):
        if e["status"] == "optimal" and d is not None and d > (1 + tol) * e["eps"]:
            out.append(Miss(i, float(d), float(e["eps"])))
    return out


def hits(model: CountingModel, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, starts: int,
         steps: int) -> int:
    """How many of `starts` x 2 ascents (margin and cross-entropy; start 0 from x, the others from
    a random point of the ball) end on a point the network calls adversarial, inside eps."""
    found = 0
    for s in range(starts):
        torch.manual_seed(s)
        start = x.clone() if s == 0 else (x + fb._noise(x, eps, norm)).clamp(0, 1)
        for loss in ("margin", "ce"):
            a = fb.ascent(model, x, start, y, None, eps=eps, norm=norm, steps=steps, loss=loss)
            if bool(a.adversarial[0]):
                d = (a.points - x).flatten()
                size = d.norm() if norm == "l2" else d.abs().max()
                assert float(size) <= eps * (1 + 1e-5), "the ascent left its ball"
                with torch.no_grad():
                    assert int(model(a.points).argmax(1)[0]) != int(y[0]), "not adversarial"
                found += 1
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("document", help="a bench --exact JSON (untargeted L2 or Linf)")
    p.add_argument("--attack", default=None, help="the run judged (default: team-l2 / team-linf)")
    p.add_argument("--fractions", default="1.01,1.0,0.995,0.99,0.98", help="ball radii in units of the attack's distance")
    p.add_argument("--starts", type=int, default=5, help="starts per loss (the first from x)")
    p.add_argument("--steps", type=int, default=100, help="ascent steps per start")
    p.add_argument("--data", default=None, help="dataset root (default: TEAMATTACK_DATA or ../shared/datasets)")
    p.add_argument("--only", type=int, default=None, help="the first K misses only (a quick look)")
    p.add_argument("--out", default=None, help="Markdown file to write (and .json beside it)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    doc = json.loads(Path(a.document).read_text())
    attack = a.attack or _team_run(doc)
    norm = exact_problem(doc)["norm"]
    fractions = [float(f) for f in a.fractions.split(",")]
    model = zoo.load(doc["model"]).eval()
    x, y, idx = load_images(doc["dataset"], model, doc["n"], seed=doc["seed"], root=a.data)
    if idx != doc["images"]:
        raise SystemExit("the images differ from the document's (dataset or model changed)")
    counting = CountingModel(model)
    dist, source = distances(doc, attack), "the document's"
    if dist is None:   # an older document without per-image distances: TEAM's default, rerun
        if not attack.startswith("team-"):
            raise SystemExit(f"the document keeps no per-image distances for {attack!r}")
        res = ta.TEAM(model, norm)(x, y)
        dist = [float(d) if ok else None for ok, d in zip(res.success.tolist(), getattr(res, norm).tolist())]
        source = f"`TEAM(model, {norm!r})` rerun (the document keeps no per-image distances)"
    todo = misses(doc, dist)
    todo = todo[: a.only] if a.only is not None else todo
    rows = []
    for m in todo:
        xi, yi = x[m.position:m.position + 1], y[m.position:m.position + 1]
        rows.append({"position": m.position, "ratio": m.ratio, "distance": m.distance, "optimum": m.optimum,
                     "found": [hits(counting, xi, yi, f * m.distance, norm, a.starts, a.steps) for f in fractions]})
    tries = 2 * a.starts
    lines = [f"# Fixed-budget ascents on the images where {attack} misses the optimum ({doc['model']}, {norm})", "",
             f"`python scripts/exact_misses.py {a.document}` (distances: {source}; {a.starts} starts x (margin, cross-entropy) x "
             f"{a.steps} steps per ball; the ball's radius f x the attack's distance; the optimum lies inside "
             "every ball with f > 1 / ratio).", "",
             "| image | ratio to the optimum | " + " | ".join(f"f = {f} (radius / optimum)" for f in fractions) + " |",
             "|---|---|" + "---|" * len(fractions)]
    for r in rows:
        cells = [f"{n} / {tries} ({f * r['ratio']:.4f})" for f, n in zip(fractions, r["found"])]
        lines.append(f"| {r['position']} | {r['ratio']:.4f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
        Path(a.out).with_suffix(".json").write_text(json.dumps(
            {"document": a.document, "attack": attack, "norm": norm, "fractions": fractions, "starts": a.starts,
             "steps": a.steps, "rows": rows}, indent=1) + "\n")
    return 0


def _team_run(doc: dict) -> str:
    names = [r["attack"] for r in doc["runs"]]
    return next(n for n in ("team-l2", "team-linf") if n in names)


if __name__ == "__main__":
    sys.exit(main())
