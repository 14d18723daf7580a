"""E8: the math paper's (seed 004) Figures 1-4 on ResNet56 / CIFAR-10.

    teamattack reproduce math-fig1   image rows: original, FGSM, IFGSM, CW-L2 at eps 0.02 and 0.08
    teamattack reproduce math-fig2   accuracy vs eps (FGSM) and vs iterations (IFGSM, eps 0.02, alpha 0.1)
    teamattack reproduce math-fig3   targeted IFGSM cat -> dog: success vs eps (10 it.) and vs iterations
    teamattack reproduce math-fig4   CW-L2 cat -> dog: mean class probabilities before / after

Only the first 1017 CIFAR-10 test images exist here (104 cats); the paper used the full test set
(1000 cats). Classes are counted from 0 in the code and JSON (cat = 3, dog = 5); the paper counts
from 1 (cat = 4, dog = 6). See docs/math_paper.md.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .. import data
from ..paper import CWL2, FGSM, IFGSM
from . import Context, register
from .common import (
    batch_size_for,
    chunks,
    fgsm_at,
    fgsm_direction,
    predict,
    probabilities,
    zoo_model,
)
from .plotting import GridCell, grouped_bars, image_grid, line_panels

MODEL = "cifar10-resnet56"
CAT, DOG = 3, 5
ALPHA = 0.1                      # IFGSM clip radius of the paper (Figs 1-3)
FIG2_EPS = [round(0.005 * i, 4) for i in range(21)]           # 0 .. 0.1
FIG3_EPS = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1]
CW_PAPER = {"c": 10.0, "kappa": 0.0, "steps": 10, "lr": 0.01}


def _setup(ctx: Context):
    model = zoo_model(MODEL, ctx.device)
    x, y = data.load("cifar10", "test", root=ctx.data_root)
    return model, x, y


def _cats(ctx: Context, x: torch.Tensor, y: torch.Tensor, default_n: int):
    """The cat test images: all of them when -n >= their number, else a seeded choice of n."""
    idx = torch.nonzero(y == CAT).flatten()
    n = min(ctx.n_or(default_n), len(idx))
    if n < len(idx):
        g = torch.Generator().manual_seed(ctx.seed)
        idx = idx[torch.randperm(len(idx), generator=g)[:n]].sort().values
    return x[idx], y[idx], idx


def _per_image(counters: dict, n: int) -> dict:
    return {k: v / max(n, 1) for k, v in counters.items()}


# ------------------------------------------------------------------------------------------ Figure 2
@register("math-fig2", "seed 004 Fig 2: ResNet56 accuracy under FGSM vs eps in [0, 0.1] (a) and under "
          "IFGSM (step 0.02, alpha 0.1) vs iterations 1..20 (b)", default_n=100)
def fig2(ctx: Context) -> dict:
    model, _x_all, y_all = _setup(ctx)
    n = min(ctx.n_or(100), len(y_all))
    x, y = data.load("cifar10", "test", n=n, seed=ctx.seed, root=ctx.data_root)
    ctx.log(f"math-fig2: ResNet56, {n} CIFAR-10 test images (seeded choice among the {len(y_all)} available)")
    iters, step_b = 20, 0.02
    correct_a = np.zeros(len(FIG2_EPS))
    correct_b = np.zeros(iters + 1)
    work = {"gradients": 0, "forwards": 0}
    t0 = time.perf_counter()
    bs = batch_size_for(ctx.device)
    for s in ctx.tqdm(list(chunks(n, bs)), desc="math-fig2 batches"):
        xb, yb = x[s].to(ctx.device), y[s].to(ctx.device)
        # (a) one FGSM call gives the direction; clamp(x + eps d) is FGSM(eps) for every eps on the grid
        d, res = fgsm_direction(model, xb, yb, eps_max=max(FIG2_EPS))
        work["gradients"] += res.counters.gradients
        for i, e in enumerate(FIG2_EPS):
            correct_a[i] += int((predict(model, fgsm_at(xb, d, e)) == yb).sum())
        # (b) one IFGSM run of 20 iterations, accuracy recorded after every iteration
        correct_b[0] += int((predict(model, xb) == yb).sum())

        def record(m: int, xa: torch.Tensor, yb=yb) -> None:
            correct_b[m] += int((predict(model, xa) == yb).sum())

        res_b = IFGSM(model, step=step_b, steps=iters, eps=ALPHA, callback=record)(xb, yb)
        work["gradients"] += res_b.counters.gradients
    seconds = time.perf_counter() - t0
    acc_a, acc_b = (correct_a / n).tolist(), (correct_b / n).tolist()
    png = line_panels(ctx.png("math_fig2.png"), [
        {"x": FIG2_EPS, "y": acc_a, "xlabel": "attack strength eps", "ylabel": "accuracy",
             "title": "(a) FGSM, one step", "ylim": (0, 1)},
        {"x": list(range(iters + 1)), "y": acc_b, "xlabel": "iterations", "ylabel": "accuracy",
             "title": f"(b) IFGSM, eps = {step_b}, alpha = {ALPHA}", "ylim": (0, 1)},
    ], suptitle=f"ResNet56, {n} of the first 1017 CIFAR-10 test images")
    out = {
        "model": MODEL, "n_images": n, "clean_accuracy": acc_a[0],
        "panel_a": {"attack": "FGSM (untargeted, clipped to [0,1])", "eps": FIG2_EPS, "accuracy": acc_a,
                    "monotone_nonincreasing": bool(np.all(np.diff(acc_a) <= 0))},
        "panel_b": {"attack": f"IFGSM step {step_b}, clip radius alpha {ALPHA}", "iterations": list(range(iters + 1)),
                    "accuracy": acc_b, "monotone_nonincreasing": bool(np.all(np.diff(acc_b) <= 0))},
        "gradients_per_image": work["gradients"] / n, "seconds": seconds, "seconds_per_image": seconds / n,
        "png": str(png),
    }
    ctx.log(f"  clean accuracy {acc_a[0]:.3f}; FGSM eps 0.02 -> {acc_a[4]:.3f}, 0.05 -> {acc_a[10]:.3f}, "
            f"0.1 -> {acc_a[20]:.3f}; IFGSM 1 it. -> {acc_b[1]:.3f}, 10 it. -> {acc_b[10]:.3f}, "
            f"20 it. -> {acc_b[20]:.3f}")
    return out


# ------------------------------------------------------------------------------------------ Figure 3
@register("math-fig3", "seed 004 Fig 3: targeted IFGSM cat -> dog on the cat test images: success vs eps "
          "with 10 iterations (a) and vs iterations at eps 0.02 (b), alpha 0.1", default_n=30,
          n_means="cat images (104 available)")
def fig3(ctx: Context) -> dict:
    model, x_all, y_all = _setup(ctx)
    x, y, idx = _cats(ctx, x_all, y_all, 30)
    n = len(y)
    ctx.log(f"math-fig3: ResNet56, {n} cat images (class 3, paper's 4) of the first 1017 CIFAR-10 test images, "
            f"target dog (class 5, paper's 6)")
    pred0 = predict(model, x.to(ctx.device)).cpu()
    iters_a, iters_b, step_b = 10, 20, 0.02
    success_a = np.zeros(len(FIG3_EPS))
    success_b = np.zeros(iters_b + 1)
    grads = 0
    t0 = time.perf_counter()
    bs = batch_size_for(ctx.device)
    jobs = [(i, s) for i in range(len(FIG3_EPS)) for s in chunks(n, bs)]
    for i, s in ctx.tqdm(jobs, desc="math-fig3 (a) eps x batches"):
        xb, yb = x[s].to(ctx.device), y[s].to(ctx.device)
        tb = torch.full_like(yb, DOG)
        res = IFGSM(model, step=FIG3_EPS[i], steps=iters_a, eps=ALPHA, targeted=True)(xb, yb, tb)
        success_a[i] += int(res.success.sum())
        grads += res.counters.gradients
    for s in ctx.tqdm(list(chunks(n, bs)), desc="math-fig3 (b) batches"):
        xb, yb = x[s].to(ctx.device), y[s].to(ctx.device)
        tb = torch.full_like(yb, DOG)
        success_b[0] += int((predict(model, xb) == DOG).sum())

        def record(m: int, xa: torch.Tensor) -> None:
            success_b[m] += int((predict(model, xa) == DOG).sum())

        res = IFGSM(model, step=step_b, steps=iters_b, eps=ALPHA, targeted=True, callback=record)(xb, yb, tb)
        grads += res.counters.gradients
    seconds = time.perf_counter() - t0
    rate_a, rate_b = (success_a / n).tolist(), (success_b / n).tolist()
    peak = int(np.argmax(rate_a))
    png = line_panels(ctx.png("math_fig3.png"), [
        {"x": FIG3_EPS, "y": rate_a, "xlabel": "attack strength eps (step size)", "ylabel": "success rate (cat -> dog)",
             "title": f"(a) targeted IFGSM, {iters_a} iterations, alpha {ALPHA}", "ylim": (0, 1)},
        {"x": list(range(iters_b + 1)), "y": rate_b, "xlabel": "iterations", "ylabel": "success rate (cat -> dog)",
             "title": f"(b) targeted IFGSM, eps {step_b}, alpha {ALPHA}", "ylim": (0, 1)},
    ], suptitle=f"ResNet56, {n} CIFAR-10 cat test images -> dog")
    out = {
        "model": MODEL, "n_images": n, "image_indices": idx.tolist(),
        "classes_counted_from_0": {"cat": CAT, "dog": DOG},
        "initially_predicted_cat": int((pred0 == CAT).sum()), "initially_predicted_dog": int((pred0 == DOG).sum()),
        "success_means": "share of the chosen cat images that ResNet56 classifies as dog after the attack "
                         "(all cat images, including the few misclassified ones, as the paper's 1000)",
        "panel_a": {"iterations": iters_a, "alpha": ALPHA, "eps": FIG3_EPS, "success_rate": rate_a,
                    "peak_eps": FIG3_EPS[peak], "peak_success_rate": rate_a[peak]},
        "panel_b": {"eps": step_b, "alpha": ALPHA, "iterations": list(range(iters_b + 1)), "success_rate": rate_b,
                    "monotone_nondecreasing": bool(np.all(np.diff(rate_b) >= 0))},
        "gradients_per_image": grads / n, "seconds": seconds, "png": str(png),
    }
    ctx.log("  success vs eps (10 it.): " + ", ".join(f"{e:g}:{r:.2f}" for e, r in zip(FIG3_EPS, rate_a))
            + f"; peak at eps {FIG3_EPS[peak]:g}")
    ctx.log(f"  success vs iterations (eps 0.02): 1 it. {rate_b[1]:.2f}, 5 it. {rate_b[5]:.2f}, "
            f"10 it. {rate_b[10]:.2f}, 20 it. {rate_b[20]:.2f}")
    return out


# ------------------------------------------------------------------------------------------ Figure 4
@register("math-fig4", "seed 004 Fig 4: CW-L2 (c 10, kappa 0, 10 Adam steps, lr 0.01) cat -> dog: mean class "
          "probabilities before and after, and how many cats became dogs", default_n=104,
          n_means="cat images (104 available)")
def fig4(ctx: Context) -> dict:
    model, x_all, y_all = _setup(ctx)
    x, y, idx = _cats(ctx, x_all, y_all, 104)
    n = len(y)
    ctx.log(f"math-fig4: ResNet56, CW-L2 cat -> dog on {n} cat images of the first 1017 CIFAR-10 test images")
    names = data.class_names("cifar10")
    before, after, x_adv, grads = [], [], [], 0
    t0 = time.perf_counter()
    for s in ctx.tqdm(list(chunks(n, batch_size_for(ctx.device))), desc="math-fig4 batches"):
        xb, yb = x[s].to(ctx.device), y[s].to(ctx.device)
        res = CWL2(model, targeted=True, **CW_PAPER)(xb, yb, torch.full_like(yb, DOG))
        before.append(probabilities(model, xb).cpu())
        after.append(probabilities(model, res.x_adv).cpu())
        x_adv.append(res.x_adv.cpu())
        grads += res.counters.gradients
    seconds = time.perf_counter() - t0
    p0, p1 = torch.cat(before).double(), torch.cat(after).double()
    x_adv = torch.cat(x_adv)
    pred0, pred1 = p0.argmax(1), p1.argmax(1)
    dist = (x_adv - x).flatten(1)
    m0, m1 = p0.mean(0).tolist(), p1.mean(0).tolist()
    labels = [f"{i} ({i + 1}) {c}" for i, c in enumerate(names)]
    png = grouped_bars(ctx.png("math_fig4.png"), labels, {"before attack": m0, "after CW-L2": m1},
                       ylabel="mean probability", title=f"ResNet56 on {n} CIFAR-10 cat images, CW-L2 toward dog: "
                       f"{int((pred1 == DOG).sum())} became dog\nclass index from 0 (in brackets: the paper's, from 1)")
    third = [k for k in range(len(names)) if k not in (CAT, DOG)]
    out = {
        "model": MODEL, "n_images": n, "image_indices": idx.tolist(), "cw": CW_PAPER | {"scale": 1.0},
        "classes": list(names), "classes_counted_from_0": {"cat": CAT, "dog": DOG},
        "mean_probability_before": m0, "mean_probability_after": m1,
        "predicted_cat_before": int((pred0 == CAT).sum()), "predicted_dog_before": int((pred0 == DOG).sum()),
        "predicted_cat_after": int((pred1 == CAT).sum()), "reached_dog": int((pred1 == DOG).sum()),
        "reached_dog_rate": float((pred1 == DOG).double().mean()),
        "paper": {"reached_dog": 750, "of": 1000, "class_9_of_paper_before": 0.0048, "class_9_of_paper_after": 0.004},
        "ratio_dog_over_cat_increased": int(((p1[:, DOG] / p1[:, CAT]) > (p0[:, DOG] / p0[:, CAT])).sum()),
        "third_classes_mean_probability_down": [names[k] for k in third if m1[k] < m0[k]],
        "third_classes_mean_probability_up": [names[k] for k in third if m1[k] >= m0[k]],
        "l2": {"mean": float(dist.norm(dim=1).mean()), "median": float(dist.norm(dim=1).median())},
        "linf": {"mean": float(dist.abs().amax(1).mean())},
        "gradients_per_image": grads / n, "seconds": seconds, "png": str(png),
    }
    ctx.log(f"  mean P(cat) {m0[CAT]:.3f} -> {m1[CAT]:.3f}, mean P(dog) {m0[DOG]:.3f} -> {m1[DOG]:.3f}; "
            f"{out['reached_dog']} of {n} cats classified as dog after CW-L2 (paper: 750 of 1000); "
            f"mean L2 {out['l2']['mean']:.3f}")
    return out


# ------------------------------------------------------------------------------------------ Figure 1
FIG1_CLASSES = (7, 1, 0)        # horse, automobile, airplane, as in the paper
FIG1_EPS = (0.02, 0.08)


@register("math-fig1", "seed 004 Fig 1: image rows original / FGSM / IFGSM (10 it., alpha 0.1) / CW-L2 "
          "(eq. 2.10 scaling) at eps 0.02 and 0.08", default_n=3, n_means="images (columns per panel)")
def fig1(ctx: Context) -> dict:
    model, x_all, y_all = _setup(ctx)
    names = data.class_names("cifar10")
    n = max(1, ctx.n_or(3))
    g = torch.Generator().manual_seed(ctx.seed)
    order = torch.randperm(len(y_all), generator=g)
    classes = list(FIG1_CLASSES) + [c for c in range(10) if c not in FIG1_CLASSES]
    chosen: list[int] = []
    for k in range(n):
        cls = classes[k % len(classes)]
        for i in order[y_all[order] == cls].tolist():     # seeded order; first one classified correctly
            if i not in chosen and int(predict(model, x_all[i:i + 1].to(ctx.device))) == cls:
                chosen.append(i)
                break
    idx = torch.tensor(chosen)
    x, y = x_all[idx].to(ctx.device), y_all[idx].to(ctx.device)
    ctx.log(f"math-fig1: ResNet56, {n} correctly classified CIFAR-10 test images {idx.tolist()} "
            f"({', '.join(names[int(c)] for c in y)})")
    with torch.no_grad():
        logits = model(x)
    # CW-L2 is targeted (eq. 2.9); the paper does not say toward which class: we take the runner-up class
    target = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    rows = {"original": [], "FGSM": [], "IFGSM": [], "CW-L2": []}
    titles = {k: [] for k in rows}
    record = []
    for eps in FIG1_EPS:
        attacks = {
            "FGSM": FGSM(model, eps=eps)(x, y),
            "IFGSM": IFGSM(model, step=eps, steps=10, eps=ALPHA)(x, y),
            "CW-L2": CWL2(model, targeted=True, scale=eps, **CW_PAPER)(x, y, target),
        }
        cw_full = CWL2(model, targeted=True, scale=1.0, **CW_PAPER)(x, y, target)
        preds = {k: predict(model, r.x_adv) for k, r in attacks.items()}
        for j in range(n):
            rows["original"].append(x[j])
            titles["original"].append(f"eps {eps}\n{names[int(y[j])]}")
            for k, r in attacks.items():
                rows[k].append(r.x_adv[j])
                mark = "fooled" if int(preds[k][j]) != int(y[j]) else "not fooled"
                titles[k].append(f"{names[int(preds[k][j])]} ({mark})\nL2 {float(r.l2[j]):.2f} Linf {float(r.linf[j]):.3f}")
        record.append({
            "eps": eps,
            **{k: {"predicted": [names[int(p)] for p in preds[k]], "fooled": [bool(a) for a in (preds[k] != y)],
                   "l2": r.l2.tolist(), "linf": r.linf.tolist()} for k, r in attacks.items()},
            "CW-L2_target": [names[int(t)] for t in target],
            "CW-L2_unscaled_reached_target": [bool(a) for a in cw_full.success],
            "CW-L2_unscaled_l2": cw_full.l2.tolist(),
        })
    cells = [[GridCell(t.permute(1, 2, 0).cpu().numpy(), title=title) for t, title in zip(rows[k], titles[k])]
             for k in rows]
    png = image_grid(ctx.png("math_fig1.png"), cells, list(rows), cell_size=1.8,
                     suptitle="ResNet56: left panel eps 0.02, right panel eps 0.08 "
                              "(IFGSM 10 iterations, alpha 0.1; CW-L2 c 10, 10 Adam steps, x + eps (x_cw - x))")
    for r in record:
        ctx.log(f"  eps {r['eps']}: fooled FGSM {sum(r['FGSM']['fooled'])}/{n}, IFGSM {sum(r['IFGSM']['fooled'])}/{n}, "
                f"CW-L2 (scaled) {sum(r['CW-L2']['fooled'])}/{n}; unscaled CW-L2 reached its target "
                f"{sum(r['CW-L2_unscaled_reached_target'])}/{n}")
    return {"model": MODEL, "n_images": n, "image_indices": idx.tolist(),
            "true_classes": [names[int(c)] for c in y], "panels": record, "png": str(png)}
