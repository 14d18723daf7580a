"""Summarise a bench sidecar whose exact stage stopped part-way: every attack's ratio to the optimum on
the batches whose optima were computed (python scripts/exact_partial_summary.py SIDECAR [DIST])."""
import json, math, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src"))
from teamattack.bench.records import ratio_stats
path = sys.argv[1]
DIST = sys.argv[2] if len(sys.argv) > 2 else "l2"
units, exact = {}, {}
for line in open(path):
    d = json.loads(line)
    if "key" not in d:
        continue
    k = d["key"]
    if k.startswith("exact|"):
        exact[int(k.split("b=")[1])] = d["value"]["records"]
    else:
        name, mode, eps, kk, b = k.split("|")
        units.setdefault(name, {})[int(b.split("=")[1])] = d["value"]
bs = sorted(exact)
recs = [r for b in bs for r in exact[b]]
opt = [r["eps"] if r["status"] == "optimal" and r["eps"] is not None else math.nan for r in recs]
st = {}
for r in recs:
    st[r["status"]] = st.get(r["status"], 0) + 1
print(f"images with the exact stage done: {len(recs)} (batches {bs}); statuses {st}; "
      f"verified {sum(r['verified'] for r in recs)}")
print("| attack | ratio med / p90 / worst (n) | within 1% of solved | attack / lower bound, time-limited images (median, max) |")
print("|---|---|---|---|")
for name, by_b in units.items():
    if not all(b in by_b for b in bs):
        continue
    succ = [s for b in bs for s in by_b[b]["success"]]
    dist = [v for b in bs for v in by_b[b][DIST]]
    r = ratio_stats(dist, succ, opt)
    lb = sorted(d / rr["lower"] for d, s, rr in zip(dist, succ, recs)
                if s and rr["status"] == "time-limit" and rr["lower"] and rr["lower"] > 0)
    lbs = f"{lb[len(lb)//2]:.4g}, {lb[-1]:.4g} (n={len(lb)})" if lb else "-"
    print(f"| {name} | {r['median']:.5g} / {r['p90']:.5g} / {r['worst']:.5g} ({r['n']}) | "
          f"{100*r['within_1pct']:.0f}% of {r['solved']} | {lbs} |")
    if name.startswith("team"):
        print("  team off:", {k: (None if v is None else round(v, 4)) for k, v in r["off"].items()})
