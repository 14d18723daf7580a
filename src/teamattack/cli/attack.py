"""`teamattack attack`: one attack on N correctly classified images; a table and the JSON record.

    teamattack attack --model mnist-table1 --attack team-l2 -n 100 --seed 0 --json out.json
    teamattack attack --model mnist-table1 --attack team --norm l2 --objective T1 \
        [--targeted --case average|best|worst] [--save-adv adv.safetensors]

Attack names are the bench's (`team-l2`, `team-linf`, `team-l0`, `team-l2-paper`, ... with
`:key=value` settings, and the peer presets), so a name means the same attack in `attack` and
`bench`; `team` with --norm / --mode / --objective / ... builds a TEAM variant, and its default
variant for a norm is the bench's `team-NORM`.
"""
from __future__ import annotations

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
    positive_int,
    progress,
    write_json,
)


def register(sub) -> None:
    p = sub.add_parser("attack", help="run one attack (TEAM, Gauss-Newton or a peer), print a table, write JSON",
                       description="Attack N correctly classified test images (seeded choice) and report "
                                   "ASR, L0/L2/Linf/PSNR over successes, time and gradient counts.")
    add_data_options(p)
    p.add_argument("--model", default="digits-cnn",
                   help="zoo name, weights file, or module:factory (with --weights)")
    add_run_options(p)
    p.add_argument("--attack", default="team",
                   help="a bench attack name (team-l2, team-linf, team-l0, team-l2-paper, ..., optionally "
                        "with :key=value settings), team (with --norm, --mode, ...), gauss-newton, fgsm, ifgsm, "
                        "or a peer preset name (teamattack.baselines.PRESETS)")
    p.add_argument("--norm", default=None, choices=["l2", "linf", "l0"], help="TEAM's norm (default l2)")
    p.add_argument("--objective", default=None, help="TEAM objective T1..T6 or margin (default T1 / T2 targeted)")
    p.add_argument("--mode", default=None, choices=["paper", "iterated", "min-norm"],
                   help="TEAM mode (default: the strongest for the norm: min-norm for l2 / linf, iterated for l0)")
    p.add_argument("--hessian", default="auto", choices=["auto", "exact", "krylov", "ggn", "none"],
                   help="TEAM curvature source")
    p.add_argument("--search", default=None, choices=["bracket", "paper"],
                   help="TEAM radius search, paper / iterated modes (default bracket)")
    p.add_argument("--steps", type=positive_int, default=None, help="TEAM / Gauss-Newton iterations")
    p.add_argument("--eps", type=positive_float, default=None, help="fixed budget (TEAM, FGSM family, fixed-eps peers)")
    p.add_argument("--targeted", action="store_true", help="targeted attack")
    p.add_argument("--case", default="average", choices=["average", "best", "worst"],
                   help="targeted: one seeded random target per image (average), or every target (best/worst)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per attack call")
    p.add_argument("--save-adv", default=None, metavar="FILE",
                   help="also write x, x_adv, y, success (and target) as safetensors (untargeted or --case average)")
    p.set_defaults(func=run)


def team_names() -> dict:
    """{name: AttackSpec} of every TEAM variant of the bench suites (team-l2, team-linf, ...)."""
    from ..bench.suites import SUITES

    return {s.name: s for suite in SUITES.values() for s in suite.specs() if s.team}


def spec_from_args(args):
    """The AttackSpec the arguments describe (a bench name, TEAM, Gauss-Newton, the FGSM family, or a peer)."""
    from dataclasses import replace

    from ..baselines.presets import PRESETS
    from ..bench.suites import BUDGET, AttackSpec, SuiteError, peer_spec, peer_with_settings, team_spec, with_settings

    name = args.attack.lower() if ":" not in args.attack else args.attack
    base = name.split(":")[0]
    named = team_names()
    team_only = [o for o in ("norm", "mode", "objective", "search", "steps") if getattr(args, o) is not None]
    if base in named:
        if team_only or args.hessian != "auto":
            raise UsageError(f"--attack {args.attack} is a complete TEAM variant; give its settings as "
                             f"{base}:key=value, or use --attack team with --{team_only[0] if team_only else 'hessian'}")
        spec = with_settings(named[base], name, eps=args.eps) if ":" in name else named[base]
    elif name == "team":
        from ..attacks.team import default_mode

        norm = args.norm or "l2"
        mode = args.mode or default_mode(norm)
        kw = {"mode": mode, "hessian": args.hessian}
        if args.search is not None:
            kw["search"] = args.search
        if args.objective:
            kw["objective"] = args.objective
        if args.steps:
            kw["steps"] = args.steps
        plain = f"team-{norm}"
        if plain in named and {**named[plain].settings, "hessian": "auto"} == kw:
            spec = named[plain]  # the bench's team-NORM: the same attack under the same name
        else:
            spec = team_spec(f"team-{mode}-{norm}", norm, **kw)
    elif name in ("gauss-newton", "gn"):
        from ..attacks import GaussNewton

        steps = args.steps or 100
        spec = AttackSpec(name="gauss-newton", norm="l2", team=True,
                          factory=lambda model, targeted, eps, seed: GaussNewton(model, targeted=targeted, steps=steps))
    elif name in ("fgsm", "ifgsm"):
        from ..paper import FGSM, IFGSM

        eps = args.eps if args.eps is not None else 0.1
        steps = args.steps or 10

        def factory(model, targeted, e, seed):
            e = eps if e is None else e
            return FGSM(model, e, targeted) if name == "fgsm" else IFGSM(model, e / steps * 2.5, steps, e, targeted)

        return AttackSpec(name=name, norm="linf", kind=BUDGET, eps=eps, factory=factory)
    elif base in PRESETS:
        try:
            spec = peer_with_settings(name) if ":" in name else peer_spec(name, eps=args.eps)
        except SuiteError as err:
            raise UsageError(str(err)) from None
        return spec
    else:
        raise UsageError(f"unknown attack {args.attack!r}: use team, gauss-newton, fgsm, ifgsm, a TEAM variant "
                         f"({', '.join(sorted(named, key=lambda n: (n.count('-'), n))[:6])}, ...) or a peer preset ({', '.join(sorted(PRESETS)[:6])}, ...)")
    if args.eps is not None:
        spec = replace(spec, kind=BUDGET, eps=args.eps)
    return spec


def _attack_keeping_adversarials(model, x, y, spec, targeted: bool, seed: int, batch_size: int, dataset: str):
    """Run the units of the saved case exactly as the bench does (same seeds), keeping x_adv.

    Returns (a store holding those units' arrays, for run_bench to reuse, and the tensors to save)."""
    import torch

    from ..bench import records, stages
    from ..bench.seeds import seed_everything

    config = stages.BenchConfig(targeted=targeted, seed=seed, batch_size=batch_size, eps_list=None,
                                targets="random", dataset=dataset)
    plan = stages.plan(model, x, y, [spec], config, log=lambda s: None)
    store = stages.MemoryStore()
    if not plan.runs:
        return store, None
    run = plan.runs[0]
    x_adv, success = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    target = torch.full_like(y, -1)
    for unit in run.units:
        lo, hi = plan.batches[unit.batch]
        seed_everything(unit.seed(seed))
        attack = spec.build(model, unit.targeted, unit.eps, seed=unit.seed(seed))
        t = plan.targets_of(unit, y)
        res = attack(x[lo:hi], y[lo:hi], t)
        store.put(unit.key, stages._roundtrip(records.example_arrays(x[lo:hi], res)))
        x_adv[lo:hi], success[lo:hi] = res.x_adv.detach(), res.success
        if t is not None:
            target[lo:hi] = t
    tensors = {"x": x, "x_adv": x_adv, "y": y, "success": success}
    if targeted:
        tensors["target"] = target
    return store, tensors


def run(args) -> int:
    import torch

    from ..bench import harness
    from ..zoo.registry import save_state

    if args.save_adv and args.targeted and args.case != "average":
        raise UsageError("--save-adv keeps one adversarial per image: untargeted, or --targeted --case average")
    spec = spec_from_args(args)  # an unknown attack is an error before any work
    dev = device(args.device)
    model = load_model(args.model, args.weights, dev)
    dataset = dataset_for(model, args.dataset, args.model)
    x, y, idx = harness.load_images(dataset, model, args.n, args.seed, args.data_root, dev)
    store, saved = None, None
    if args.save_adv:
        store, saved = _attack_keeping_adversarials(model, x, y, spec, args.targeted, args.seed, args.batch_size,
                                                    dataset)
    result = harness.run_bench(model, x, y, [spec], targeted=args.targeted, seed=args.seed,
                               batch_size=args.batch_size, dataset=dataset, sidecar=store,
                               targets="random" if args.case == "average" else "all", progress=progress(args),
                               log=lambda s: note(args, s))
    if result.get("skipped") and not result["runs"]:
        raise UsageError(f"{spec.name} cannot run: {result['skipped'][0]['reason']}")
    case = args.case if args.targeted else "untargeted"
    runs = [r for r in result["runs"] if r.get("case") == case] or result["runs"]
    meta = {"dataset": dataset, "model": args.model, "seed": args.seed, "command": command_line(),
            "suite": f"attack {spec.name}", "n": len(idx), "images": idx}
    doc = harness.bench_document(meta, {**result, "runs": runs})
    print(harness.render(doc))
    if args.json:
        write_json(args.json, doc)
        note(args, f"wrote {args.json}")
    if saved is not None:
        saved["index"] = torch.tensor(idx, dtype=torch.long)
        save_state(saved, args.save_adv, metadata={"attack": spec.name, "model": str(args.model), "dataset": dataset,
                                                   "seed": str(args.seed), "command": command_line()})
        note(args, f"wrote {args.save_adv} (x, x_adv, y, success{', target' if args.targeted else ''}, index)")
    return 0
