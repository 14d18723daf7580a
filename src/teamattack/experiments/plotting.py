"""Matplotlib helpers (Agg backend, imported lazily so the CLI starts fast)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def image_grid(path: Path, images, row_labels: Sequence[str], titles, suptitle: str | None = None,
               col_groups: Sequence[str] | None = None) -> Path:
    """images: array (rows, cols, H, W, C) in [0,1]; titles: (rows, cols) strings."""
    plt = _plt()
    rows, cols = len(images), len(images[0])
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            img = images[r][c]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(titles[r][c], fontsize=7)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
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


def _finish(fig, path, suptitle: str | None = None, fontsize: int = 10):
    """Title, layout, save at 120 dpi, close; returns the path."""
    plt = _plt()
    if suptitle:
        fig.suptitle(suptitle, fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
