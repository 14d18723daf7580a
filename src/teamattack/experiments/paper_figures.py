"""E3-E5: the papers' figures (seed 001 Figs 1-10, seed 000 Figs 1, 2, 5), each one command.

    teamattack reproduce e3-taylor --dataset mnist      Fig 1 (softmax output and its gradient along a
                                                        line, beside the second-order Taylor model) and
                                                        Fig 3 / 000 Figs 1-2 (loss and dual value vs C, T1)
    teamattack reproduce e4-grids --dataset mnist       Figs 2, 4-9: one image per class attacked toward
                                                        every class, one grid per norm, perturbation row
    teamattack reproduce e5-synthetic --dataset mnist   Fig 10 / 000 Fig 5: all-black and all-white images
                                                        to every class: TEAM, Gauss-Newton, JSMA, C&W

Work is saved per unit in OUT/NAME-DATASET.partial.jsonl (a rerun resumes). TEAM's mode is passed
explicitly everywhere and written into the JSON.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bench import harness
from ..bench import records as R
from ..metrics import distances
from . import Context, register
from .paper_protocol import DATASETS, Setup, header, resume_file, setup, stem, write_markdown
from .plotting import GridCell, image_grid, line_panels

LINE_LENGTH = {"digits": 2.0, "mnist": 3.0, "cifar10": 1.0}   # Fig 1: t in [0, this] (L2 units)
C_GRID = [round(0.1 * i, 2) for i in range(31)]                # Fig 3: C in [0, 3] (seed 001 Sec. III)
GRID_MODES = {"l0": "iterated", "l2": "min-norm", "linf": "min-norm"}  # e4 / e5: TEAM's mode per norm


def _np_image(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().permute(1, 2, 0).numpy()


def _rounded(t: torch.Tensor) -> list:
    return np.round(t.detach().cpu().double().numpy(), 5).tolist()


# ------------------------------------------------------------------------------------------ E3, Fig 1
def line_taylor(model: nn.Module, x: torch.Tensor, cls: int, ts: torch.Tensor) -> dict:
    """S_cls along the line x + t v (v: the unit descent direction of S_cls at x) beside its
    second-order Taylor model f0 + t f1 + t^2 f2 / 2; f1 = g.v, f2 = v.H.v with the exact Hessian
    (double back-propagation), in float64. Also the derivatives along the line of both."""
    m = copy.deepcopy(model).double().eval()
    x = x.detach().double().unsqueeze(0)

    def f(z):
        return m(z).softmax(1)[:, cls]

    x0 = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(f(x0).sum(), x0, create_graph=True)
    v = (-g / g.norm()).detach()
    gv = (g * v).sum()
    hv, = torch.autograd.grad(gv, x0)
    f0, f1, f2 = float(f(x).item()), float(gv.item()), float((hv * v).sum().item())
    ts = ts.double()
    pts = (x + ts.view(-1, *[1] * (x.dim() - 1)) * v).requires_grad_(True)
    vals = f(pts)
    grads, = torch.autograd.grad(vals.sum(), pts)
    along = (grads * v).flatten(1).sum(1)
    taylor = f0 + ts * f1 + 0.5 * ts ** 2 * f2
    return {"t": ts.tolist(), "network": vals.detach().tolist(), "taylor": taylor.tolist(),
            "network_derivative": along.tolist(), "taylor_derivative": (f1 + ts * f2).tolist(),
            "f0": f0, "g_dot_v": f1, "vHv": f2}


def taylor_error_order(model: nn.Module, x: torch.Tensor, cls: int, t0: float = 1e-3, halvings: int = 4) -> dict:
    """|network - Taylor model| at t0 * 2^-k, and the fitted order p of error ~ t^p (3 for a second-order model)."""
    ts = torch.tensor([t0 * 2.0 ** -k for k in range(halvings + 1)], dtype=torch.float64)
    r = line_taylor(model, x, cls, ts)
    err = [abs(a - b) for a, b in zip(r["network"], r["taylor"])]
    lt = np.log(np.asarray(ts))
    le = np.log(np.maximum(np.asarray(err), 1e-300))
    slope = float(np.polyfit(lt, le, 1)[0])
    return {"t": ts.tolist(), "error": err, "order": slope}


def _fig1(ctx: Context, s: Setup, k: int) -> dict:
    T = LINE_LENGTH[s.dataset]
    ts = torch.linspace(0, T, 61)
    panels, lines = [], []
    for i in range(k):
        cls = int(s.y[i])
        r = line_taylor(s.model, s.x[i], cls, ts)
        r["order"] = taylor_error_order(s.model, s.x[i], cls)
        r.update(image=s.images[i], cls=cls)
        lines.append(r)
        panels.append({"x": r["t"], "ys": {"network": r["network"], "Taylor (2nd order)": r["taylor"]},
                       "xlabel": "t (L2 distance along v)", "ylabel": f"softmax output of class {cls}",
                       "title": f"(a) test image {s.images[i]}", "marker": ""})
        panels.append({"x": r["t"], "ys": {"network": r["network_derivative"], "Taylor (2nd order)": r["taylor_derivative"]},
                       "xlabel": "t", "ylabel": "derivative along v", "title": "(b) its gradient along the line",
                       "marker": ""})
    png = line_panels(ctx.png(f"{stem('e3-taylor', s.dataset)}-fig1.png"), panels[:4] if k > 1 else panels,
                      suptitle=f"{s.model_name}: softmax output of the true class along x + t v "
                               "(v = unit descent direction) and its second-order Taylor model (exact Hessian)")
    return {"lines": lines, "png": str(png),
            "note": "the line is not clipped to [0, 1]; f2 = v.H.v by double back-propagation (exact), float64"}


# ------------------------------------------------------------------------------------------ E3, Fig 3
def _fig3(ctx: Context, s: Setup, side, batch_size: int = 100) -> dict:
    from ..attacks import TEAM
    from ..curvature import expand
    from ..objectives import get_objective

    obj = get_objective("T1")
    n = len(s.y)
    per_c: dict[float, dict] = {}
    expansions: dict = {}
    batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    todo = [(c, b) for c in C_GRID for b in range(len(batches))]
    bar = ctx.tqdm(total=len(todo), desc="e3 Fig 3: C values x batches")
    for c, b in todo:
        key = f"fig3|C={c}|b={b}"
        val = side.get(key)
        if val is None:
            lo, hi = batches[b]
            xb, yb = s.x[lo:hi], s.y[lo:hi]
            t0 = time.perf_counter()
            if b not in expansions:  # the expansion at x does not depend on C: once per batch
                expansions[b] = expand(s.model, obj, xb, yb, source="exact")
            e = expansions[b]
            if c == 0:
                xa = xb
            else:
                xa = TEAM(s.model, norm="l2", objective="T1", mode="paper", eps=c, hessian="exact")(xb, yb).x_adv
            with torch.no_grad():
                z = s.model(xa)
            d = (xa - xb).reshape(len(xb), -1).to(e.g.dtype)
            val = {"ce": F.cross_entropy(z, yb, reduction="none").tolist(),
                   "z_y": z.gather(1, yb[:, None]).squeeze(1).tolist(),
                   "model": e.phi(d).detach().tolist(),
                   "fooled": (z.argmax(1) != yb).tolist(),
                   "l2": (xa - xb).flatten(1).norm(dim=1).tolist(), "seconds": time.perf_counter() - t0}
            side.put(key, val)
        acc = per_c.setdefault(c, {k: [] for k in ("ce", "z_y", "model", "fooled", "l2")} | {"seconds": 0.0})
        for k in ("ce", "z_y", "model", "fooled", "l2"):
            acc[k] += val[k]
        acc["seconds"] += val["seconds"]
        bar.update(1)
    bar.close()
    mean = lambda v: float(np.mean(v)) if len(v) else math.nan
    curve = [{"C": c, "cross_entropy_mean": mean(v["ce"]), "cross_entropy_change": mean(v["ce"]) - mean(per_c[0.0]["ce"]),
              "T1_network_mean": mean(v["z_y"]), "T1_model_mean": mean(v["model"]),
              "misclassified": mean([float(f) for f in v["fooled"]]), "l2_mean": mean(v["l2"]),
              "seconds": v["seconds"]} for c, v in sorted(per_c.items())]
    cs = [r["C"] for r in curve]
    png = line_panels(ctx.png(f"{stem('e3-taylor', s.dataset)}-fig3.png"), [
        {"x": cs, "y": [r["cross_entropy_change"] for r in curve], "xlabel": "budget C (L2)",
         "ylabel": "change of cross-entropy loss", "title": "(a) 001 Fig 3 / 000 Fig 2: loss vs C, T1"},
        {"x": cs, "ys": {"network Z_y": [r["T1_network_mean"] for r in curve],
                         "dual value = model phi(d*)": [r["T1_model_mean"] for r in curve]},
         "xlabel": "budget C (L2)", "ylabel": "T1 = logit of the true class", "title": "(b) 000 Fig 1: network and dual"},
        {"x": cs, "y": [r["misclassified"] for r in curve], "xlabel": "budget C (L2)",
         "ylabel": "share misclassified", "title": "(c) success vs C", "ylim": (0, 1)},
    ], suptitle=f"{s.model_name}, {n} images: TEAM paper mode (one expansion, exact Hessian) at fixed C, objective T1")
    return {"curve": curve, "png": str(png), "n": n,
            "note": "dual value: the optimal value of the budget subproblem, phi(d*(C)) (the L2 trust-region "
                    "dual has no gap; with the [0, 1] box it is the value of the box-constrained solution)"}


@register("e3-taylor", "seed 001 Fig 1 (softmax output and gradient along a line vs the 2nd-order Taylor model, "
          "exact Hessian) and Fig 3 / 000 Figs 1-2 (cross-entropy and dual value vs the budget C, T1)",
          default_n=100, datasets=DATASETS)
def e3(ctx: Context) -> dict:
    s = setup(ctx, 100)
    ctx.log(f"e3-taylor: {s.dataset}/{s.model_name}, {len(s.images)} images")
    side = resume_file(ctx, "e3-taylor", s.dataset, header(s, seed=ctx.seed, c_grid=C_GRID))
    fig1 = _fig1(ctx, s, min(2, len(s.images)))
    fig3 = _fig3(ctx, s, side)
    orders = [ln["order"]["order"] for ln in fig1["lines"]]
    md = [f"## E3: Taylor model and budget (seed 001 Figs 1, 3; seed 000 Figs 1-2), {s.dataset} / {s.model_name}", "",
          f"Fig 1: ![Fig 1]({Path(fig1['png']).name}). Error of the Taylor model near the expansion point shrinks like t^p, "
          f"fitted p = {', '.join(f'{o:.2f}' for o in orders)} (3 expected).", "",
          f"Fig 3 ({fig3['n']} images): ![Fig 3]({Path(fig3['png']).name})", "",
          "| C | CE change | T1 network | T1 model (dual) | misclassified | mean L2 |", "|---|---|---|---|---|---|"]
    md += [f"| {r['C']:g} | {r['cross_entropy_change']:.4g} | {r['T1_network_mean']:.4g} | {r['T1_model_mean']:.4g} | "
           f"{100 * r['misclassified']:.1f}% | {r['l2_mean']:.4g} |" for r in fig3["curve"]]
    path = write_markdown(ctx, "e3-taylor", s.dataset, "\n".join(md))
    return {**s.meta(), "seed": ctx.seed, "markdown": path, "fig1": fig1, "fig3": fig3,
            "pngs": [fig1["png"], fig3["png"]]}


# ------------------------------------------------------------------------------------------ E4
def one_per_class(s: Setup, k: int, seed: int) -> list[int]:
    """Positions (into s.x) of one image for each of the classes 0..k-1, seeded."""
    g = torch.Generator().manual_seed(harness.derive_seed(seed, "one-per-class"))
    out = []
    for c in range(k):
        pos = torch.nonzero(s.y.cpu() == c).flatten()
        if len(pos):
            out.append(int(pos[torch.randint(len(pos), (1,), generator=g)]))
    return out


def _targeted_unit(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor) -> dict:
    """One attack call toward `targets`; per example success, class reached, distances and x_adv."""
    to_attack = targets != y
    arr: dict = {"success": [], "pred": [], "x_adv": [], **{k: [] for k in R.DIST_KEYS}}
    xa = x.clone()
    counters = {"forwards": 0, "gradients": 0, "hvps": 0, "seconds": 0.0}
    if to_attack.any():
        idx = to_attack.nonzero().squeeze(1)
        res = attack(x[idx], y[idx], targets[idx])
        xa[idx] = res.x_adv
        c = res.counters
        counters = {"forwards": int(c.forwards), "gradients": int(c.gradients), "hvps": int(c.hvps),
                    "seconds": float(c.seconds)}
    with torch.no_grad():
        pred = model(xa).argmax(1)
    d = distances(x, xa)
    arr["success"] = (pred == targets).tolist()
    arr["pred"] = pred.tolist()
    for k in R.DIST_KEYS:
        arr[k] = [float(v) for v in d[k].double().tolist()]
    arr["x_adv"] = _rounded(xa)
    arr.update(counters, units=1)
    return arr


def _summary(arrs: list[dict], name: str, norm: str, case: str, extra: dict) -> dict:
    joined = R.concat([{k: v for k, v in a.items() if k not in ("pred", "x_adv")} for a in arrs])
    return R.record_from_arrays(joined, name, "teamattack" if name.startswith("team") or name == "gauss-newton"
                                else "peer", norm, True, case, extra=extra)


@register("e4-grids", "seed 001 Figs 2, 4-9: one test image per class attacked toward every class with TEAM "
          "L0 / L2 / Linf, one grid per norm, each cell labelled with the class reached and its distance, "
          "plus a perturbation row", default_n=10, n_means="classes (rows; one image each)", datasets=DATASETS)
def e4(ctx: Context) -> dict:
    from ..attacks import TEAM

    s = setup(ctx, None, all_images=True)
    k = min(ctx.n_or(10), s.num_classes)
    pos = one_per_class(s, k, ctx.seed)
    x, y = s.x[pos], s.y[pos]
    m = s.num_classes
    images = [s.images[p] for p in pos]
    ctx.log(f"e4-grids: {s.dataset}/{s.model_name}, {len(pos)} images x {m} targets x 3 norms")
    # units are keyed by image: a run with fewer rows reuses those of a larger one (same seed, same order)
    side = resume_file(ctx, "e4-grids", s.dataset, {**header(s, seed=ctx.seed), "modes": GRID_MODES})
    units: dict[str, list[dict]] = {}
    todo = [(norm, i) for norm in ("l0", "l2", "linf") for i in range(len(pos))]
    bar = ctx.tqdm(total=len(todo), desc="e4 (norm, image)")
    for norm, i in todo:
        key = f"{norm}|mode={GRID_MODES[norm]}|image={images[i]}"
        val = side.get(key)
        if val is None:
            harness.seed_everything(harness.derive_seed(ctx.seed, "e4", norm, images[i]))
            attack = TEAM(s.model, norm=norm, targeted=True, mode=GRID_MODES[norm])
            xi = x[i:i + 1].repeat(m, *[1] * (x.dim() - 1))
            val = _targeted_unit(s.model, attack, xi, y[i:i + 1].repeat(m), torch.arange(m, device=x.device))
            side.put(key, val)
        units.setdefault(norm, []).append(val)
        bar.update(1)
    bar.close()
    pngs, runs = [], []
    for norm, vals in units.items():
        cells, labels = [], []
        for i, v in enumerate(vals):
            row = []
            for t in range(m):
                if t == int(y[i]):
                    row.append(GridCell(_np_image(x[i]), true=int(y[i]), title=f"original {int(y[i])}"))
                else:
                    adv = torch.tensor(v["x_adv"][t])
                    row.append(GridCell(_np_image(adv), true=int(y[i]), pred=v["pred"][t], success=v["success"][t],
                                        distance=v[norm][t], norm=norm))
            cells.append(row)
            labels.append(f"image {images[i]}")
        v0 = vals[0]
        cells.append([None if t == int(y[0]) else GridCell(_np_image(torch.tensor(v0["x_adv"][t]) - x[0].cpu()),
                                                           perturbation=True, distance=v0[norm][t], norm=norm,
                                                           title=f"x' - x, t={t}") for t in range(m)])
        labels.append(f"perturbation\nimage {images[0]}")
        png = image_grid(ctx.png(f"{stem('e4-grids', s.dataset)}-{norm}.png"), cells, labels,
                         suptitle=f"{s.model_name}: TEAM-{norm.upper()} (mode {GRID_MODES[norm]}) toward every class "
                                  "(columns: target; diagonal: the original)")
        pngs.append(str(png))
        arrs = []
        for i, v in enumerate(vals):  # the diagonal (target = true class) is not in the statistics
            keep = [t for t in range(m) if t != int(y[i])]
            arrs.append({**{k: [v[k][t] for t in keep] for k in ("success", *R.DIST_KEYS)},
                         **{k: v[k] for k in ("forwards", "gradients", "hvps", "seconds")}, "units": 1})
        runs.append(_summary(arrs, f"team-{norm}", norm, "every target",
                             {"team_mode": GRID_MODES[norm], "png": str(png)}))
    # seed 001 Fig 2: original, then the L2, Linf and L0 adversarial toward the seeded random target
    off = harness.random_targets(y.cpu(), m, ctx.seed)
    fig2 = []
    for i in range(len(pos)):
        t = int((int(y[i]) + int(off[i])) % m)
        row = [GridCell(_np_image(x[i]), true=int(y[i]), title=f"original {int(y[i])}")]
        for norm in ("l2", "linf", "l0"):
            v = units[norm][i]
            row.append(GridCell(_np_image(torch.tensor(v["x_adv"][t])), true=int(y[i]), pred=v["pred"][t],
                                success=v["success"][t], distance=v[norm][t], norm=norm))
        fig2.append(row)
    png2 = image_grid(ctx.png(f"{stem('e4-grids', s.dataset)}-fig2.png"), fig2, [f"image {j}" for j in images],
                      suptitle="001 Fig 2: original, TEAM L2, Linf, L0 (random target)")
    pngs.append(str(png2))
    md = [f"## E4: every target, per norm (seed 001 Figs 2, 4-9), {s.dataset} / {s.model_name}", "",
          f"Rows: one correctly classified test image per class ({', '.join(map(str, images))}); TEAM modes "
          f"{GRID_MODES}.", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in pngs] + ["", R.markdown_table(runs)]
    path = write_markdown(ctx, "e4-grids", s.dataset, "\n".join(md))
    per_image = {norm: [{"image": images[i], "true": int(y[i]), "pred": v["pred"], "success": v["success"],
                         "l0": v["l0"], "l2": v["l2"], "linf": v["linf"], "psnr": v["psnr"]}
                        for i, v in enumerate(vals)] for norm, vals in units.items()}
    meta = s.meta()
    meta.update(n=len(pos), images=images)
    return {**meta, "seed": ctx.seed, "markdown": path, "team_modes": GRID_MODES, "runs": runs,
            "per_image": per_image, "pngs": pngs}


# ------------------------------------------------------------------------------------------ E5
def synthetic_attacks(model: nn.Module) -> list[tuple[str, str, object]]:
    """(name, norm, attack) of Fig 10: TEAM-L2 (min-norm walk) and Gauss-Newton, beside JSMA and C&W."""
    from ..attacks import TEAM
    from ..attacks.gauss_newton import GaussNewton
    from ..baselines import make

    out = [("team-l2", "l2", TEAM(model, norm="l2", targeted=True, mode="min-norm")),
           ("gauss-newton", "l2", GaussNewton(model, targeted=True))]
    for preset, name, norm in (("jsma-paper", "jsma-paper", "l0"), ("cw-9x100", "cw-9x100", "l2")):
        try:
            out.append((name, norm, make(preset, model, targeted=True)))
        except Exception as err:  # noqa: BLE001 - a missing peer library leaves its rows out
            out.append((name, norm, err))
    return out


@register("e5-synthetic", "seed 001 Fig 10 / 000 Fig 5: from an all-black and an all-white image to every "
          "class with TEAM-L2 and Gauss-Newton beside JSMA and C&W; the grid and the distances",
          default_n=None, n_means="unused (two synthetic images)", datasets=DATASETS)
def e5(ctx: Context) -> dict:
    from .paper_protocol import model_only

    dataset, model_name, model = model_only(ctx)
    from .. import data

    shape = tuple(data.load(dataset, "test", n=1, root=ctx.data_root)[0].shape[1:])
    starts = {"black": torch.zeros(1, *shape, device=ctx.device), "white": torch.ones(1, *shape, device=ctx.device)}
    with torch.no_grad():
        m = int(model(starts["black"]).shape[-1])
        start_class = {k: int(model(v).argmax(1)) for k, v in starts.items()}
    attacks = synthetic_attacks(model)
    side = resume_file(ctx, "e5-synthetic", dataset, {"dataset": dataset, "model": model_name,
                                                      "model_sha1": harness.model_fingerprint(model),
                                                      "attacks": [a[0] for a in attacks]})
    results, skipped, runs = {}, [], []
    bar = ctx.tqdm(total=len(attacks) * 2, desc="e5 (attack, start)")
    for name, norm, attack in attacks:
        if isinstance(attack, Exception):
            skipped.append({"attack": name, "reason": f"{type(attack).__name__}: {attack}"})
            bar.update(2)
            continue
        for sname, x0 in starts.items():
            key = f"{name}|{sname}"
            val = side.get(key)
            if val is None:
                harness.seed_everything(harness.derive_seed(ctx.seed, "e5", name, sname))
                xs = x0.repeat(m, *[1] * (x0.dim() - 1))
                ys = torch.full((m,), start_class[sname], device=ctx.device)
                val = _targeted_unit(model, attack, xs, ys, torch.arange(m, device=ctx.device))
                side.put(key, val)
            results[(name, sname)] = (norm, val)
            bar.update(1)
    bar.close()
    cells, labels = [], []
    for (name, sname), (norm, v) in results.items():
        cells.append([GridCell(_np_image(torch.tensor(v["x_adv"][t])), true=start_class[sname], pred=v["pred"][t],
                               success=v["success"][t], distance=v[norm][t], norm=norm,
                               title=None if t != start_class[sname] else f"start class {t}") for t in range(m)])
        labels.append(f"{name}\nfrom {sname}")
    png = image_grid(ctx.png(f"{stem('e5-synthetic', dataset)}.png"), cells, labels,
                     suptitle=f"{model_name}: all-black / all-white images to every class (columns: target)")
    per_attack = {}
    for (name, sname), (norm, v) in results.items():
        reached = [bool(s) for s in v["success"]]
        per_attack[f"{name}|{sname}"] = {"attack": name, "start": sname, "start_class": start_class[sname],
                                         "norm": norm, "reached": reached, "classes_reached": sum(reached),
                                         "pred": v["pred"], "l0": v["l0"], "l2": v["l2"], "linf": v["linf"],
                                         "seconds": v["seconds"], "gradients": v["gradients"]}
        runs.append(R.record_from_arrays({k: v[k] for k in v if k not in ("pred", "x_adv")}, name,
                                         "teamattack" if name in ("team-l2", "gauss-newton") else "peer", norm,
                                         True, f"from {sname}", extra={"classes_reached": sum(reached)}))
    md = [f"## E5: synthetic images (seed 001 Fig 10, seed 000 Fig 5), {dataset} / {model_name}", "",
          f"Start classes: black -> {start_class['black']}, white -> {start_class['white']} (the start's own class "
          f"needs no change). TEAM-L2 runs mode='min-norm'.", "", f"![e5]({Path(png).name})", "",
          "| attack | start | classes reached | L2 per target |", "|---|---|---|---|"]
    for r in per_attack.values():
        md.append(f"| {r['attack']} | {r['start']} | {r['classes_reached']}/{m} | "
                  + " ".join(f"{d:.2f}" if ok else "fail" for d, ok in zip(r["l2"], r["reached"])) + " |")
    md += ["", R.markdown_table(runs)]
    md += [f"- skipped {sk['attack']}: {sk['reason']}" for sk in skipped]
    path = write_markdown(ctx, "e5-synthetic", dataset, "\n".join(md))
    return {"dataset": dataset, "model": model_name, "seed": ctx.seed, "start_class": start_class,
            "team_mode": "min-norm", "markdown": path, "per_attack": per_attack, "runs": runs, "skipped": skipped,
            "png": str(png), "pngs": [str(png)]}
