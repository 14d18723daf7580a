"""Run records of the project's JSON, the targeted cases, the per-image best, robust accuracy, tables.

A run record (one row of a benchmark) is

    {"attack", "library", "norm", "targeted", "case", "n", "asr",
     "l0": {"mean", "median"}, "l2": {...}, "linf": {...}, "psnr": {...},
     "seconds_per_image", "grad_evals_per_image", "hvps_per_image", "forwards_per_image",
     ["ratio_to_optimum": {"median", "mean", "p90", "worst", "n", "solved", "within_1pct", "off"}], ["eps": e], ["robust_accuracy": {eps: acc}]}

with distortion statistics over successes only (SPEC 8). Internally a run is kept as per-example
arrays (`Arrays`: success, l0, l2, linf, psnr as lists, plus the work counters summed over the
examples), which is also what the resume sidecar (`Sidecar`, at the end) stores, so a resumed
benchmark produces exactly the same records as an uninterrupted one.
"""
from __future__ import annotations

import base64
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..metrics import distances, stats
from ..result import AttackResult

DIST_KEYS = ("l0", "l2", "linf", "psnr")
COUNTER_KEYS = ("forwards", "gradients", "hvps", "seconds")

# per-example arrays of one run: {"success": [bool], "l0": [..], "l2": [..], "linf": [..],
# "psnr": [..], "forwards": int, "gradients": int, "hvps": int, "seconds": float, "units": int}; a unit's
# arrays may also hold its points ("points": encode_points(x_adv)), kept for the exact stage's starts
Arrays = dict


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().cpu().double().tolist()]


def example_arrays(x: torch.Tensor, result: AttackResult) -> Arrays:
    """Per-example success and distances (recomputed from x and result.x_adv) and the counters."""
    d = distances(x, result.x_adv)
    out: Arrays = {"success": [bool(v) for v in result.success.detach().cpu().tolist()]}
    for k in DIST_KEYS:
        out[k] = _floats(d[k])
    c = result.counters
    out.update(forwards=int(c.forwards), gradients=int(c.gradients), hvps=int(c.hvps),
               seconds=float(c.seconds), peak_memory_mb=float(c.peak_memory_mb), units=1)
    return out


def encode_points(t: torch.Tensor) -> dict:
    """An attack's points as JSON: float32 bytes in base64 and the shape (exact for float32 inputs)."""
    a = t.detach().cpu().float().contiguous()
    return {"shape": list(a.shape), "float32": base64.b64encode(a.numpy().astype("<f4").tobytes()).decode("ascii")}


def decode_points(d: dict) -> torch.Tensor:
    """The tensor `encode_points` stored (float32)."""
    import numpy as np

    raw = np.frombuffer(base64.b64decode(d["float32"]), dtype="<f4").copy()
    return torch.from_numpy(raw).reshape(d["shape"])


def concat(parts: Sequence[Arrays]) -> Arrays:
    """Arrays of consecutive batches joined into one run (counters summed)."""
    out: Arrays = {"success": [], **{k: [] for k in DIST_KEYS}}
    for k in COUNTER_KEYS:
        out[k] = 0
    out["units"] = 0
    out["peak_memory_mb"] = 0.0
    for p in parts:
        out["peak_memory_mb"] = max(out["peak_memory_mb"], float(p.get("peak_memory_mb", 0.0)))
        out["success"] += list(p["success"])
        for k in DIST_KEYS:
            out[k] += list(p[k])
        for k in COUNTER_KEYS:
            out[k] += p[k]
        out["units"] += p.get("units", 1)
    out["seconds"] = float(out["seconds"])
    return out


def _n(arr: Arrays) -> int:
    return len(arr["success"])


def ratio_stats(dist: Sequence[float], success: Sequence[bool], optimum: Sequence[float] | None,
                within: float = 0.01) -> dict | None:
    """distance / optimum over successes with a known positive optimum, image by image.

    median, mean, p90 and worst of the ratio (n: how many), `solved` (images with a proven
    optimum), `within_1pct`: the share of the solved images the attack broke within (1 + within)
    times the optimum (a failure counts as not within), and `off` {image position: ratio} for the
    images past that (a failure: null).
    """
    if optimum is None:
        return None
    r, off, solved, close = [], {}, 0, 0
    for i, (d, s, o) in enumerate(zip(dist, success, optimum)):
        if o is None or not math.isfinite(o) or o <= 0:
            continue
        solved += 1
        if s and math.isfinite(d):
            r.append(d / o)
            if d / o <= 1 + within:
                close += 1
            else:
                off[i] = d / o
        else:
            off[i] = None
    st = stats(r)
    p90 = None
    if r:
        srt = sorted(r)
        p90 = srt[min(len(srt) - 1, math.ceil(0.9 * len(srt)) - 1)]
    return {"median": st["median"], "mean": st["mean"], "p90": p90, "worst": max(r) if r else None,
            "n": len(r), "solved": solved, "within_1pct": close / solved if solved else None, "off": off}


def record_from_arrays(
    arr: Arrays,
    attack: str,
    library: str,
    norm: str,
    targeted: bool,
    case: str,
    optimum: Sequence[float] | None = None,
    per_image_divisor: float | None = None,
    extra: dict | None = None,
) -> dict:
    """One run record from per-example arrays.

    per_image_divisor: what the counters are divided by for the per-image figures (default n;
    the targeted `average` case divides the work of all targets by n * targets).
    """
    n = _n(arr)
    succ = [bool(s) for s in arr["success"]]
    rec: dict = {"attack": attack, "library": library, "norm": norm, "targeted": bool(targeted),
                 "case": case, "n": n, "asr": (sum(succ) / n) if n else 0.0}
    for k in DIST_KEYS:
        rec[k] = stats(v for v, s in zip(arr[k], succ) if s)
    div = max(per_image_divisor if per_image_divisor is not None else n, 1)
    rec["seconds_per_image"] = arr["seconds"] / div
    rec["grad_evals_per_image"] = arr["gradients"] / div
    rec["hvps_per_image"] = arr["hvps"] / div
    rec["forwards_per_image"] = arr["forwards"] / div
    rec["peak_memory_mb"] = float(arr.get("peak_memory_mb", 0.0))
    r = ratio_stats(arr[norm], succ, optimum) if norm in ("l0", "l2", "linf") else None
    if r is not None:
        rec["ratio_to_optimum"] = r
    if extra:
        rec.update(extra)
    return rec


def run_record(
    x: torch.Tensor,
    result: AttackResult,
    attack: str,
    library: str,
    norm: str,
    targeted: bool,
    case: str = "untargeted",
    optimum: Sequence[float] | torch.Tensor | None = None,
) -> dict:
    """The run record of one attack call: (x, AttackResult, name, library, norm, targeted, case)."""
    if isinstance(optimum, torch.Tensor):
        optimum = [float(v) for v in optimum.detach().cpu().double().tolist()]
    return record_from_arrays(example_arrays(x, result), attack, library, norm, targeted, case, optimum)


# ------------------------------------------------------------------------------------------
# targeted cases
# ------------------------------------------------------------------------------------------
def pick(arrs: Sequence[Arrays], choice: Sequence[int]) -> Arrays:
    """Per example i the entry of run choice[i] (the counters are summed over all runs, the peak
    memory is their maximum)."""
    out: Arrays = {"success": [arrs[c]["success"][i] for i, c in enumerate(choice)]}
    for k in DIST_KEYS:
        out[k] = [arrs[c][k][i] for i, c in enumerate(choice)]
    for k in COUNTER_KEYS:
        out[k] = sum(a[k] for a in arrs)
    out["seconds"] = float(out["seconds"])
    out["units"] = sum(a.get("units", 1) for a in arrs)
    out["peak_memory_mb"] = max(float(a.get("peak_memory_mb", 0.0)) for a in arrs)
    return out


def _key(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def targeted_cases(per_target: Sequence[Arrays], random_choice: Sequence[int], norm: str) -> dict[str, Arrays]:
    """average / best / worst from the runs of every target (SPEC 8).

    per_target[k]: the arrays of the run against the k-th target (same images in every run).
    random_choice[i]: index k of image i's seeded random target (the `average` case).
    best: per image the successful target with the least distortion in `norm` (success if any
    succeeded); worst: the target with the most (success only if every target succeeded).
    Ties go to the lowest k.
    """
    n = _n(per_target[0])
    K = len(per_target)
    best, worst = [], []
    succ_best, succ_worst = [], []
    for i in range(n):
        ok = [k for k in range(K) if per_target[k]["success"][i]]
        if ok:
            best.append(min(ok, key=lambda k: (_key(per_target[k][norm][i]), k)))
            succ_best.append(True)
        else:
            best.append(random_choice[i])
            succ_best.append(False)
        worst.append(max(range(K), key=lambda k: (_key(per_target[k][norm][i]) if per_target[k]["success"][i]
                                                   else math.inf, -k)))
        succ_worst.append(len(ok) == K)
    b = pick(per_target, best)
    b["success"] = succ_best
    w = pick(per_target, worst)
    w["success"] = succ_worst
    return {"average": pick(per_target, random_choice), "best": b, "worst": w}


# ------------------------------------------------------------------------------------------
# per-image best over attacks, robust accuracy
# ------------------------------------------------------------------------------------------
def per_image_best(runs: Sequence[Arrays], norm: str) -> tuple[Arrays, list[int]]:
    """Per image the successful run with the least distortion in `norm` (counters summed).

    Returns the arrays and, per image, the index of the winning run (-1 where none succeeded).
    """
    n = _n(runs[0])
    choice, won = [], []
    for i in range(n):
        ok = [r for r in range(len(runs)) if runs[r]["success"][i]]
        if ok:
            c = min(ok, key=lambda r: (_key(runs[r][norm][i]), r))
            choice.append(c)
            won.append(c)
        else:
            choice.append(0)
            won.append(-1)
    out = pick(runs, choice)
    out["success"] = [w >= 0 for w in won]
    return out, won


def robust_accuracy_min_norm(arr: Arrays, norm: str, eps_list: Iterable[float], tol: float = 1e-6) -> dict[str, float]:
    """Share of images NOT broken at each eps: broken = success with distance <= eps."""
    n = max(_n(arr), 1)
    out = {}
    for e in eps_list:
        broken = sum(1 for s, d in zip(arr["success"], arr[norm]) if s and d <= e + tol)
        out[fmt_eps(e)] = 1.0 - broken / n
    return out


def robust_accuracy_any(broken_sets: Sequence[Sequence[bool]]) -> float:
    """Robust accuracy when an image counts as broken if any attack broke it."""
    n = max(len(broken_sets[0]), 1)
    return 1.0 - sum(1 for i in range(n) if any(b[i] for b in broken_sets)) / n


def fmt_eps(e: float) -> str:
    return f"{float(e):.6g}"


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else "-"
        if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}g}"
    return str(v)


def _pair(d: dict | None) -> str:
    if not d or d.get("median") is None:
        return "-"
    return f"{_fmt(d['median'])} / {_fmt(d['mean'])}"


def markdown_table(runs: Sequence[dict], title: str | None = None) -> str:
    """Markdown table of run records: distances as `median / mean` over successes."""
    has_ratio = any("ratio_to_optimum" in r for r in runs)
    has_eps = any("eps" in r for r in runs)
    head = ["attack", "library", "case", "norm"] + (["eps"] if has_eps else []) + \
        ["n", "ASR", "L0 med/mean", "L2 med/mean", "Linf med/mean", "PSNR med/mean",
         "s/img", "grads/img", "HVPs/img", "peak MB"] + \
        (["ratio to opt. med / p90 / worst", "within 1%"] if has_ratio else [])
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for r in runs:
        row = [r["attack"], r.get("library", "-"), r.get("case", "-"), r.get("norm", "-")]
        if has_eps:
            row.append(_fmt(r.get("eps")))
        row += [str(r["n"]), f"{100 * r['asr']:.1f}%", _pair(r.get("l0")), _pair(r.get("l2")),
                _pair(r.get("linf")), _pair(r.get("psnr")), _fmt(r.get("seconds_per_image"), 3),
                _fmt(r.get("grad_evals_per_image"), 5), _fmt(r.get("hvps_per_image"), 5),
                _fmt(r.get("peak_memory_mb"), 4)]
        if has_ratio:
            ro = r.get("ratio_to_optimum")
            if ro and ro.get("median") is not None:
                vals = [ro[k] for k in ("median", "p90", "worst") if ro.get(k) is not None]
                row.append(" / ".join(_fmt(v, 5) for v in vals) + f" (n={ro['n']})")
            else:
                row.append("-")
            w = (ro or {}).get("within_1pct")
            row.append(f"{100 * w:.1f}% of {ro['solved']}" if w is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def robust_accuracy_table(rows: Sequence[dict]) -> str:
    """Markdown table of robust accuracy rows {"attack", "case", "norm", "kind", "accuracy": {eps: acc}}."""
    if not rows:
        return ""
    eps = []
    for r in rows:
        for e in r["accuracy"]:
            if e not in eps:
                eps.append(e)
    eps.sort(key=float)
    head = ["attack", "case", "norm", "kind"] + [f"eps={e}" for e in eps]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["attack"], r.get("case", "-"), r.get("norm", "-"), r.get("kind", "-")]
        cells += [f"{100 * r['accuracy'][e]:.1f}%" if e in r["accuracy"] else "-" for e in eps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# the resume sidecar
# ------------------------------------------------------------------------------------------
SIDECAR_VERSION = 2  # 2: the header names the teamattack version that wrote it


class ResumeMismatch(RuntimeError):
    """A resume file that belongs to another run (or another teamattack version), or has no header."""


def _library_version() -> str:
    import teamattack

    return str(getattr(teamattack, "__version__", "unknown"))


class Sidecar:
    """Append-only JSON-lines resume file: a header line, then one line per finished unit.

    The header carries the run's identity and the teamattack version, so results of another run
    or another version are never mixed in (ResumeMismatch, naming ``--fresh``). An empty file
    starts afresh; a line cut by an interruption is dropped; unreadable lines elsewhere are
    dropped with a note (their units run again). New files are written atomically
    (teamattack.atomic).
    """

    def __init__(self, path: str | os.PathLike, header: dict, fresh: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.header = {"sidecar": SIDECAR_VERSION, "teamattack": _library_version(), **header}
        self.units: dict[str, dict] = {}
        self._log = log or (lambda s: print(s, file=sys.stderr))
        if fresh and self.path.exists():
            self.path.unlink()
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            if self.path.exists():
                self._log(f"note: {self.path} is empty; starting afresh")
            self._write_lines([json.dumps({"header": self.header})])

    def _write_lines(self, lines: list[str]) -> None:
        atomic_write_text(self.path, "".join(line + "\n" for line in lines))

    def _refuse(self, why: str) -> ResumeMismatch:
        return ResumeMismatch(f"{self.path} {why}; rerun with --fresh to discard it or choose another --json")

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise self._refuse("is not a text file") from None
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            self._log(f"note: {self.path} is empty; starting afresh")
            self._write_lines([json.dumps({"header": self.header})])
            return
        try:
            old = json.loads(lines[0]).get("header")
        except (json.JSONDecodeError, AttributeError):
            old = None
        if not isinstance(old, dict):
            raise self._refuse("has no header line (it was not written by this command, or was damaged)")
        if old != self.header:
            diff = sorted(k for k in set(old) | set(self.header) if old.get(k) != self.header.get(k))
            what = f"differs in {', '.join(diff)}"
            if old.get("teamattack") != self.header["teamattack"]:
                what += f"; written by teamattack {old.get('teamattack', 'before 0.1.0')}, this is {self.header['teamattack']}"
            raise self._refuse(f"belongs to another benchmark ({what})")
        good, bad = [lines[0]], 0
        for i, line in enumerate(lines[1:], start=1):
            try:
                obj = json.loads(line)
                key, value = obj["key"], obj["value"]
                if not isinstance(key, str) or not isinstance(value, dict):
                    raise TypeError
            except (json.JSONDecodeError, KeyError, TypeError):
                if i == len(lines) - 1 and not text.endswith("\n"):
                    continue  # the last line, cut by the interruption
                bad += 1
                continue
            self.units[key] = value
            good.append(line)
        if bad:
            self._log(f"note: {self.path}: {bad} unreadable line(s) dropped (their units run again; "
                      "--fresh starts over)")
        if not text.endswith("\n") or len(good) != len(lines) or len(lines) != text.count("\n"):
            self._write_lines(good)

    def get(self, key: str) -> dict | None:
        return self.units.get(key)

    def put(self, key: str, value: dict) -> None:
        line = json.dumps({"key": key, "value": value})
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.units[key] = value
