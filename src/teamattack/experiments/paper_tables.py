"""E1, E2: the papers' tables (seed 001 Tables II-V, seed 000 Tables 1-4), each one command.

    teamattack reproduce e1-objectives --dataset mnist -n 300   T1..T6, paper mode and TEAM's default mode
    teamattack reproduce e2-table4 --dataset mnist -n 300       targeted TEAM L0/L2/Linf vs JSMA, C&W, FGSM
    teamattack reproduce e2-table5 --dataset mnist -n 300       untargeted T1/T4 vs DeepFool, M-DI2-FGSM, PGD

Everything runs through the benchmark harness (bench.harness.run_bench: the same seeded images for
every attack, targeted cases average / best / worst from every target, distances over successes,
work counters), resumable from OUT/NAME-DATASET.partial.jsonl. The Markdown puts the papers'
numbers (experiments.paper_numbers) beside ours; docs/paper.md explains the differences.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..bench import harness
from ..bench import records as R
from ..bench.suites import AttackSpec, peer_spec, team_spec
from . import Context, register
from . import paper_numbers as P
from .paper_protocol import DATA_NOTES, DATASETS, PSNR_NOTE, Setup, header, resume_file, setup, team_mode_default, write_markdown

PAPER = "paper"     # the papers' settings (TEAM: one expansion, the C schedule; peers: seed 001 Sec. V)
STRONG = "strong"   # TEAM's default mode; the peers' standard settings


@dataclass(frozen=True)
class Row:
    """One attack of a table: the harness spec, its settings label, and the paper row it stands for."""

    spec: AttackSpec
    settings: str
    paper_row: str
    mode: str | None = None   # TEAM's mode as built (None for peers)


def _team_mode(norm: str, targeted: bool, **kw) -> str:
    from ..attacks import TEAM

    return TEAM(nn.Linear(1, 2).eval(), norm=norm, targeted=targeted, **kw).mode


def paper_team(name: str, norm: str, paper_row: str, **kw) -> Row:
    """TEAM in the papers' mode: one expansion, the papers' C schedule (mode and search explicit)."""
    kw = {"mode": "paper", "search": "paper", **kw}
    return Row(team_spec(name, norm, **kw), PAPER, paper_row, "paper")


def default_team(name: str, norm: str, paper_row: str, targeted: bool, **kw) -> Row:
    """TEAM in its default mode (`TEAM(model, norm=...)` without a mode); where that mode does not
    take the norm (the min-norm walk has no L0), the iterated mode, explicitly."""
    try:
        mode = _team_mode(norm, targeted, **kw)
    except ValueError:
        kw = {**kw, "mode": "iterated"}
        mode = "iterated"
    return Row(team_spec(name, norm, **kw), STRONG, paper_row, mode)


def peer(preset: str, settings: str, paper_row: str, name: str | None = None, **kw) -> Row:
    return Row(peer_spec(preset, name=name, **kw), settings, paper_row)


def _keep(rows: Sequence[Row], skip: Sequence[str]) -> list[Row]:
    return [r for r in rows if r.spec.name not in set(skip)]


def run_rows(ctx: Context, name: str, s: Setup, groups: Sequence[tuple[Sequence[Row], bool]],
             batch_size: int | None = None) -> tuple[list[dict], list[dict]]:
    """Run every group (rows, targeted) through the harness with one resume file; the records
    (per-image-best rows dropped: the papers have none), each with its settings, TEAM mode and paper row.
    batch_size: images per unit (default `ctx.batch_size`, else 100; under torchrun the units are
    split over the ranks)."""
    batch_size = batch_size or ctx.batch_size or 100
    side = resume_file(ctx, name, s.dataset, header(s, seed=ctx.seed, batch_size=batch_size))
    runs, skipped = [], []
    for rows, targeted in groups:
        rows = _keep(rows, ctx.skip)
        if not rows:
            continue
        res = harness.run_bench(s.model, s.x, s.y, [r.spec for r in rows], targeted=targeted, seed=ctx.seed,
                                batch_size=batch_size, dataset=s.dataset, sidecar=side, progress=ctx.progress,
                                log=ctx.log)
        by = {r.spec.name: r for r in rows}
        for rec in res["runs"]:
            row = by.get(rec["attack"])
            if row is None:
                continue
            rec.update(settings=row.settings, paper_row=row.paper_row)
            if row.mode:
                rec["team_mode"] = row.mode
            if row.spec.settings:
                rec["attack_settings"] = {k: v for k, v in row.spec.settings.items()}
            runs.append(rec)
        skipped += res["skipped"]
    for sk in ctx.skip:
        skipped.append({"attack": sk, "reason": "left out with --skip"})
    return runs, skipped


# ------------------------------------------------------------------------------------------ Markdown
def _paper_cell(table: P.Table | None, dataset: str, row: str, case: str) -> str:
    e = (table or {}).get(dataset, {}).get((row, case)) if table else None
    if e is None:
        return "-"
    d, p, a = e
    f = lambda v: "-" if v is None else f"{v:g}"
    return f"{f(d)} / {f(p)} / {'-' if a is None else f'{100 * a:.1f}%'}"


def _ours(rec: dict, norm: str) -> str:
    st = rec.get(norm) or {}
    ps = rec.get("psnr") or {}
    f = R._fmt
    return (f"{f(st.get('mean'))} / {f(st.get('median'))} / {f(ps.get('mean'))} / {100 * rec['asr']:.1f}%")


def comparison_table(runs: Sequence[dict], dataset: str, tables: Sequence[tuple[str, P.Table]],
                     norm_of: dict[str, str] | None = None) -> str:
    """Markdown: per paper row and case, the papers' (distance / PSNR / ASR) beside ours
    (mean / median distance over successes, mean PSNR, ASR)."""
    heads = [f"{label} dist / PSNR / ASR" for label, _ in tables]
    head = ["paper row", "case", "our attack", "settings", "norm"] + heads + \
        ["ours: mean / median dist, PSNR (std.) / ASR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for rec in runs:
        row, case = rec.get("paper_row"), rec["case"]
        norm = (norm_of or {}).get(row, rec["norm"])
        cells = [row or "-", case, rec["attack"] + (f" (mode {rec['team_mode']})" if rec.get("team_mode") else ""),
                 rec.get("settings", "-"), norm]
        cells += [_paper_cell(t, dataset, row, case) for _, t in tables]
        cells.append(_ours(rec, norm))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _document(ctx: Context, name: str, s: Setup, title: str, runs: list[dict], skipped: list[dict],
              tables: Sequence[tuple[str, P.Table]], norm_of: dict[str, str] | None, notes: Sequence[str]) -> dict:
    order = {"untargeted": 0, "best": 1, "average": 2, "worst": 3}
    runs = sorted(runs, key=lambda r: order.get(r["case"], 9))  # stable: the rows' order within a case
    md = [f"## {title}", "", f"{s.dataset} / {s.model_name}, n = {len(s.images)} correctly classified test images "
          f"(seed {ctx.seed}). {DATA_NOTES[s.dataset]}.", "", f"- {PSNR_NOTE}"]
    md += [f"- {n}" for n in notes] + [""]
    md += ["### The papers beside ours", "", comparison_table(runs, s.dataset, tables, norm_of), ""]
    md += [R.markdown_table(runs, title="Every record (median / mean over successes)")]
    for sk in skipped:
        md.append(f"- skipped {sk['attack']}: {sk['reason']}")
    path = write_markdown(ctx, name, s.dataset, "\n".join(md))
    return {**s.meta(), "seed": ctx.seed, "markdown": path, "notes": list(notes), "runs": runs,
            "skipped": skipped,
            "paper": {label: {f"{r}|{c}": v for (r, c), v in t.get(s.dataset, {}).items()} for label, t in tables}}


# ------------------------------------------------------------------------------------------ E1
def e1_rows(default_mode: str) -> tuple[list[Row], list[Row]]:
    """(untargeted rows, targeted rows): T1/T4 and T2/T3/T5/T6 in the paper's mode and TEAM's default."""
    untargeted = [paper_team(f"team-{t}-paper", "l2", t, objective=t) for t in ("T1", "T4")]
    targeted = [paper_team(f"team-{t}-paper", "l2", t, objective=t) for t in ("T2", "T3", "T5", "T6")]
    if default_mode == "min-norm":  # the walk works on the margin; the objective is not used: one row
        untargeted.append(default_team("team-default", "l2", "T1", False))
        targeted.append(default_team("team-default", "l2", "T2", True))
    else:
        untargeted += [default_team(f"team-{t}-default", "l2", t, False, objective=t) for t in ("T1", "T4")]
        targeted += [default_team(f"team-{t}-default", "l2", t, True, objective=t) for t in ("T2", "T3", "T5", "T6")]
    return untargeted, targeted


@register("e1-objectives", "seed 001 Tables II-III / 000 Tables 1-2: TEAM-L2 with T1, T4 (untargeted) and "
          "T2, T3, T5, T6 (targeted: best / average / worst), paper mode beside TEAM's default mode",
          default_n=300, datasets=DATASETS, shards=True)
def e1(ctx: Context) -> dict:
    s = setup(ctx, 300)
    mode = team_mode_default()
    untargeted, targeted = e1_rows(mode)
    ctx.log(f"e1-objectives: {s.dataset}/{s.model_name}, {len(s.images)} images; TEAM's default mode: {mode}")
    runs, skipped = run_rows(ctx, "e1-objectives", s, [(untargeted, False), (targeted, True)])
    notes = [f"paper mode: one expansion, the papers' C schedule (0.5, 0.6, ...; mode='paper', search='paper'); "
             f"default mode: TEAM(model, norm='l2') without a mode, which ran mode='{mode}'"
             + (" (the margin walk: the objective is not used, one row stands for all)" if mode == "min-norm" else ""),
             "targeted: every target per image; average = the seeded random target, best / worst = the target "
             "with the least / most L2 (worst fails if any target fails)"]
    out = _document(ctx, "e1-objectives", s, "E1: TEAM's objectives (seed 001 Tables II-III, seed 000 Tables 1-2)",
                    runs, skipped, [("001", {d: {**P.OBJ_UNTARGETED[d], **P.OBJ_TARGETED_001[d]} for d in P.OBJ_UNTARGETED}),
                                    ("000", {d: {**P.OBJ_UNTARGETED[d], **P.OBJ_TARGETED_000[d]} for d in P.OBJ_UNTARGETED})],
                    {r: "l2" for r in ("T1", "T2", "T3", "T4", "T5", "T6")}, notes)
    out["team_default_mode"] = mode
    return out


# ------------------------------------------------------------------------------------------ E2
def table4_rows() -> list[Row]:
    """Seed 001 Table IV: TEAM L0 / L2 / Linf in the paper's mode and the default, the peers with the
    papers' settings and with the standard ones."""
    return [
        paper_team("team-l0-paper", "l0", "TEAM-L0"),
        peer("jsma-paper", PAPER, "JSMA"),
        paper_team("team-l2-paper", "l2", "TEAM-L2"),
        peer("cw-paper", PAPER, "C&W"),
        paper_team("team-linf-paper", "linf", "TEAM-Linf"),
        peer("fgsm-paper", PAPER, "FGSM", eps="preset"),
        default_team("team-l0", "l0", "TEAM-L0", True),
        peer("jsma", STRONG, "JSMA"),
        default_team("team-l2", "l2", "TEAM-L2", True),
        peer("cw-9x1000", STRONG, "C&W"),
        default_team("team-linf", "linf", "TEAM-Linf", True),
        peer("fgsm", STRONG, "FGSM", eps=None),
    ]


def table5_rows() -> list[Row]:
    """Seed 001 Table V / 000 Table 4: untargeted T1 / T4 vs DeepFool, M-DI2-FGSM, PGD."""
    mode = team_mode_default()
    rows = [paper_team(f"team-{t}-paper", "l2", t, objective=t) for t in ("T1", "T4")]
    rows += [peer("deepfool-paper", PAPER, "DeepFool"),
             peer("mdi2fgsm-paper", PAPER, "M-DI2-FGSM", eps="preset", norm="linf"),
             peer("pgd", PAPER, "PGD", name="pgd-8/255", eps=8 / 255)]
    if mode == "min-norm":
        rows.append(default_team("team-default", "l2", "T1", False))
    else:
        rows += [default_team(f"team-{t}-default", "l2", t, False, objective=t) for t in ("T1", "T4")]
    rows += [peer("deepfool", STRONG, "DeepFool"), peer("mdi2fgsm", STRONG, "M-DI2-FGSM", eps=None),
             peer("pgd", STRONG, "PGD", eps=None)]
    return rows


_T4_NOTES = [
    "paper settings (seed 001 Sec. V): JSMA theta 1 until success (no pixel limit); C&W L2 with the constant "
    "C = 1.0 (preset cw-paper: one constant, no binary search); FGSM eps 0.01, one step. TEAM: one expansion, "
    "the C schedule",
    "strong settings: TEAM's default mode; JSMA with its standard 14.5% pixel limit; C&W 9 x 1000 "
    "(binary search); FGSM at the dataset's usual budget (MNIST 0.3, CIFAR-10 8/255)",
    "targeted: every target per image (average = seeded random target; best / worst over the targets)",
    "distances: L0 counts changed pixel positions (CIFAR-10: positions, as C&W do)",
]

_T5_NOTES = [
    "paper settings (seed 001 Sec. V, seed 000 Sec. 5): TEAM T1 / T4 one expansion, the C schedule; DeepFool "
    "3 steps ('epochs = 3'); M-DI2-FGSM Linf eps 0.05, decay 1; PGD eps 8/255 (seed 000)",
    "strong settings: TEAM's default mode; DeepFool 50 steps; M-DI2-FGSM and PGD (40 steps) at the dataset's "
    "usual Linf budget (MNIST 0.3, CIFAR-10 8/255)",
    "M-DI2-FGSM and PGD are fixed-budget attacks: their L2 is whatever their Linf budget gave",
]


@register("e2-table4", "seed 001 Table IV / 000 Table 3: targeted TEAM L0 / L2 / Linf vs JSMA, C&W, FGSM "
          "(best / average / worst), the papers' settings and the strong ones", default_n=300, datasets=DATASETS,
          shards=True)
def e2_table4(ctx: Context) -> dict:
    s = setup(ctx, 300)
    rows = table4_rows()
    ctx.log(f"e2-table4: {s.dataset}/{s.model_name}, {len(s.images)} images x {s.num_classes - 1} targets")
    runs, skipped = run_rows(ctx, "e2-table4", s, [(rows, True)])
    return _document(ctx, "e2-table4", s, "E2: targeted comparison (seed 001 Table IV, seed 000 Table 3)", runs,
                     skipped, [("001", P.TARGETED_001), ("000", P.TARGETED_000)],
                     {"TEAM-L0": "l0", "JSMA": "l0", "TEAM-L2": "l2", "C&W": "l2", "TEAM-Linf": "linf",
                      "FGSM": "linf"}, _T4_NOTES)


@register("e2-table5", "seed 001 Table V / 000 Table 4: untargeted TEAM T1 / T4 vs DeepFool, M-DI2-FGSM, PGD, "
          "the papers' settings and the strong ones", default_n=300, datasets=DATASETS,
          shards=True)
def e2_table5(ctx: Context) -> dict:
    s = setup(ctx, 300)
    rows = table5_rows()
    ctx.log(f"e2-table5: {s.dataset}/{s.model_name}, {len(s.images)} images")
    runs, skipped = run_rows(ctx, "e2-table5", s, [(rows, False)])
    return _document(ctx, "e2-table5", s, "E2: untargeted comparison (seed 001 Table V, seed 000 Table 4)", runs,
                     skipped, [("001", P.UNTARGETED_001), ("000", P.UNTARGETED_000)],
                     {r: "l2" for r in ("T1", "T4", "DeepFool", "M-DI2-FGSM", "PGD")}, _T5_NOTES)
