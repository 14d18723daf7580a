"""Robustness-curve and distance plots from JSON documents (evaluate's, bench's), for the CLI and the report.

Both go through `experiments.plotting.robustness_curves` (the one curve helper) and
`distance_distributions`; the curves of minimum-norm runs are `RobustnessCurve`s.
"""
from __future__ import annotations

import math
from pathlib import Path

from .result import RobustnessCurve, fmt_eps


def evaluation_plot(doc: dict, path: str | Path) -> Path:
    """The robust accuracy of an evaluate document (`RobustAccuracy.to_dict()`, with the optional
    "curve": `RobustnessCurve.to_dict()`) against eps: markers per attack and the worst case, the
    minimum-norm curve as steps, the clean accuracy dotted."""
    from ..experiments.plotting import robustness_curves

    eps = [float(e) for e in doc.get("eps", [])]
    acc = doc.get("robust_accuracy", {})
    points = {a: [acc[a][fmt_eps(e)] for e in eps] for a in doc.get("attacks", []) if a in acc}
    if len(points) > 1 and doc.get("worst_case"):
        points["worst case"] = [doc["worst_case"][fmt_eps(e)] for e in eps]
    clean = doc.get("clean_accuracy")
    start = [0.0] if eps and min(eps) > 0 and clean is not None else []  # every line starts at (0, clean)
    points = {a: (start + eps, [clean] * len(start) + ys) for a, ys in points.items()}
    curves = {}
    c = doc.get("curve")
    if c:
        curves[f"{c['attack']} (min-norm run)"] = (c["eps"], c["accuracy"])
    title = f"{doc.get('model', '')} {doc.get('norm', '')}, n = {doc.get('n')}".strip()
    return robustness_curves(Path(path), doc.get("norm", ""), curves, points, clean=clean, title=title)


def bench_distances(doc: dict) -> dict[tuple[str, str], dict[str, list[float | None]]]:
    """Per (norm, case) the per-image distances of the minimum-norm runs of a bench document
    (None where the attack failed), from the records' `per_image` arrays."""
    out: dict[tuple[str, str], dict[str, list[float | None]]] = {}
    for rec in doc.get("runs", []):
        per = rec.get("per_image") if isinstance(rec, dict) else None
        norm = rec.get("norm") if isinstance(rec, dict) else None
        if not per or "eps" in rec or norm not in per:
            continue
        dist = [d if s and d is not None and math.isfinite(d) else None for s, d in zip(per["success"], per[norm])]
        out.setdefault((norm, rec.get("case", "untargeted")), {})[rec["attack"]] = dist
    return out


def bench_curves(doc: dict, points: int = 101) -> dict[tuple[str, str], dict[str, RobustnessCurve]]:
    """The robustness curve of every minimum-norm run of a bench document (its images are all
    correctly classified, so each curve starts at 1)."""
    return {key: {a: RobustnessCurve(key[0], a, len(d), [True] * len(d), d) for a, d in runs.items()}
            for key, runs in bench_distances(doc).items()}


def bench_plots(doc: dict, out_dir: str | Path) -> list[Path]:
    """For every (norm, case) of a bench document: robustness-curve-NORM[-CASE].png (accuracy vs eps
    per attack; fixed-budget rows as markers) and distances-NORM[-CASE].png. Returns the paths."""
    from ..experiments.plotting import distance_distributions, robustness_curves

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (norm, case), curves in bench_curves(doc).items():
        top = max((c.grid()[-1] for c in curves.values()), default=1.0)
        grid = [top * i / 200 for i in range(201)]
        points: dict[str, tuple[list[float], list[float]]] = {}
        for rec in doc.get("runs", []):
            if rec.get("norm") == norm and rec.get("case") == case and isinstance(rec.get("eps"), (int, float)):
                ra = rec.get("robust_accuracy") or {}
                for e, v in ra.items():
                    xs, ys = points.setdefault(rec["attack"], ([], []))
                    xs.append(float(e))
                    ys.append(v)
        points = {a: tuple(map(list, zip(*sorted(zip(*xy))))) for a, xy in points.items()}
        suffix = norm if case == "untargeted" else f"{norm}-{case}"
        title = f"{doc.get('model', '')} {norm} {case}, n = {doc.get('n')}"
        paths.append(robustness_curves(out_dir / f"robustness-curve-{suffix}.png", norm,
                                       {a: (grid, c.curve(grid)) for a, c in curves.items()}, points, title=title))
        paths.append(distance_distributions(out_dir / f"distances-{suffix}.png", norm,
                                            {a: c.distances for a, c in curves.items()}, title=title))
    return paths
