"""JSON run documents -> `Section`s of tables and images (no HTML here)."""
from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_ROWS = 200          # longer record lists are cut (the page says so)
MAX_INLINE_LIST = 12    # longer lists of scalars are summarised, not printed
IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Image:
    caption: str
    mime: str
    data: bytes

    @property
    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass
class Section:
    title: str
    source: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt(value: Any) -> str:
    """A cell: numbers to 4 significant digits, lists summarised, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if len(value) <= MAX_INLINE_LIST and all(not isinstance(v, (dict, list)) for v in value):
            return ", ".join(fmt(v) for v in value)
        nums = [float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums and len(nums) == len(value):
            finite = sorted(v for v in nums if math.isfinite(v))
            if finite:
                med = finite[len(finite) // 2]
                return f"{len(value)} values, median {med:.4g}, range [{finite[0]:.4g}, {finite[-1]:.4g}]"
        return f"{len(value)} items"
    if isinstance(value, dict):
        return f"{len(value)} fields"
    return str(value)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """{'l2': {'median': 1, 'mean': 2}} -> {'l2 median': 1, 'l2 mean': 2} (two levels deep)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and prefix == "" and all(not isinstance(w, dict) for w in v.values()):
            out.update(_flatten(v, prefix=key + " "))
        else:
            out[key] = v
    return out


PER_IMAGE_KEYS = ("per_image", "robust")  # per-image arrays of bench / evaluate records: plotted, not tabled


def _records_table(caption: str, records: list[dict]) -> Table:
    flat = [_flatten({k: v for k, v in r.items() if k not in PER_IMAGE_KEYS}) for r in records[:MAX_ROWS]]
    columns: list[str] = []
    for r in flat:
        for k, v in r.items():
            if k not in columns and not (isinstance(v, list) and len(v) > MAX_INLINE_LIST):
                columns.append(k)
    rows = [[fmt(r.get(c)) for c in columns] for r in flat]
    note = f"first {MAX_ROWS} of {len(records)} rows" if len(records) > MAX_ROWS else ""
    return Table(caption, columns, rows, note)


def _mapping_table(caption: str, mapping: dict[str, dict]) -> Table:
    t = _records_table(caption, [{"": k, **v} for k, v in mapping.items()])
    return t


def _image(path: Path, caption: str) -> Image | None:
    mime = IMAGE_SUFFIXES.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return Image(caption, mime, path.read_bytes())


def _find_file(name: str, base: Path) -> Path | None:
    p = Path(name)
    candidates = [p] if p.is_absolute() else [base / p, Path.cwd() / p, base / p.name]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _collect_images(doc: Any, base: Path, found: dict[Path, str], key: str = "") -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            _collect_images(v, base, found, k)
    elif isinstance(doc, list):
        for v in doc:
            _collect_images(v, base, found, key)
    elif isinstance(doc, str) and Path(doc).suffix.lower() in IMAGE_SUFFIXES and len(doc) < 500:
        path = _find_file(doc, base)
        if path is not None:
            found.setdefault(path.resolve(), key or path.name)


def _title(doc: dict, path: Path) -> str:
    for keys in (("experiment",), ("suite", "model"), ("kind", "model"), ("name",)):
        if all(isinstance(doc.get(k), str) for k in keys):
            return " / ".join(doc[k] for k in keys)
    return path.stem


def _bench_chart(runs: list[dict]) -> Image | None:
    """Median distance per attack (the suite's norm), from the bench runs' records."""
    rows = [(r["attack"], r[r["norm"]]["median"]) for r in runs
            if isinstance(r, dict) and isinstance(r.get("attack"), str) and isinstance(r.get("norm"), str)
            and isinstance(r.get(r["norm"]), dict) and isinstance(r[r["norm"]].get("median"), (int, float))]
    if len(rows) < 2:
        return None
    import importlib.util
    import tempfile

    if importlib.util.find_spec("matplotlib") is None:  # the plots extra is optional: tables only
        return None
    from ..experiments.plotting import grouped_bars

    norm = runs[0].get("norm", "")
    labels = [f"{a} ({r.get('case')})" if r.get("case") not in (None, "untargeted") else a
              for (a, _), r in zip(rows, runs)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bars.png"
        grouped_bars(out, labels, {f"median {norm}": [v for _, v in rows]},
                     ylabel=f"median {norm} over successes", title="median distance per attack")
        return Image(f"median {norm} per attack (over successes)", "image/png", out.read_bytes())


def _have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None  # the plots extra is optional: tables only


def _plot_image(draw, caption: str) -> Image | None:
    """draw(path) writes a PNG (experiments.plotting via evaluation.plots); None without matplotlib."""
    import tempfile

    if not _have_matplotlib():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plot.png"
        draw(out)
        return Image(caption, "image/png", out.read_bytes())


def _bench_curves(doc: dict) -> list[Image]:
    """The robustness curves of a bench document's minimum-norm runs (records with per-image distances)."""
    import tempfile

    from ..evaluation.plots import bench_distances, bench_plots

    if not bench_distances(doc) or not _have_matplotlib():
        return []
    with tempfile.TemporaryDirectory() as tmp:
        return [Image(f"{p.stem} (from the per-image distances)", "image/png", p.read_bytes())
                for p in bench_plots(doc, tmp)]


def _evaluation_section(doc: dict, section: Section, base: Path) -> None:
    """An evaluate document (kind robust-accuracy): facts, the accuracy table, the work, the curve."""
    from ..evaluation.plots import evaluation_plot
    from ..evaluation.result import fmt_eps

    for k, v in doc.items():
        if _is_scalar(v) and k != "plot":
            section.facts.append((k, fmt(v)))
    eps = [float(e) for e in doc.get("eps", [])]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    acc, cost = doc.get("robust_accuracy", {}), doc.get("cost", {})
    rows = [["clean"] + [pct(doc.get("clean_accuracy"))] * len(eps) + ["-", "-"]]
    for a in doc.get("attacks", []):
        c = cost.get(a, {})
        rows.append([a] + [pct(acc.get(a, {}).get(fmt_eps(e))) for e in eps] +
                    [fmt(c.get("seconds")), fmt(c.get("gradients"))])
    for g, v in (doc.get("groups") or {}).items():
        rows.append([g] + [pct(v["robust_accuracy"].get(fmt_eps(e))) for e in eps] + [fmt(v.get("seconds")), "-"])
    if doc.get("worst_case"):
        rows.append(["worst case"] + [pct(doc["worst_case"].get(fmt_eps(e))) for e in eps] + ["-", "-"])
    how = "cascade (each attack on the images the earlier ones left)" if doc.get("cascade") else \
        "each attack on every clean-correct image"
    if eps:
        section.tables.append(Table(f"robust accuracy ({doc.get('norm')}) over all {doc.get('n')} images",
                                    ["attack"] + [f"eps={fmt_eps(e)}" for e in eps] + ["seconds", "gradients"],
                                    rows, note=f"clean errors count as broken; {how}"))
    c = doc.get("curve")
    if c:
        step = max(len(c["eps"]) // 10, 1)  # about ten points of the curve
        section.tables.append(Table(f"minimum-norm curve: {c['attack']} ({fmt(c.get('seconds'))} s)",
                                    ["eps"] + [fmt(float(e)) for e in c["eps"][::step]],
                                    [["accuracy"] + [pct(v) for v in c["accuracy"][::step]]]))
    given = doc.get("plot")
    if not (isinstance(given, str) and _find_file(given, base)):
        img = _plot_image(lambda out: evaluation_plot(doc, out), "robust accuracy vs eps")
        if img is not None:
            section.images.append(img)


def _walk(doc: dict, section: Section, prefix: str = "", depth: int = 0) -> None:
    for k, v in doc.items():
        name = f"{prefix}{k}"
        if _is_scalar(v) or (isinstance(v, list) and all(_is_scalar(w) for w in v)):
            if depth == 0:
                section.facts.append((name, fmt(v)))
            continue
        if isinstance(v, list) and v and all(isinstance(w, dict) for w in v):
            section.tables.append(_records_table(name, v))
        elif isinstance(v, dict) and v and all(isinstance(w, dict) for w in v.values()) and \
                all(all(not isinstance(x, dict) or all(not isinstance(z, dict) for z in x.values())
                        for x in w.values()) for w in v.values()):
            section.tables.append(_mapping_table(name, v))
        elif isinstance(v, dict) and depth < 2:
            scalars = {kk: vv for kk, vv in v.items() if _is_scalar(vv) or isinstance(vv, list)
                       and all(_is_scalar(x) for x in vv)}
            if scalars:
                section.tables.append(Table(name, ["field", "value"], [[kk, fmt(vv)] for kk, vv in scalars.items()]))
            _walk({kk: vv for kk, vv in v.items() if kk not in scalars}, section, prefix=name + ".", depth=depth + 1)
        elif isinstance(v, list) and v and all(isinstance(w, list) for w in v):
            section.notes.append(f"{name}: a {len(v)} x {len(v[0]) if v[0] else 0} array (not shown)")


def load(path: str | os.PathLike) -> Section:
    """A JSON run document (or an image file) as a Section."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        img = _image(path, path.name)
        if img is None:
            raise FileNotFoundError(path)
        return Section(title=path.stem, source=str(path), images=[img])
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(doc, dict):
        doc = {"items": doc} if isinstance(doc, list) else {"value": doc}
    section = Section(title=_title(doc, path), source=str(path))
    if doc.get("kind") == "robust-accuracy":
        _evaluation_section(doc, section, path.parent)
    else:
        _walk(doc, section)
        runs = doc.get("runs")
        if isinstance(runs, list):
            chart = _bench_chart(runs)
            if chart is not None:
                section.images.append(chart)
            if not doc.get("plots"):  # bench --plot's PNGs are embedded below; otherwise draw them here
                section.images += _bench_curves(doc)
    found: dict[Path, str] = {}
    _collect_images(doc, path.parent, found)
    for p, key in found.items():
        img = _image(p, f"{key}: {p.name}")
        if img is not None:
            section.images.append(img)
    return section
