"""`teamattack exact`: exact minimal adversarial distances (affine models: L2/Linf; ReLU MLPs: Linf MILP).

    teamattack exact --model mnist-mlp --dataset mnist --norm linf -n 20 --time-limit 60 --json out.json
"""
from __future__ import annotations

import sys

from .common import add_data_options, add_run_options, command_line, device, write_json


def register(sub) -> None:
    p = sub.add_parser(
        "exact", help="exact minimal adversarial distances (closed form / QP / MILP) as anchors",
        description="Exact minimal perturbation per image: affine (linear-softmax) models in L2 or Linf "
                    "(exact, fast); ReLU MLPs in Linf by mixed-integer programming (HiGHS), with a time "
                    "limit per image and the status reported.",
    )
    add_data_options(p)
    p.add_argument("--model", required=True, help="zoo name or path to weights")
    p.add_argument("--norm", choices=["l2", "linf"], default="linf")
    add_run_options(p)
    p.set_defaults(n=20)
    p.add_argument("--time-limit", type=float, default=60.0, help="MILP time limit per image, seconds")
    p.add_argument("--targeted", action="store_true", help="toward the seeded random target of each image")
    p.add_argument("--eps-max", type=float, default=None,
                   help="upper bound for the MILP (default: the Linf distance found by PGD with bisection)")
    p.add_argument("--no-box", action="store_true", help="affine L2/Linf without the [0,1] box")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import zoo
    from ..bench import exact as X
    from ..bench import harness
    from ..bench.records import _fmt, stats

    dev = device(args.device)
    model = zoo.load(args.model).to(dev).eval()
    x, y, idx = harness.load_images(args.dataset, model, args.n, args.seed, args.data_root, dev)
    with torch.no_grad():
        m = int(model(x[:1]).shape[-1])
    target = (y + harness.random_targets(y.cpu(), m, args.seed).to(y.device)) % m if args.targeted else None
    shape = tuple(x.shape[1:])
    try:
        affine = True
        X.affine_form(model, shape, dev)
    except X.NotApplicable:
        affine = False
    ub = None
    if affine:
        res = X.min_dist_affine(model, x, y, norm=args.norm, target=target, box=not args.no_box)
    elif args.norm == "linf":
        if args.eps_max is not None:
            em = torch.full((len(x),), args.eps_max)
        else:
            ub, _ = X.pgd_linf_bisection(model, x, y, target)
            em = torch.where(torch.isfinite(ub), ub * (1 + 1e-4) + 1e-6, torch.ones_like(ub))
        try:
            res = X.min_linf_relu(model, x, y, target=target, eps_max=em.cpu(), time_limit=args.time_limit,
                                  progress=True)
        except X.NotApplicable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        print("error: exact L2 needs an affine (linear-softmax) model; use --norm linf for ReLU MLPs",
              file=sys.stderr)
        return 2
    recs = res.records()
    rows = []
    for i, r in enumerate(recs):
        r = {"index": idx[i], "label": int(y[i]), "target": None if target is None else int(target[i]), **r}
        if ub is not None:
            r["attack_upper_bound"] = float(ub[i]) if torch.isfinite(ub[i]) else None
        rows.append(r)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    solved = [r["eps"] for r in rows if r["status"] == "optimal" and r["eps"] is not None]
    summary = {"statuses": statuses, "verified": sum(r["verified"] for r in rows), "optimum": stats(solved),
               "seconds": stats(r["seconds"] for r in rows)}
    if ub is not None:
        ratios = [r["attack_upper_bound"] / r["eps"] for r in rows if r["status"] == "optimal"
                  and r["eps"] and r.get("attack_upper_bound") is not None]
        summary["pgd_bisection_ratio"] = stats(ratios)
    print("| image | label | target | eps* | lower | status | verified | s |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['label']} | {r['target'] if r['target'] is not None else '-'} | "
              f"{_fmt(r['eps'], 6)} | {_fmt(r['lower'], 6)} | {r['status']} | {r['verified']} | "
              f"{r['seconds']:.2f} |")
    print(f"\n{args.norm} optimum: {statuses}, verified {summary['verified']}/{len(rows)}, median "
          f"{_fmt(summary['optimum']['median'], 6)}")
    doc = {"dataset": args.dataset, "model": args.model, "seed": args.seed, "command": command_line(),
           "norm": args.norm, "targeted": bool(args.targeted), "n": len(rows), "time_limit": args.time_limit,
           "method": res.info.get("kind"), "box": not args.no_box, "summary": summary, "results": rows}
    if args.json:
        write_json(args.json, doc)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
