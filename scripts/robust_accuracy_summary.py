"""TEAM against AutoAttack: one table per published `teamattack evaluate --independent` run.

    python scripts/robust_accuracy_summary.py docs/results/robust-accuracy-[dm]*.json > summary.md

For each file: per eps, TEAM's fixed-budget robust accuracy, the same with the target sweep
(`team:targets=3`, where the file has it), TEAM's modes together, AutoAttack, the best single peer,
the worst case over every attack, and the wall seconds of TEAM's runs and of AutoAttack at that eps
(from the file's per-run records). Bold: above AutoAttack. docs/robust_accuracy.md quotes this
output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

TEAM, SWEEP, BOTH = "team", "team:targets=3", "team, every mode"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _autoattack(names: list[str]) -> str:
    return next(a for a in names if a.startswith("autoattack"))


def table(doc: dict) -> str:
    acc, names = doc["robust_accuracy"], doc["attacks"]
    aa = _autoattack(names)
    peers = [a for a in names if not a.startswith("team")]
    secs = {(r["attack"], f"{r['eps']:g}"): r["seconds"] for r in doc["runs"]}
    sweep = SWEEP in names
    cols = ["TEAM (fixed budget)"] + (["TEAM, targets=3"] if sweep else []) + ["TEAM, every mode", "AutoAttack",
            "best peer", "worst case", "TEAM s"] + (["TEAM targets=3 s"] if sweep else []) + \
        ["AutoAttack s", "TEAM / AA time"] + (["targets=3 / AA time"] if sweep else [])
    lines = [f"{Path(doc['command'].split('--json ')[1].split()[0]).stem.removeprefix('robust-accuracy-')}: "
             f"n = {doc['n']}, clean {_pct(doc['clean_accuracy'])}", "",
             "| eps | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    bold = lambda v, a: f"**{_pct(v)}**" if v > a else _pct(v)
    ratio = lambda t, a: f"{t / a:.2f}" if t and a else "-"
    for e in doc["eps"]:
        k = f"{e:g}"
        key = next(kk for kk in acc[TEAM] if float(kk) == float(e))
        t, a = acc[TEAM][key], acc[aa][key]
        best = min(acc[p][key] for p in peers)
        who = ", ".join(p for p in peers if acc[p][key] == best)
        ts, ss, as_ = secs.get((TEAM, k)), secs.get((SWEEP, k)), secs.get((aa, k))
        row = [k, bold(t, a)] + ([bold(acc[SWEEP][key], a)] if sweep else []) + [
            _pct(doc['groups'][BOTH]['robust_accuracy'][key]), _pct(a), f"{_pct(best)} ({who})",
            _pct(doc['worst_case'][key]), f"{ts:.3g}"] + ([f"{ss:.3g}"] if sweep else []) + \
            [f"{as_:.3g}", ratio(ts, as_)] + ([ratio(ss, as_)] if sweep else [])
        lines.append("| " + " | ".join(row) + " |")
    total = lambda name: sum(r["seconds"] for r in doc["runs"] if r["attack"] == name)
    total_t, total_a = total(TEAM), total(aa)
    lines += ["", f"Summed over the eps: TEAM {total_t:.3g} s"
                  + (f", TEAM with targets=3 {total(SWEEP):.3g} s" if sweep else "")
                  + f", AutoAttack {total_a:.3g} s ({total_t / total_a:.2f}x"
                  + (f"; {total(SWEEP) / total_a:.2f}x" if sweep else "") + ")."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help="robust-accuracy JSON documents (teamattack evaluate --json)")
    args = p.parse_args(argv)
    for f in args.files:
        doc = json.loads(f.read_text())
        if "team" not in doc.get("attacks", []) or not any(a.startswith("autoattack") for a in doc["attacks"]):
            continue
        print(table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
