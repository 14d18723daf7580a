"""`teamattack attack`: one attack on N correctly classified images; a table and the JSON record.

    teamattack attack --dataset mnist --model mnist-table1 --attack team --norm l2 --objective T1 \
        [--targeted --case average|best|worst] -n 100 --seed 0 --json out.json
"""
from __future__ import annotations

import sys

from .common import add_data_options, add_run_options, command_line, device, write_json


def register(sub) -> None:
    p = sub.add_parser("attack", help="run one attack (TEAM, Gauss-Newton or a peer), print a table, write JSON",
                       description="Attack N correctly classified test images (seeded choice) and report "
                                   "ASR, L0/L2/Linf/PSNR over successes, time and gradient counts.")
    add_data_options(p)
    p.add_argument("--model", default="digits-cnn", help="zoo name or path to weights (default digits-cnn)")
    add_run_options(p)
    p.add_argument("--attack", default="team",
                   help="team | gauss-newton | fgsm | ifgsm | a peer preset name (see teamattack.baselines.PRESETS)")
    p.add_argument("--norm", default="l2", choices=["l2", "linf", "l0"], help="TEAM's norm")
    p.add_argument("--objective", default=None, help="TEAM objective T1..T6 or margin (default T1 / T2 targeted)")
    p.add_argument("--mode", default=None, choices=["paper", "iterated", "min-norm"],
                   help="TEAM mode (default: the strongest for the norm: min-norm for l2 / linf, iterated for l0)")
    p.add_argument("--hessian", default="auto", choices=["auto", "exact", "krylov", "ggn", "none"],
                   help="TEAM curvature source")
    p.add_argument("--search", default=None, choices=["bracket", "paper"],
                   help="TEAM radius search, paper / iterated modes (default bracket)")
    p.add_argument("--steps", type=int, default=None, help="TEAM / Gauss-Newton iterations")
    p.add_argument("--eps", type=float, default=None, help="fixed budget (TEAM, FGSM family, fixed-eps peers)")
    p.add_argument("--targeted", action="store_true", help="targeted attack")
    p.add_argument("--case", default="average", choices=["average", "best", "worst"],
                   help="targeted: one seeded random target per image (average), or every target (best/worst)")
    p.add_argument("--batch-size", type=int, default=100, help="images per attack call")
    p.set_defaults(func=run)


def spec_from_args(args):
    """The AttackSpec the arguments describe (TEAM, Gauss-Newton, the FGSM family, or a peer)."""
    from ..bench.suites import BUDGET, AttackSpec, peer_spec, team_spec

    name = args.attack.lower()
    if name == "team":
        from ..attacks.team import default_mode

        mode = args.mode or default_mode(args.norm)
        kw = {"mode": mode, "hessian": args.hessian}
        if args.search is not None:
            kw["search"] = args.search
        if args.objective:
            kw["objective"] = args.objective
        if args.steps:
            kw["steps"] = args.steps
        spec = team_spec(f"team-{mode}-{args.norm}", args.norm, **kw)
        if args.eps is not None:
            from dataclasses import replace
            spec = replace(spec, kind=BUDGET, eps=args.eps)
        return spec
    if name in ("gauss-newton", "gn"):
        from ..attacks import GaussNewton

        steps = args.steps or 100
        return AttackSpec(name="gauss-newton", norm="l2", team=True,
                          factory=lambda model, targeted, eps, seed: GaussNewton(model, targeted=targeted, steps=steps))
    if name in ("fgsm", "ifgsm"):
        from ..paper import FGSM, IFGSM

        eps = args.eps if args.eps is not None else 0.1
        steps = args.steps or 10

        def factory(model, targeted, e, seed):
            e = eps if e is None else e
            return FGSM(model, e, targeted) if name == "fgsm" else IFGSM(model, e / steps * 2.5, steps, e, targeted)

        return AttackSpec(name=name, norm="linf", kind=BUDGET, eps=eps, factory=factory)
    return peer_spec(name, eps=args.eps)


def run(args) -> int:
    from .. import zoo
    from ..bench import harness

    dev = device(args.device)
    model = zoo.load(args.model).to(dev).eval()
    x, y, idx = harness.load_images(args.dataset, model, args.n, args.seed, args.data_root, dev)
    spec = spec_from_args(args)
    result = harness.run_bench(model, x, y, [spec], targeted=args.targeted, seed=args.seed,
                               batch_size=args.batch_size, dataset=args.dataset,
                               targets="random" if args.case == "average" else "all")
    if result.get("skipped") and not result["runs"]:
        print(f"error: {result['skipped'][0]['reason']}", file=sys.stderr)
        return 2
    case = args.case if args.targeted else "untargeted"
    runs = [r for r in result["runs"] if r.get("case") == case] or result["runs"]
    meta = {"dataset": args.dataset, "model": args.model, "seed": args.seed, "command": command_line(),
            "suite": f"attack {spec.name}", "n": len(idx), "images": idx}
    doc = harness.bench_document(meta, {**result, "runs": runs})
    print(harness.render(doc))
    if args.json:
        write_json(args.json, doc)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
