"""E7: adversarial training with each attack's examples, white-box heat map, transferability (seed 000 Sec. 4-5).

    teamattack reproduce e7-adversarial-training --dataset digits -n 300
    teamattack reproduce e7-adversarial-training --dataset mnist -n 100 --epochs 1 --train-n 2000
    teamattack reproduce e7-adversarial-training --dataset cifar10 --skip jsma,cw

The paper's offline protocol (seed 000 Sec. 5C): the natural zoo model of the dataset is attacked
once on a seeded subset of the training set (``--train-n``) by each attack (TEAM, JSMA, C&W,
FGSM, PGD, DeepFool, M-DI2-FGSM); for each attack a fresh model of the same architecture is
trained on the training set plus those examples (:func:`teamattack.defenses.adversarial_train`,
``offline=True``), beside a model trained on the natural examples only, same recipe. Then every
one of the 8 models is attacked white-box by every attack on N seeded test images (all of them:
clean errors count as broken), which gives:

- **Fig 4** (8 x 8 heat map): accuracy of each model (rows) on the natural test images and on each
  attack's examples crafted against it (columns);
- **transfer matrices**: per attack, the accuracy of model B on the examples crafted on model A
  (its diagonal is the white-box row of the heat map), the natural model's row included;
- **Fig 3**: the cross-entropy during training with TEAM's examples (per epoch, on the clean and
  on the adversarial part of the data), beside the other models' adversarial loss.

Every attack works within one budget per norm (``RECIPES``: Linf for TEAM / FGSM / PGD /
M-DI2-FGSM, L2 for C&W / DeepFool, L0 for JSMA); the examples of minimum-norm attacks (C&W,
DeepFool, JSMA) are brought into it (teamattack.defenses.adversarial.within). The paper gives no
budgets; ours are the e6 budgets (digits: Linf 0.2; why, docs/adversarial_training.md).

Fine-tuning (the CIFAR-10 recipe's default, where training from scratch costs more than the CPU
affords; ``--finetune`` / ``--no-finetune`` choose it on any dataset): every model, the natural
control included, starts from the natural zoo model's weights and trains ``--epochs`` more on its
data (:func:`finetuning`: the zoo model's optimizer, weight decay and augmentation, a tenth of its
learning rate, cosine schedule), instead of from a fresh initialisation.

Resume: trained models are reused when their cards match (and resume from their checkpoints);
each (model, attack) unit's examples go to ``OUT/e7-cache/units/`` and its numbers to a sidecar
(``OUT/e7-units/<dataset>.jsonl``, teamattack.bench.harness.Sidecar); a rerun does only the rest.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..atomic import atomic_write_text
from . import Context, register
from .plotting import heat_maps, line_panels


@dataclass(frozen=True)
class Recipe:
    """How E7 runs on a dataset: architecture, epochs, attacked training subset, budgets, default N."""

    arch: str
    epochs: int
    train_n: int
    budgets: dict
    n: int
    finetune: bool = False


RECIPES: dict[str, Recipe] = {
    "digits": Recipe("digits-cnn", 20, 600, {"linf": 0.2, "l2": round(3.0 * 8 / 28, 4), "l0": 9}, 300),
    "mnist": Recipe("mnist-table1", 1, 2000, {"linf": 0.3, "l2": 3.0, "l0": 112}, 100),
    # CIFAR-10: the usual budgets (Linf 8/255, L2 0.5), L0 10 pixel positions; the Table I net,
    # fine-tuned 2 epochs from the zoo model (from scratch it needs tens of epochs per model, more than
    # the CPU affords: docs/adversarial_training.md, E7)
    "cifar10": Recipe("cifar10-table1", 2, 2000, {"linf": round(8 / 255, 6), "l2": 0.5, "l0": 10}, 200,
                      finetune=True),
}


@dataclass(frozen=True)
class E7Attack:
    """One attack of Fig 4: its label, the library attack (AttackSpec name), norm, iterations."""

    label: str
    key: str
    name: str
    norm: str
    fixed_budget: bool
    steps: int | None = None


ATTACKS: tuple[E7Attack, ...] = (
    E7Attack("TEAM", "team", "team-linf", "linf", True),
    E7Attack("JSMA", "jsma", "jsma", "l0", False),
    E7Attack("C&W", "cw", "cw-9x100", "l2", False),
    E7Attack("FGSM", "fgsm", "fgsm", "linf", True),
    E7Attack("PGD", "pgd", "pgd", "linf", True, 20),
    E7Attack("DeepFool", "deepfool", "deepfool", "l2", False),
    E7Attack("M-DI2-FGSM", "mdi2fgsm", "mdi2fgsm", "linf", True),
)
NATURAL = "natural"


def finetuning(natural) -> dict:
    """Training settings of ``--finetune``, from the natural zoo model's card: its optimizer, weight
    decay and augmentation, a tenth of its learning rate, a cosine schedule (no warm-up from a trained point)."""
    card = getattr(natural, "card", {}) or {}
    if "lr" not in card or "optimizer" not in card:
        raise ValueError("--finetune needs a zoo model whose card records its optimizer and lr")
    return {"optimizer": card["optimizer"], "lr": card["lr"] / 10, "schedule": "cosine",
            "weight_decay": card.get("weight_decay", 0.0), "augment": bool(card.get("augment", False))}


def spec_of(a: E7Attack, budgets: dict):
    """The AttackSpec of an E7 attack (fixed-budget ones built at the budget of their norm)."""
    from ..defenses import AttackSpec

    return AttackSpec(a.name, eps=budgets[a.norm] if a.fixed_budget else None, steps=a.steps)


def _options(ctx: Context) -> tuple[str, Recipe, int, int, Path, bool]:
    a = ctx.args
    ds = ctx.dataset or getattr(a, "dataset", None) or "digits"
    if ds not in RECIPES:
        raise ValueError(f"e7-adversarial-training: --dataset must be one of {', '.join(RECIPES)}; got {ds!r}")
    r = RECIPES[ds]
    epochs = getattr(a, "epochs", None) or r.epochs
    train_n = getattr(a, "train_n", None) or r.train_n
    cache = Path(getattr(a, "cache", None) or ctx.out / "e7-cache")
    finetune = getattr(a, "finetune", None)
    return ds, r, epochs, train_n, cache, r.finetune if finetune is None else bool(finetune)


def _train_models(ctx, ds, r, epochs, train_n, cache, attacks, finetune: bool) -> dict[str, dict]:
    """key -> card of the trained model (natural recipe and one per attack); reused when finished."""
    from ..defenses import adversarial_train
    from ..zoo import load, registry
    from ..zoo.train import train

    natural = load(r.arch)
    cards: dict[str, dict] = {}
    ft = finetuning(natural) if finetune else {}
    stem = f"{ds}-{r.arch}-{'ft' if finetune else ''}e{epochs}-s{ctx.seed}"
    expect = {"arch": r.arch, "dataset": ds, "epochs": epochs, "seed": ctx.seed, **ft}
    start = natural if finetune else r.arch  # where every model's training starts
    quiet = dict(root=ctx.data_root, progress=ctx.progress, log=lambda m: None, resume=True, **ft)
    paths = {NATURAL: cache / f"{stem}-{NATURAL}.safetensors"}
    paths.update({a.key: cache / f"{stem}-{a.key}-n{train_n}.safetensors" for a in attacks})
    out = paths[NATURAL]
    t0 = time.perf_counter()
    cards[NATURAL] = registry.finished_card(out, expect) or \
        train(r.arch, out, dataset=ds, epochs=epochs, seed=ctx.seed, init=natural if finetune else None,
              card_extra={"init": natural.card.get("name", r.arch)} if finetune else None, **quiet)
    ctx.log(f"e7: natural model: test accuracy {cards[NATURAL]['test_accuracy']:.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
    for a in attacks:
        out = paths[a.key]
        t0 = time.perf_counter()
        card = registry.finished_card(out, expect)
        if card is None or card.get("adversarial", {}).get("attack") != spec_of(a, r.budgets).describe():
            ctx.log(f"e7: training with the examples of {a.label} ({train_n} training images attacked)")
            card = adversarial_train(start, spec_of(a, r.budgets), ds, epochs, out, eps=r.budgets[a.norm],
                                     offline=True, offline_n=train_n, natural=natural, seed=ctx.seed, **quiet)
            ctx.log(f"e7: {a.label} model: test accuracy {card['test_accuracy']:.4f}, "
                    f"{card['adversarial']['n_adversarial']} examples added ({time.perf_counter() - t0:.0f} s)")
        cards[a.key] = card
    return {k: dict(c, path=str(paths[k])) for k, c in cards.items()}


def _units_header(ds, fingerprints, idx, seed, budgets) -> dict:
    ih = hashlib.sha1(",".join(map(str, idx)).encode()).hexdigest()[:12]
    return {"experiment": "e7-adversarial-training", "dataset": ds, "models": fingerprints, "images": ih,
            "n": len(idx), "seed": seed, "budgets": budgets}


@torch.no_grad()
def _correct(model, x, y) -> torch.Tensor:
    from ..data import predict

    return predict(model, x) == y


def transfer_matrix(models: dict, examples: dict, y: torch.Tensor) -> list[list[float]]:
    """M[a][b]: accuracy of models[b] on examples[a] (crafted on models[a]), keys in models' order."""
    keys = list(models)
    return [[float(_correct(models[b], examples[a], y).float().mean()) for b in keys] for a in keys]


@register("e7-adversarial-training",
          "seed 000 Figs 3-4: models trained on each attack's examples (TEAM, JSMA, C&W, FGSM, PGD, DeepFool, "
          "M-DI2-FGSM; offline protocol), 8 x 8 white-box heat map, transfer matrices; options --dataset, "
          "--epochs, --train-n, --cache", default_n=300, datasets=("digits", "mnist", "cifar10"))
def e7(ctx: Context) -> dict:
    from .. import data, zoo
    from ..bench.harness import Sidecar, model_fingerprint
    from ..defenses.adversarial import craft
    from ..zoo import registry

    ds, r, epochs, train_n, cache, finetune = _options(ctx)
    attacks = [a for a in ATTACKS if a.key not in ctx.skip and a.label not in ctx.skip]
    n = ctx.n_or(r.n)
    ctx.log(f"e7-adversarial-training on {ds}: {r.arch}, {_training(epochs, finetune)}, offline protocol with "
            f"{train_n} training images attacked against the natural zoo model; N = {n} test images; budgets "
            + ", ".join(f"{k} <= {v:g}" for k, v in r.budgets.items()) + "; attacks: "
            + ", ".join(a.label for a in attacks))
    cards = _train_models(ctx, ds, r, epochs, train_n, cache, attacks, finetune)
    models = {k: zoo.load(c["path"]).to(ctx.device).eval() for k, c in cards.items()}
    x, y, idx = data.load(ds, "test", n=n, seed=ctx.seed, root=ctx.data_root, return_indices=True)
    x, y = x.to(ctx.device), y.to(ctx.device)
    fps = {k: model_fingerprint(m) for k, m in models.items()}
    store = Sidecar(ctx.out / "e7-units" / f"{ds}.jsonl", _units_header(ds, fps, idx.tolist(), ctx.seed, r.budgets),
                    fresh=ctx.fresh)
    examples: dict[str, dict[str, torch.Tensor]] = {a.key: {} for a in attacks}
    units: dict[str, dict] = {}
    for mk, model in models.items():
        for a in attacks:
            key = f"{mk}/{a.key}"
            path = cache / "units" / f"{ds}-{fps[mk]}-{a.key}-{store.header['images']}.safetensors"
            rec = store.get(key)
            if rec is None or not path.is_file():
                t0 = time.perf_counter()
                x_adv, _ = craft(spec_of(a, r.budgets), model, x, y, ctx.seed, eps=r.budgets[a.norm], norm=a.norm,
                                 batch_size=100)
                secs = time.perf_counter() - t0
                registry.save_state({"x_adv": x_adv}, path)
                rec = {"accuracy": float(_correct(model, x_adv, y).float().mean()), "seconds": round(secs, 2)}
                store.put(key, rec)
                ctx.log(f"e7: {mk} model vs {a.label}: accuracy {rec['accuracy']:.1%} ({secs:.1f} s)")
            examples[a.key][mk] = load_file(str(path))["x_adv"].to(ctx.device)
            units[key] = rec
    keys = list(models)
    labels = {NATURAL: "natural", **{a.key: a.label for a in attacks}}
    clean = {k: float(_correct(m, x, y).float().mean()) for k, m in models.items()}
    white = [[clean[mk]] + [units[f"{mk}/{a.key}"]["accuracy"] for a in attacks] for mk in keys]
    transfer = {a.key: transfer_matrix(models, examples[a.key], y) for a in attacks}
    natural_row = [[clean[k] if a is None else transfer[a.key][0][j] for a in [None, *attacks]]
                   for j, k in enumerate(keys)]
    row_labels = [f"trained on {labels[k]}" for k in keys]
    col_labels = ["natural"] + [a.label for a in attacks]
    fig4 = heat_maps(ctx.png(f"e7_fig4_{ds}.png"), [
        {"matrix": white, "row_labels": row_labels, "col_labels": col_labels,
         "title": "white-box: accuracy on examples crafted against the model", "xlabel": "test examples"},
        {"matrix": natural_row, "row_labels": row_labels, "col_labels": col_labels,
         "title": "transfer: examples crafted against the natural model", "xlabel": "test examples"}],
        suptitle=f"e7 (000 Fig 4) on {ds}: accuracy of each model, N = {n}", columns=2)
    fig_t = heat_maps(ctx.png(f"e7_transfer_{ds}.png"), [
        {"matrix": transfer[a.key], "row_labels": [labels[k] for k in keys], "col_labels": [labels[k] for k in keys],
         "title": f"{a.label} examples", "xlabel": "evaluated on", "ylabel": "crafted on"} for a in attacks],
        suptitle=f"e7 transfer on {ds}: accuracy of model B (columns) on examples crafted on model A (rows)")
    fig3 = _fig3(ctx.png(f"e7_fig3_{ds}.png"), cards, attacks, ds)
    out = {"dataset": ds, "arch": r.arch, "epochs": epochs, "finetune": finetune, "train_n": train_n, "n_images": n,
           "budgets": r.budgets, "protocol": "offline: examples of the natural zoo model on a seeded training "
           "subset, added to the training data; white-box evaluation on N seeded test images (clean errors count)",
           "attacks": [{"label": a.label, "attack": spec_of(a, r.budgets).describe(), "norm": a.norm,
                        "budget": r.budgets[a.norm], "fixed_budget": a.fixed_budget} for a in attacks],
           "models": {k: {"label": labels[k], "test_accuracy": c["test_accuracy"], "weights": Path(c["path"]).name,
                          "training_time_s": c["training_time_s"], "history": c["history"],
                          **({"adversarial": c["adversarial"]} if "adversarial" in c else {})}
                      for k, c in cards.items()},
           "model_order": keys, "columns": ["natural"] + [a.key for a in attacks],
           "white_box": white, "transfer": transfer, "natural_examples_on_models": natural_row,
           "attack_seconds": {k: v["seconds"] for k, v in units.items()},
           "png": [str(fig4), str(fig_t), str(fig3)]}
    out["markdown"] = markdown(out, labels)
    md = ctx.png(f"e7_adversarial_training_{ds}.md")
    atomic_write_text(md, out["markdown"])
    out["md"] = str(md)
    return out


def _fig3(path: Path, cards: dict, attacks, ds: str) -> Path:
    """000 Fig 3: cross-entropy per epoch while training with TEAM's examples; every model's adversarial loss."""
    panels = []
    team = cards.get("team")
    if team is not None:
        h = team["history"]
        panels.append({"x": [e["epoch"] for e in h], "ys": {
            "training loss (all)": [e["train_loss"] for e in h],
            "clean part": [e.get("clean_loss", float("nan")) for e in h],
            "TEAM examples": [e.get("adv_loss", float("nan")) for e in h]},
            "xlabel": "epoch", "ylabel": "cross-entropy", "title": "training with TEAM's examples"})
    ys = {a.label: [e.get("adv_loss", float("nan")) for e in cards[a.key]["history"]] for a in attacks}
    epochs = [e["epoch"] for e in cards[attacks[0].key]["history"]] if attacks else [1]
    panels.append({"x": epochs, "ys": ys or {"(none)": [float("nan")]}, "xlabel": "epoch",
                   "ylabel": "cross-entropy on the added examples", "title": "each attack's examples"})
    return line_panels(path, panels, suptitle=f"e7 (000 Fig 3) on {ds}: cross-entropy during adversarial training")


def _training(epochs: int, finetune: bool) -> str:
    return (f"every model fine-tuned {epochs} epoch(s) from the natural zoo model" if finetune
            else f"{epochs} epochs per model")


def _table(head: str, rows: list[str], cols: list[str], m: list[list[float]]) -> list[str]:
    lines = [f"| {head} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {r} | " + " | ".join(f"{v:.1%}" for v in row) + " |" for r, row in zip(rows, m)]
    return lines


def markdown(res: dict, labels: dict) -> str:
    keys = res["model_order"]
    cols = [labels[k] for k in res["columns"]]
    rows = [f"trained on {labels[k]}" for k in keys]
    b = res["budgets"]
    lines = [f"# e7-adversarial-training on {res['dataset']} ({res['arch']}, "
             f"{_training(res['epochs'], res.get('finetune', False))}, "
             f"N = {res['n_images']} test images)", "",
             f"Offline protocol (seed 000 Sec. 5C): each attack's examples of {res['train_n']} training images, "
             "crafted once against the natural zoo model, added to the training data of a "
             + ("copy of the natural zoo model (fine-tuning). " if res.get("finetune") else "fresh model. ")
             + "Budgets: "
             f"Linf <= {b['linf']:g} (TEAM, FGSM, PGD, M-DI2-FGSM), L2 <= {b['l2']:g} (C&W, DeepFool), "
             f"L0 <= {b['l0']:g} pixels (JSMA; targeted at a random class); minimum-norm examples are brought "
             "into the budget. Accuracy over all N images (clean errors count as broken).", "",
             "## White-box (000 Fig 4): accuracy of each model on the examples crafted against it", ""]
    lines += _table("model", rows, cols, res["white_box"])
    lines += ["", "## Transfer: the natural model's examples on every model", ""]
    lines += _table("model", rows, cols, res["natural_examples_on_models"])
    lines += ["", "## Transfer matrices (rows: crafted on; columns: accuracy of)", ""]
    for a in res["attacks"]:
        k = next(k for k in res["columns"] if labels[k] == a["label"])
        lines += [f"### {a['label']}", ""]
        lines += _table("crafted on", [labels[k2] for k2 in keys], [labels[k2] for k2 in keys], res["transfer"][k])
        lines.append("")
    lines += ["## Models", "", "| model | test accuracy | examples added | training s |", "|---|---|---|---|"]
    for k in keys:
        m = res["models"][k]
        added = m.get("adversarial", {}).get("n_adversarial", 0)
        lines.append(f"| {labels[k]} | {m['test_accuracy']:.4f} | {added} | {m['training_time_s']:.0f} |")
    return "\n".join(lines) + "\n"
