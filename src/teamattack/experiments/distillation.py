"""E6: defensive distillation against the attacks (seed 001 section V-F, Fig 11).

    teamattack reproduce e6-distillation --dataset digits -n 300 --cache runs/e6-cache
    teamattack reproduce e6-distillation --dataset mnist -n 100 --temperatures 1,20,100 --epochs 2

For each temperature G: a teacher and a student of the dataset's Table I net are trained (or
reused from ``--cache``) with :func:`teamattack.defenses.distill`; the student, deployed at
temperature 1, is attacked on N correctly classified test images (seeded) by every attack under
the paper's budgets (L0 <= 112 pixels, L2 <= 3.0, Linf <= 0.3 on MNIST / CIFAR-10; the same
shares of the 8x8 digits, see ``BUDGETS``). Fixed-budget attacks (TEAM paper / default mode,
FGSM, BIM, PGD, M-DI2-FGSM) run at the budget; a minimum-norm attack (JSMA, C&W, DeepFool, DDN,
FMN) counts as a success when its distance is within the budget. On the highest G the
minimum-norm medians of TEAM (min-norm walk), C&W, DDN, FMN and ALMA are recorded, and which
TEAM objectives survive the saturated softmax (the share of images whose objective gradient is
zero or non-finite in float32, and the ASR of TEAM with each objective).

Resume: every (G, attack, batch) unit is appended to ``OUT/e6-units/<dataset>-G<G>.jsonl``
(teamattack.bench.harness.Sidecar); a rerun trains nothing that is cached and attacks only the
missing units.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from . import Context, register
from .plotting import line_panels

TEMPERATURES = (1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100)
NORMS = ("l0", "l2", "linf")
# the paper's budgets (MNIST); digits: the same share of the pixels (112 / 784 ~ 9 / 64) and the
# L2 budget scaled with the square root of the dimension (3.0 * 8 / 28)
BUDGETS: dict[str, dict[str, float]] = {
    "mnist": {"l0": 112, "l2": 3.0, "linf": 0.3},
    "cifar10": {"l0": 112, "l2": 3.0, "linf": 0.3},
    "digits": {"l0": 9, "l2": round(3.0 * 8 / 28, 4), "linf": 0.3},
}


@dataclass(frozen=True)
class Recipe:
    """How the teacher and the student are trained on a dataset (the same for every G)."""

    arch: str
    epochs: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0


# Adam everywhere: it is invariant to the 1/G scale of the loss's gradient at the logits, so one
# learning rate serves every G (SGD with the CIFAR-10 zoo recipe learns far slower at G = 100:
# docs/distillation.md, "The optimizer at high temperature").
RECIPES: dict[str, Recipe] = {
    "digits": Recipe("digits-cnn", 200, 0.01),
    "mnist": Recipe("mnist-table1", 2, 0.01),
    "cifar10": Recipe("cifar10-table1", 40, 0.001),
}


@dataclass(frozen=True)
class Options:
    """The options of e6 (from `teamattack reproduce`): dataset, temperatures, cache, attacks, epochs."""

    dataset: str = "digits"
    temperatures: tuple[float, ...] = TEMPERATURES
    cache: Path | None = None
    attacks: tuple[str, ...] | None = None     # only these attacks (names as in the table)
    skip: tuple[str, ...] = ()                # drop these attacks
    epochs: int | None = None                 # both trainings; default: the recipe's
    beyond: bool = True                       # the min-norm / objective study on the highest G

    @classmethod
    def from_context(cls, ctx: Context) -> Options:
        a = ctx.args
        if a is None:
            return cls()

        def names(v):
            return tuple(s.strip() for s in v.split(",") if s.strip()) if v else None

        temps = names(getattr(a, "temperatures", None))
        return cls(
            dataset=getattr(a, "dataset", None) or "digits",
            temperatures=tuple(float(t) for t in temps) if temps else TEMPERATURES,
            cache=Path(a.cache) if getattr(a, "cache", None) else None,
            attacks=names(getattr(a, "attacks", None)),
            skip=names(getattr(a, "skip_attacks", None)) or (),
            epochs=getattr(a, "epochs", None),
            beyond=not getattr(a, "no_beyond", False),
        )


def _budget_spec(spec):
    from ..bench.suites import BUDGET

    return dataclasses.replace(spec, kind=BUDGET)


def attack_groups() -> dict[str, list]:
    """Per norm, the attacks of Fig 11 and their peers (harness AttackSpecs)."""
    from ..bench.suites import peer_spec, team_spec

    return {
        "l0": [
            _budget_spec(team_spec("team-l0-paper", "l0", mode="paper")),
            _budget_spec(team_spec("team-l0", "l0")),
            peer_spec("jsma"),
            peer_spec("fmn-l0-100"),
        ],
        "l2": [
            _budget_spec(team_spec("team-l2-paper", "l2", mode="paper")),
            _budget_spec(team_spec("team-l2", "l2")),
            _budget_spec(team_spec("team-l2-targets3", "l2", targets=3)),   # with the target sweep
            peer_spec("cw-9x1000"),
            peer_spec("cw-9x100", name="cw-weak-9x100"),
            peer_spec("deepfool"),
            peer_spec("deepfool-paper"),
            peer_spec("ddn-100"),
            peer_spec("fmn-l2-100"),
        ],
        "linf": [
            _budget_spec(team_spec("team-linf-paper", "linf", mode="paper")),
            _budget_spec(team_spec("team-linf", "linf")),
            _budget_spec(team_spec("team-linf-targets3", "linf", targets=3)),
            peer_spec("fgsm", eps=0.3),
            peer_spec("bim", name="ifgsm-bim", eps=0.3),
            peer_spec("pgd", eps=0.3),
            peer_spec("mdi2fgsm", name="m-di2-fgsm", eps=0.3),
            peer_spec("fmn-linf-100"),
        ],
    }


def min_norm_groups() -> dict[str, list]:
    """The minimum-norm attacks of the study on the highest G (untargeted L2 and Linf)."""
    from ..bench.suites import peer_spec, team_spec

    # TEAM's default walk (80 gradients per image) and a longer one: 4 starts screened 16 steps each,
    # the best walked to 60 (108 gradients, about a tenth of the peers' 1000)
    longer = dict(mode="min-norm", starts=4, screen=16, steps=60)
    return {
        "l2": [team_spec("team-l2-min-norm", "l2", mode="min-norm"),
               team_spec("team-l2-min-norm-108", "l2", **longer), peer_spec("cw-9x1000"),
               peer_spec("ddn-1000"), peer_spec("fmn-l2-1000"), peer_spec("alma-1000")],
        "linf": [team_spec("team-linf-min-norm", "linf", mode="min-norm"),
                 team_spec("team-linf-min-norm-108", "linf", **longer), peer_spec("fmn-linf-1000")],
    }


def objective_specs(budget_l2: float) -> list:
    """TEAM L2 at the budget with each untargeted objective (default mode): T1 (logit), T4 (softmax), margin."""
    from ..bench.suites import team_spec

    return [dataclasses.replace(_budget_spec(team_spec(f"team-l2-{o}", "l2", objective=o)), eps=budget_l2)
            for o in ("T1", "T4", "margin")]


def _select(specs: list, opts: Options) -> list:
    out = [s for s in specs if s.name not in opts.skip]
    if opts.attacks is not None:
        out = [s for s in out if s.name in opts.attacks]
    return out


def gradient_health(model, x: torch.Tensor, y: torch.Tensor, objective: str) -> dict:
    """Share of images whose input gradient of `objective` is exactly zero / non-finite (float32)."""
    from ..objectives import get_objective

    obj = get_objective(objective)
    xg = x.detach().clone().requires_grad_(True)
    val = obj(model(xg), y)
    (g,) = torch.autograd.grad(val.sum(), xg)
    g = g.flatten(1)
    finite = torch.isfinite(g).all(1)
    zero = finite & (g.abs().amax(1) == 0)
    return {"objective": objective, "zero_gradient": float(zero.float().mean()),
            "non_finite_gradient": float((~finite).float().mean()),
            "median_gradient_l2": float(g[finite].norm(dim=1).median()) if finite.any() else float("nan")}


@torch.no_grad()
def logit_stats(model, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Scale of the deployed logits and how saturated softmax(Z) is in float32 on (x, y)."""
    z = model(x)
    top2 = z.topk(2, dim=1).values
    p = z.softmax(1)
    return {"logit_std": float(z.std()), "median_top_gap": float((top2[:, 0] - top2[:, 1]).median()),
            "mean_max_softmax": float(p.max(1).values.mean()),
            "softmax_exactly_one": float((p.max(1).values == 1.0).float().mean())}


def _g_key(g: float) -> str:
    return f"{g:g}"


def distilled(dataset: str, g: float, cache: Path, epochs: int | None = None, seed: int = 0,
              root: str | Path | None = None, progress: bool = False):
    """e6's teacher and student at temperature g on `dataset` (its `RECIPES` entry; `epochs`
    overrides the recipe's), trained into `cache` or reused from it (`defenses.distill`)."""
    from ..defenses import distill

    recipe = RECIPES[dataset]
    epochs = epochs or recipe.epochs
    stem = f"{dataset}-{recipe.arch}-G{_g_key(g)}-e{epochs}-lr{recipe.lr:g}-s{seed}"
    return distill(recipe.arch, dataset, temperature=g, epochs=epochs, seed=seed, out=Path(cache) / f"{stem}.safetensors",
                   root=root, progress=progress, lr=recipe.lr, optimizer=recipe.optimizer,
                   weight_decay=recipe.weight_decay, log=lambda m: None)


def _unit_header(dataset: str, g: float, fingerprint: str, idx: list[int], seed: int) -> dict:
    ih = hashlib.sha1(",".join(map(str, idx)).encode()).hexdigest()[:12]
    return {"experiment": "e6-distillation", "dataset": dataset, "temperature": g, "model": fingerprint,
            "images": ih, "n": len(idx), "seed": seed}


def _run_group(model, x, y, specs, budget, ctx, store, dataset, min_norm=False) -> list[dict]:
    """run_bench on one norm group; per attack: ASR within `budget` and the record's statistics."""
    from ..bench import records as R
    from ..bench.harness import run_bench

    if not specs:
        return []
    res = run_bench(model, x, y, specs, seed=ctx.seed, batch_size=ctx.batch_size or (100 if ctx.device.type == "cpu" else 300),
                    eps_list=None if min_norm else [budget], dataset=dataset, sidecar=store,
                    progress=ctx.progress, log=ctx.log)
    ra = {(r["attack"]): r for r in res["robust_accuracy"]}
    rows = []
    for rec in res["runs"]:
        if rec["attack"].startswith("per-image-best"):
            continue
        spec = next(s for s in specs if s.name == rec["attack"])
        row = {"attack": rec["attack"], "library": rec["library"], "norm": rec["norm"], "kind": spec.kind,
               "asr_unbounded": rec["asr"], "median": rec[rec["norm"]].get("median") if rec[rec["norm"]] else None,
               "seconds_per_image": rec["seconds_per_image"], "grad_evals_per_image": rec["grad_evals_per_image"]}
        if rec.get("via"):
            row["via"] = rec["via"]
        if not min_norm:
            row["budget"] = budget
            row["asr"] = 1.0 - ra[rec["attack"]]["accuracy"][R.fmt_eps(budget)]
        rows.append(row)
    for s in res["skipped"]:
        rows.append({"attack": s["attack"], "skipped": s["reason"]})
    return rows


@register("e6-distillation", "seed 001 Fig 11: ASR of every attack vs the defensive-distillation temperature G "
          "(L0 <= 112, L2 <= 3.0, Linf <= 0.3); options --dataset, --temperatures, --cache, --epochs",
          default_n=300, datasets=tuple(RECIPES), shards=True)
def e6(ctx: Context) -> dict:
    from .. import zoo
    from ..bench.harness import load_images, model_fingerprint

    opts = Options.from_context(ctx)
    ds = opts.dataset
    if ds not in RECIPES:
        raise ValueError(f"e6-distillation: --dataset must be one of {', '.join(RECIPES)}; got {ds!r}")
    recipe = RECIPES[ds]
    epochs = opts.epochs or recipe.epochs
    budgets = BUDGETS[ds]
    n = ctx.n_or(300)
    cache = opts.cache or (ctx.out / "e6-cache")
    groups = {k: _select(v, opts) for k, v in attack_groups().items()}
    g_max = max(opts.temperatures)
    ctx.log(f"e6-distillation on {ds}: {recipe.arch}, teacher and student {epochs} epochs each "
            f"({recipe.optimizer}, lr {recipe.lr:g}), temperatures {', '.join(map(_g_key, opts.temperatures))}; N = {n} images; "
            f"budgets L0 <= {budgets['l0']:g}, L2 <= {budgets['l2']:g}, Linf <= {budgets['linf']:g}; attacks: "
            + ", ".join(s.name for v in groups.values() for s in v))
    per_g: list[dict] = []
    beyond: dict = {}
    for g in opts.temperatures:
        d = distilled(ds, g, cache, epochs, ctx.seed, root=ctx.data_root, progress=ctx.progress)
        model = zoo.load(d.student).to(ctx.device)
        x, y, idx = load_images(ds, model, n, seed=ctx.seed, root=ctx.data_root, device=ctx.device)
        store = ctx.resume_store(ctx.out / "e6-units" / f"{ds}-G{_g_key(g)}.jsonl",
                                 _unit_header(ds, g, model_fingerprint(model), idx, ctx.seed))
        entry = {"temperature": g, "student": d.student.name, "teacher": d.teacher.name,
                 "student_test_accuracy": d.student_card["test_accuracy"],
                 "teacher_test_accuracy": d.teacher_card["test_accuracy"], "n_images": len(idx),
                 "logits": logit_stats(model, x, y), "attacks": []}
        for norm in NORMS:
            entry["attacks"] += _run_group(model, x, y, groups[norm], budgets[norm], ctx, store, ds)
        per_g.append(entry)
        asr = {a["attack"]: a.get("asr") for a in entry["attacks"]}
        ctx.log(f"G={_g_key(g)}: student accuracy {entry['student_test_accuracy']:.4f}, logit std "
                f"{entry['logits']['logit_std']:.1f}; ASR " + ", ".join(
                    f"{k} {v:.0%}" for k, v in asr.items() if v is not None))
        if g == g_max and opts.beyond:
            beyond = {"temperature": g, "min_norm": [], "objectives": []}
            for norm, specs in min_norm_groups().items():
                beyond["min_norm"] += _run_group(model, x, y, _select(specs, opts), None, ctx, store, ds,
                                                 min_norm=True)
            beyond["objectives"] = _run_group(model, x, y, _select(objective_specs(budgets["l2"]), opts),
                                              budgets["l2"], ctx, store, ds)
            beyond["gradients"] = [gradient_health(model, x, y, o) for o in ("T1", "T4", "margin")]
    png = fig11(ctx.png(f"e6_distillation_{ds}.png"), per_g, budgets, ds)
    out = {"dataset": ds, "arch": recipe.arch, "epochs": epochs, "lr": recipe.lr, "optimizer": recipe.optimizer,
           "weight_decay": recipe.weight_decay, "budgets": budgets,
           "n_images": n, "temperatures": list(opts.temperatures), "per_temperature": per_g, "beyond": beyond,
           "png": str(png), "markdown": markdown(per_g, beyond, budgets, ds, recipe.arch, epochs)}
    md = ctx.png(f"e6_distillation_{ds}.md")
    atomic_write_text(md, out["markdown"])
    out["md"] = str(md)
    return out


def fig11(path: Path, per_g: list[dict], budgets: dict, ds: str) -> Path:
    """ASR vs G, one line per attack, one panel per norm (the shape of seed 001 Fig 11)."""
    xs = [e["temperature"] for e in per_g]
    panels = []
    for norm, title in (("l0", "L0"), ("l2", "L2"), ("linf", "Linf")):
        names = [a["attack"] for a in per_g[0]["attacks"] if a.get("norm") == norm and "asr" in a] if per_g else []
        ys = {}
        for name in names:
            ys[name] = [next((a["asr"] for a in e["attacks"] if a.get("attack") == name and "asr" in a), float("nan"))
                        for e in per_g]
        panels.append({"x": xs, "ys": ys or {"(none)": [float("nan")] * len(xs)}, "xlabel": "temperature G",
                       "ylabel": "ASR", "title": f"{title} <= {budgets[norm]:g}", "ylim": (-0.02, 1.02)})
    return line_panels(path, panels, suptitle=f"e6: defensive distillation on {ds}, ASR within the budget vs G")


def markdown(per_g: list[dict], beyond: dict, budgets: dict, ds: str, arch: str, epochs: int) -> str:
    """The ASR table (attacks x G), the accuracy / logit-scale rows and the study on the highest G."""
    if not per_g:
        return "(no temperature run)\n"
    gs = [_g_key(e["temperature"]) for e in per_g]
    lines = [f"# e6-distillation on {ds} ({arch}, {epochs} epochs per training, {per_g[0]['n_images']} images)", "",
             f"Budgets: L0 <= {budgets['l0']:g} pixels, L2 <= {budgets['l2']:g}, Linf <= {budgets['linf']:g}. "
             "ASR within the budget over correctly classified test images.", "",
             "| | " + " | ".join(f"G={g}" for g in gs) + " |", "|---|" + "---|" * len(gs)]
    lines.append("| student test accuracy | " + " | ".join(f"{e['student_test_accuracy']:.4f}" for e in per_g) + " |")
    lines.append("| teacher test accuracy | " + " | ".join(f"{e['teacher_test_accuracy']:.4f}" for e in per_g) + " |")
    lines.append("| logit std | " + " | ".join(f"{e['logits']['logit_std']:.1f}" for e in per_g) + " |")
    lines.append("| softmax == 1.0 (float32) | " + " | ".join(f"{e['logits']['softmax_exactly_one']:.0%}"
                                                             for e in per_g) + " |")
    for norm in NORMS:
        names = [a["attack"] for a in per_g[0]["attacks"] if a.get("norm") == norm and "asr" in a]
        for name in names:
            cells = []
            for e in per_g:
                a = next((a for a in e["attacks"] if a.get("attack") == name and "asr" in a), None)
                cells.append("-" if a is None else f"{a['asr']:.1%}")
            lines.append(f"| {norm} {name} | " + " | ".join(cells) + " |")
    skipped = {a["attack"]: a["skipped"] for e in per_g for a in e["attacks"] if "skipped" in a}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    if beyond:
        lines += ["", f"## Minimum-norm medians on the G = {_g_key(beyond['temperature'])} student", "",
                  "| attack | norm | ASR (unbounded) | median over successes | s/img | grads/img |", "|---|---|---|---|---|---|"]
        for a in beyond["min_norm"]:
            if "skipped" in a:
                lines.append(f"| {a['attack']} | skipped: {a['skipped']} | | | | |")
                continue
            med = "-" if a["median"] is None else f"{a['median']:.4f}"
            lines.append(f"| {a['attack']} | {a['norm']} | {a['asr_unbounded']:.1%} | {med} | "
                         f"{a['seconds_per_image']:.3f} | {a['grad_evals_per_image']:.0f} |")
        lines += ["", f"## TEAM objectives on the G = {_g_key(beyond['temperature'])} student (L2 <= {budgets['l2']:g})",
                  "", "| objective | ASR within budget | zero gradient at x | non-finite gradient at x |",
                  "|---|---|---|---|"]
        health = {h["objective"]: h for h in beyond.get("gradients", [])}
        for a in beyond["objectives"]:
            o = a["attack"].rsplit("-", 1)[-1]
            h = health.get(o, {})
            lines.append(f"| {o} | {a.get('asr', float('nan')):.1%} | {h.get('zero_gradient', float('nan')):.0%} | "
                         f"{h.get('non_finite_gradient', float('nan')):.0%} |")
    return "\n".join(lines) + "\n"
