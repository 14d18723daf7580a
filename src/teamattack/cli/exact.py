"""`teamattack exact`: exact minimal adversarial distances (affine models: closed form / QP; ReLU
networks: Linf by MILP with HiGHS, L2 by MIQP with SCIP).

    teamattack exact --model digits-mlp --dataset digits --norm l2 -n 20 --time-limit 60 --json out.json
"""
from __future__ import annotations

import math

from .common import (
    UsageError,
    add_data_options,
    add_run_options,
    command_line,
    dataset_for,
    device,
    load_model,
    note,
    positive_float,
    progress,
    write_json,
)


def register(sub) -> None:
    p = sub.add_parser(
        "exact", help="exact minimal adversarial distances (closed form / QP / MILP) as anchors",
        description="Exact minimal perturbation per image within the [0, 1] box: affine (linear-softmax) "
                    "models in L2 or Linf (exact, fast); ReLU networks in Linf by mixed-integer LP (HiGHS) and "
                    "in L2 by mixed-integer QP (SCIP), started from a quick attack's point, with a time limit "
                    "per image and the status and proven lower bound reported.",
    )
    add_data_options(p)
    p.add_argument("--model", required=True, help="zoo name, weights file, or module:factory (with --weights)")
    p.add_argument("--norm", choices=["l2", "linf"], default="linf")
    add_run_options(p)
    p.set_defaults(n=20)
    p.add_argument("--time-limit", type=positive_float, default=60.0, help="solver time limit per image, seconds")
    p.add_argument("--targeted", action="store_true", help="toward the seeded random target of each image")
    p.add_argument("--eps-max", type=positive_float, default=None,
                   help="upper bound for the solver (default: the distance found by a quick attack: PGD with "
                        "bisection for Linf, TEAM's minimum-norm walk for L2)")
    p.add_argument("--no-start", action="store_true",
                   help="do not hand the quick attack's point to the solver as a starting solution")
    p.add_argument("--attack", choices=["pgd", "team"], default="pgd",
                   help="Linf: the quick attack giving eps_max and the start (L2 always uses TEAM's walk)")
    p.add_argument("--no-box", action="store_true", help="affine L2/Linf without the [0,1] box")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import exact as X
    from ..bench import harness
    from ..bench.records import _fmt, stats

    dev = device(args.device)
    model = load_model(args.model, args.weights, dev)
    dataset = dataset_for(model, args.dataset, args.model)
    x, y, idx = harness.load_images(dataset, model, args.n, args.seed, args.data_root, dev)
    with torch.no_grad():
        m = int(model(x[:1]).shape[-1])
    target = (y + harness.random_targets(y.cpu(), m, args.seed).to(y.device)) % m if args.targeted else None
    try:
        ub, x_start = _upper_bound(model, x, y, target, args.norm, args.attack)
        if args.eps_max is not None:
            em = torch.full((len(x),), args.eps_max)
        else:
            em = torch.where(torch.isfinite(ub), ub * (1 + 1e-4) + 1e-6, torch.full_like(ub, math.inf))
        x_start = x_start.detach().clone()
        x_start[~torch.isfinite(ub)] = math.nan  # no start where the attack failed
        res = X.exact_optimum(model, x, y, args.norm, target=target, eps_max=em.cpu(), time_limit=args.time_limit,
                              progress=progress(args), x_start=None if args.no_start else x_start)
    except X.NotApplicable as e:
        raise UsageError(str(e)) from None
    if res.info.get("kind") == "affine" and args.no_box:
        res = X.min_dist_affine(model, x, y, norm=args.norm, target=target, box=False)
    recs = res.records()
    rows = []
    from ..exact.diagnose import explain

    layers = None if res.info.get("kind") == "affine" else X.relu_layers(model, tuple(x.shape[1:]), dev)
    for i, r in enumerate(recs):
        r = {"index": idx[i], "label": int(y[i]), "target": None if target is None else int(target[i]), **r}
        if ub is not None:
            r["attack_upper_bound"] = float(ub[i]) if torch.isfinite(ub[i]) else None
            if (layers is not None and r["status"] == "optimal" and r["eps"] and r["attack_upper_bound"]
                    and r["attack_upper_bound"] > 1.01 * r["eps"]):
                f = lambda t: t[i].detach().reshape(-1).double().cpu().numpy()  # noqa: E731
                r["gap"] = explain(layers, f(x), f(x_start), f(res.x_adv), args.norm).as_dict()
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
        summary["attack_ratio"] = stats(ratios)
        summary["attack"] = "PGD with bisection" if args.norm == "linf" and args.attack == "pgd" else "TEAM min-norm"
        summary["attack_within_1pct"] = (sum(q <= 1.01 for q in ratios) / len(ratios)) if ratios else None
    print("| image | label | target | eps* | lower | status | verified | s | attack / eps* | why |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = (r["attack_upper_bound"] / r["eps"]) if r.get("attack_upper_bound") and r["eps"] else None
        g = r.get("gap")
        why = (f"{g['reason']} (classes {g['attack_class']}/{g['optimum_class']}, ReLU pattern "
               f"{100 * g['pattern_agreement']:.0f}% alike, cos {g['cosine']:.2f}, box {g['box_attack']:.2f}/"
               f"{g['box_optimum']:.2f})") if g else "-"
        print(f"| {r['index']} | {r['label']} | {r['target'] if r['target'] is not None else '-'} | "
              f"{_fmt(r['eps'], 6)} | {_fmt(r['lower'], 6)} | {r['status']} | {r['verified']} | "
              f"{r['seconds']:.2f} | {_fmt(ratio, 6)} | {why} |")
    print(f"\n{args.norm} optimum: {statuses}, verified {summary['verified']}/{len(rows)}, median "
          f"{_fmt(summary['optimum']['median'], 6)}")
    doc = {"dataset": dataset, "model": args.model, "seed": args.seed, "command": command_line(),
           "norm": args.norm, "targeted": bool(args.targeted), "n": len(rows), "time_limit": args.time_limit,
           "method": res.info.get("kind"), "box": not args.no_box, "summary": summary, "results": rows}
    if args.json:
        write_json(args.json, doc)
        note(args, f"wrote {args.json}")
    return 0


def _upper_bound(model, x, y, target, norm, attack="pgd"):
    """The quick attack whose distance is eps_max and whose point starts the solver: PGD with
    bisection (Linf, default) or TEAM's minimum-norm walk. Returns (distance, point), inf where it failed."""
    import torch

    from .. import exact as X
    from ..attacks import TEAM

    if norm == "linf" and attack == "pgd":
        return X.pgd_linf_bisection(model, x, y, target)
    res = TEAM(model, norm=norm, mode="min-norm", targeted=target is not None)(x, y, target)
    d = (res.x_adv - x).flatten(1).norm(dim=1) if norm == "l2" else (res.x_adv - x).flatten(1).abs().amax(dim=1)
    return torch.where(res.success, d, torch.full_like(d, math.inf)), res.x_adv
