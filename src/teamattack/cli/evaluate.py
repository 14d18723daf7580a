"""`teamattack evaluate`: clean accuracy of a model, or robust accuracy the standard way with --eps.

    teamattack evaluate --model digits-cnn --norm linf --eps 0.1 0.2 0.3 \\
        --attacks team autoattack apgd-ce -n 200 --json out.json --plot curve.png [--curve]

Without --eps: the clean accuracy on the test split (as before). With --eps: teamattack.evaluate
(robust accuracy over all n images, clean errors counting as broken, per attack and worst case);
--curve adds TEAM's minimum-norm run's whole curve (teamattack.evaluation.robustness_curve).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..atomic import atomic_write_text
from .common import (add_data_options, command_line, dataset_for, device, device_name, load_model, nonneg_int,
                     positive_float, positive_int, write_json)


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="clean accuracy, or robust accuracy at --eps against attacks",
                       description="Accuracy of a zoo model (name or .safetensors path with its card) on the "
                                   "test split; with --eps, robust accuracy over all n images (clean errors "
                                   "count as broken, as in AutoAttack / RobustBench) per attack and worst case.")
    p.add_argument("--model", required=True, help="zoo name (e.g. digits-cnn) or path to a .safetensors file")
    add_data_options(p, dataset_default=None)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("-n", type=positive_int, default=None, help="evaluate on a seeded random subset of n images")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--device", default=None, type=device_name, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--json", default=None, help="write the result here as JSON")
    p.add_argument("--norm", default="linf", choices=("linf", "l2", "l0"), help="the threat model (default linf)")
    p.add_argument("--eps", type=positive_float, nargs="+", default=None,
                   help="budgets: robust accuracy at each (without it: clean accuracy only)")
    p.add_argument("--attacks", nargs="+", default=["team"],
                   help="team (fixed budget; team:key=value:... with TEAM's settings, e.g. team:starts=6:steps=28), "
                        "team-min-norm (one minimum-norm run) and / or peer presets "
                        "(autoattack, apgd-ce, apgd-t, fab-t, pgd, ...; "
                        "mapped to their --norm variant); default: team")
    p.add_argument("--independent", action="store_true",
                   help="run every attack on every clean-correct image (default: AutoAttack's cascade, "
                        "each attack on the images the earlier ones left)")
    p.add_argument("--curve", action="store_true",
                   help="also run TEAM's minimum-norm attack once: the whole accuracy-vs-eps curve")
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="an earlier --independent evaluate --json of the same model and images: its attacks "
                        "that --attacks does not name are carried over (where it ran them at every --eps), "
                        "the named ones run (e.g. --attacks team reruns TEAM beside the earlier AutoAttack)")
    p.add_argument("--plot", default=None, help="write the robustness curve here (PNG)")
    p.add_argument("--markdown", default=None, help="also write the table here")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import data

    t0 = time.time()
    model = load_model(args.model, args.weights, device(args.device))
    dataset = dataset_for(model, args.dataset, args.model)  # --dataset, else the card's; checked to fit
    x, y = data.load(dataset, args.split, n=args.n, seed=args.seed, root=args.data_root)
    if args.eps is None and not args.curve:
        correct = int((data.predict(model, x, args.batch_size) == y).sum())
        result = {"model": str(args.model), "dataset": dataset, "split": args.split,
                  "accuracy": correct / len(y), "correct": correct, "n": len(y),
                  "seconds": round(time.time() - t0, 2)}
        print(f"{args.model} on {dataset} {args.split}: accuracy {result['accuracy']:.4f} ({correct}/{len(y)})")
        if args.json:
            write_json(args.json, result)
        return 0
    return _robust(args, model, dataset, x, y, t0)


def _robust(args, model, dataset, x, y, t0) -> int:
    import teamattack

    from ..evaluation import evaluate, robustness_curve
    from ..evaluation.plots import evaluation_plot

    x, y = x.to(device(args.device)), y.to(device(args.device))
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    name = getattr(model, "card", {}).get("name") or str(args.model)  # a weights path: its card's name
    doc: dict = {"model": name, "weights": str(args.model), "dataset": dataset, "split": args.split, "seed": args.seed,
                 "command": command_line(), "teamattack": teamattack.__version__}
    table = ""
    if args.eps is not None:
        reuse = _load_reuse(args.reuse, name, dataset, args) if args.reuse else None
        res = evaluate(model, x, y, args.norm, eps=args.eps, attacks=args.attacks, cascade=not args.independent,
                       batch_size=args.batch_size, seed=args.seed, reuse=reuse, log=log)
        if args.reuse:
            doc["reused_from"] = str(args.reuse)
        doc.update(res.to_dict())
        table = res.markdown()
    curve = None
    if args.curve:
        curve = robustness_curve(model, x, y, args.norm, batch_size=args.batch_size, seed=args.seed)
        doc["curve"] = curve.to_dict()
        log(f"min-norm curve ({curve.attack}): {curve.seconds:.1f} s")
        if args.eps is None:
            doc.update({"kind": "robust-accuracy", "norm": args.norm, "n": curve.n, "clean_accuracy": curve.clean,
                        "eps": [], "attacks": []})
        table += "\n" + _curve_table(curve, args.eps)
    doc["accuracy"] = doc["clean_accuracy"]
    doc["seconds"] = round(time.time() - t0, 2)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        evaluation_plot(doc, args.plot)
        doc["plot"] = str(args.plot)
        log(f"wrote {args.plot}")
    print(f"{args.model} on {dataset} {args.split}, n = {doc['n']}, {args.norm}:\n")
    print(table)
    if args.json:
        write_json(args.json, doc)
        log(f"wrote {args.json}")
    if args.markdown:
        head = (f"# Robust accuracy: {args.model} on {dataset} {args.split}, {args.norm}, n = {doc['n']}\n\n"
                f"Command: `{doc['command']}` (teamattack {doc['teamattack']}; total {doc['seconds']} s)\n\n")
        atomic_write_text(args.markdown, head + table)
    return 0


def _load_reuse(path: str, name: str, dataset: str, args):
    """The RobustAccuracy of an earlier `evaluate --json` file of the same model, data and seed."""
    import json

    from ..evaluation import RobustAccuracy
    from ..validation import InputError

    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"--reuse {path}: cannot read it as JSON ({type(e).__name__}: {e})") from None
    same = {"model": name, "dataset": dataset, "split": args.split, "seed": args.seed}
    diff = [k for k, v in same.items() if old.get(k) != v]
    if diff:
        raise InputError(f"--reuse {path}: another evaluation ({', '.join(f'{k} {old.get(k)!r} not {same[k]!r}' for k in diff)})")
    try:
        return RobustAccuracy.from_dict(old)
    except ValueError as e:
        raise InputError(f"--reuse {path}: {e}") from None


def _curve_table(curve, eps) -> str:
    grid = sorted(set(eps or []) | {0.0}) if eps else curve.grid(11)
    head = "| eps | " + " | ".join(f"{e:.4g}" for e in grid) + " |"
    sep = "|---|" + "---|" * len(grid)
    row = f"| {curve.attack} (min-norm run, {curve.seconds:.3g} s) | " + \
        " | ".join(f"{100 * a:.1f}%" for a in curve.curve(grid)) + " |"
    return "\n".join([head, sep, row]) + "\n"
