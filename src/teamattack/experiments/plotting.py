"""Matplotlib helpers (Agg backend, imported lazily so the CLI starts fast)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def line_panels(path: Path, panels: Sequence[dict], suptitle: str | None = None) -> Path:
    """One row of line plots. Each panel: x, y (or ys: {label: y}), xlabel, ylabel, title, [marker]."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, p in zip(axes[0], panels):
        series = p.get("ys") or {None: p["y"]}
        for label, ys in series.items():
            ax.plot(p["x"], ys, marker=p.get("marker", "o"), markersize=3.5, label=label)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(p["ylabel"])
        ax.set_title(p.get("title", ""), fontsize=10)
        ax.grid(alpha=0.3)
        if p.get("ylim"):
            ax.set_ylim(*p["ylim"])
        if p.get("ys"):
            ax.legend(fontsize=8)
    return _finish(fig, path, suptitle)


def grouped_bars(path: Path, labels: Sequence[str], groups: dict[str, Sequence[float]],
                 ylabel: str, title: str) -> Path:
    plt = _plt()
    import numpy as np

    fig, ax = plt.subplots(figsize=(8.0, 4.0))
    k = len(groups)
    width = 0.8 / k
    xs = np.arange(len(labels))
    for i, (name, vals) in enumerate(groups.items()):
        ax.bar(xs + (i - (k - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


@dataclass
class GridCell:
    """One cell of `image_grid`.

    image: (H, W, C) array; pixels in [0, 1], or a signed perturbation when `perturbation`.
    true / pred: classes before / after the attack (the title reads "true -> pred");
    success: whether the attack reached its goal; distance and norm: its size ("L2 1.23");
    title: replaces the generated title.
    """

    image: Any
    true: int | None = None
    pred: int | None = None
    success: bool | None = None
    distance: float | None = None
    norm: str | None = None
    perturbation: bool = False
    title: str | None = None

    def label(self) -> str:
        if self.title is not None:
            return self.title
        top = ""
        if self.true is not None and self.pred is not None:
            top = f"{self.true} -> {self.pred}"
        elif self.true is not None:
            top = f"class {self.true}"
        if self.success is not None:
            top += (" ok" if self.success else " FAIL")
        bottom = ""
        if self.distance is not None and self.norm:
            bottom = f"{_NORM_LABEL.get(self.norm, self.norm)} {_short(self.distance)}"
        return "\n".join(t for t in (top.strip(), bottom) if t)


_NORM_LABEL = {"l0": "L0", "l2": "L2", "linf": "Linf"}


def _short(v: float) -> str:
    if v != v:  # nan
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def image_grid(path: Path, cells: Sequence[Sequence[GridCell | None]], row_labels: Sequence[str],
               suptitle: str | None = None, cell_size: float = 1.25) -> Path:
    """A grid of images, each labelled true -> predicted class, success and distance (GridCell).

    Rows of cells (None leaves a blank); perturbation cells (x_adv - x) are drawn with a diverging
    colour map centred at 0, each scaled by its own largest change. The one grid helper of the
    project: the paper figures (e4-grids, e5-synthetic, math-fig1) and `teamattack demo` use it.
    """
    plt = _plt()
    import numpy as np

    rows = len(cells)
    cols = max(len(r) for r in cells)
    fig, axes = plt.subplots(rows, cols, figsize=(cell_size * cols + 0.8, (cell_size + 0.35) * rows),
                             squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = cells[r][c] if c < len(cells[r]) else None
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7)
            if cell is None:
                ax.set_frame_on(False)
                continue
            img = np.asarray(cell.image, dtype=float)
            if img.ndim == 2:
                img = img[..., None]
            if cell.perturbation:
                p = img.mean(-1) if img.shape[-1] > 1 else img[..., 0]
                m = float(np.abs(p).max()) or 1.0
                ax.imshow(p, cmap="seismic", vmin=-m, vmax=m, interpolation="nearest")
            elif img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(img.clip(0, 1), interpolation="nearest")
            colour = "black" if cell.success is None or cell.success else "red"
            ax.set_title(cell.label(), fontsize=6, color=colour)
    return _finish(fig, path, suptitle, fontsize=9)


def histograms(path: Path, panels: Sequence[dict], suptitle: str | None = None) -> Path:
    """Each panel: values (list), xlabel, title, [log] (log10 x axis)."""
    plt = _plt()
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, p in zip(axes[0], panels):
        v = np.asarray([a for a in p["values"] if np.isfinite(a) and a > 0], dtype=float)
        if len(v):
            if p.get("log", True):
                ax.hist(np.log10(v), bins=30)
                ax.set_xlabel("log10 " + p["xlabel"])
            else:
                ax.hist(v, bins=30)
                ax.set_xlabel(p["xlabel"])
        ax.set_title(p.get("title", ""), fontsize=9)
        ax.grid(alpha=0.3)
    return _finish(fig, path, suptitle)


def heat_maps(path: Path, panels: Sequence[dict], suptitle: str | None = None, columns: int = 4) -> Path:
    """Annotated heat maps, ``columns`` per row of the figure.

    Each panel: matrix (rows of numbers; NaN left blank), row_labels, col_labels, title, [xlabel],
    [ylabel], [vmin=0, vmax=1], [fmt="{:.0%}"] (the annotation of each cell).
    """
    plt = _plt()
    import numpy as np

    k = len(panels)
    cols = min(columns, k)
    rows = -(-k // cols)
    size = max(max(len(p["col_labels"]) for p in panels), 2) * 0.55 + 1.6
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows * 0.9), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.set_axis_off()
            continue
        p = panels[i]
        m = np.asarray(p["matrix"], dtype=float)
        vmin, vmax = p.get("vmin", 0.0), p.get("vmax", 1.0)
        ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(m.shape[1]))
        ax.set_xticklabels(p["col_labels"], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(m.shape[0]))
        ax.set_yticklabels(p["row_labels"], fontsize=7)
        fmt = p.get("fmt", "{:.0%}")
        for r in range(m.shape[0]):
            for c in range(m.shape[1]):
                if np.isfinite(m[r, c]):
                    dark = (m[r, c] - vmin) / ((vmax - vmin) or 1.0) < 0.6
                    ax.text(c, r, fmt.format(m[r, c]), ha="center", va="center", fontsize=6,
                            color="white" if dark else "black")
        ax.set_title(p.get("title", ""), fontsize=9)
        if p.get("xlabel"):
            ax.set_xlabel(p["xlabel"], fontsize=8)
        if p.get("ylabel"):
            ax.set_ylabel(p["ylabel"], fontsize=8)
    return _finish(fig, path, suptitle)


_NORM_AXIS = {"l0": "L0 (pixels)", "l2": "L2", "linf": "Linf"}


def robustness_curves(path: Path, norm: str, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                      points: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                      clean: float | None = None, title: str | None = None) -> Path:
    """Robust accuracy against eps, one line per attack: the one curve helper (evaluate, bench, report).

    curves: {label: (eps grid, accuracy)} drawn as steps (minimum-norm runs thresholded at every
    eps); points: {label: (eps, accuracy)} drawn as markers joined by lines (fixed-budget attacks
    run at a few eps); clean: a dotted line at the clean accuracy.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for label, (xs, ys) in (curves or {}).items():
        ax.step(list(xs), list(ys), where="post", label=label, linewidth=1.6)
    for i, (label, (xs, ys)) in enumerate((points or {}).items()):  # shrinking markers: overlaps stay visible
        ax.plot(list(xs), list(ys), marker="o", markersize=max(7.5 - 1.5 * i, 2.5), linestyle="--", linewidth=1.0,
                label=label)
    if clean is not None:
        ax.axhline(clean, color="grey", linestyle=":", linewidth=1.0, label=f"clean {clean:.3f}")
    ax.set_xlabel(f"eps ({_NORM_AXIS.get(norm, norm)})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "robust accuracy vs eps", fontsize=10)
    return _finish(fig, path)


def distance_distributions(path: Path, norm: str, distances: Mapping[str, Sequence[float | None]],
                           title: str | None = None) -> Path:
    """Per-image distances per attack: a histogram (successes) and the CDF over all images
    (share broken within d; failures, given as None / inf / nan, never count)."""
    plt = _plt()
    import numpy as np

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    found = {k: np.asarray([v for v in d if v is not None and np.isfinite(v)], dtype=float) for k, d in distances.items()}
    top = max((float(v.max()) for v in found.values() if len(v)), default=1.0) or 1.0
    bins = np.linspace(0.0, top * 1.02, 31)
    for label, v in found.items():
        n = max(len(distances[label]), 1)
        hist.hist(v, bins=bins, histtype="step", linewidth=1.4, label=label)
        xs = np.sort(v)
        cdf.step(np.concatenate([[0.0], xs]), np.arange(len(xs) + 1) / n, where="post", label=label)
    axis = _NORM_AXIS.get(norm, norm)
    hist.set_xlabel(f"{axis} distance (successes)")
    hist.set_ylabel("images")
    cdf.set_xlabel(f"{axis} distance d")
    cdf.set_ylabel("share of images broken within d")
    cdf.set_ylim(-0.02, 1.02)
    for ax in (hist, cdf):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _finish(fig, path, title or "distance distributions")


def _finish(fig, path, suptitle: str | None = None, fontsize: int = 10):
    """Title, layout, save at 120 dpi (atomically: never a half-written picture), close; returns the path."""
    from ..atomic import atomic_write

    plt = _plt()
    if suptitle:
        fig.suptitle(suptitle, fontsize=fontsize)
    fig.tight_layout()
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=fmt))
    finally:
        plt.close(fig)
    return path
