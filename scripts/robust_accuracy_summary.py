"""TEAM against AutoAttack: one table per published `teamattack evaluate --independent` run.

    python scripts/robust_accuracy_summary.py docs/results/robust-accuracy-[dm]*.json > summary.md

For each file: per eps, TEAM's fixed-budget robust accuracy, TEAM's two modes together, AutoAttack,
the best single peer, the worst case over every attack, and the wall seconds of TEAM's fixed-budget
run and of AutoAttack at that eps (from the file's per-run records). Bold: TEAM's fixed budget
above AutoAttack. docs/robust_accuracy.md quotes this output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

TEAM, BOTH = "team", "team, every mode"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _autoattack(names: list[str]) -> str:
    return next(a for a in names if a.startswith("autoattack"))


def table(doc: dict) -> str:
    acc, names = doc["robust_accuracy"], doc["attacks"]
    aa = _autoattack(names)
    peers = [a for a in names if not a.startswith("team")]
    secs = {(r["attack"], f"{r['eps']:g}"): r["seconds"] for r in doc["runs"]}
    lines = [f"{Path(doc['command'].split('--json ')[1].split()[0]).stem.removeprefix('robust-accuracy-')}: "
             f"n = {doc['n']}, clean {_pct(doc['clean_accuracy'])}", "",
             "| eps | TEAM (fixed budget) | TEAM, both modes | AutoAttack | best peer | worst case | "
             "TEAM s | AutoAttack s | TEAM / AA time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in doc["eps"]:
        k = f"{e:g}"
        key = next(kk for kk in acc[TEAM] if float(kk) == float(e))
        t, a = acc[TEAM][key], acc[aa][key]
        best = min(acc[p][key] for p in peers)
        who = ", ".join(p for p in peers if acc[p][key] == best)
        ts, as_ = secs.get((TEAM, k)), secs.get((aa, k))
        ratio = f"{ts / as_:.2f}" if ts and as_ else "-"
        mark = "**" if t > a else ""
        lines.append(f"| {k} | {mark}{_pct(t)}{mark} | {_pct(doc['groups'][BOTH]['robust_accuracy'][key])} | "
                     f"{_pct(a)} | {_pct(best)} ({who}) | {_pct(doc['worst_case'][key])} | "
                     f"{ts:.3g} | {as_:.3g} | {ratio} |")
    total_t = sum(r["seconds"] for r in doc["runs"] if r["attack"] == TEAM)
    total_a = sum(r["seconds"] for r in doc["runs"] if r["attack"] == aa)
    lines += ["", f"Summed over the eps: TEAM {total_t:.3g} s, AutoAttack {total_a:.3g} s "
                  f"({total_t / total_a:.2f}x)."]
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
