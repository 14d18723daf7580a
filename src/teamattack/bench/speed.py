"""The speed suite: wall time against the gradient floor, TEAM's min-norm walk beside DDN and FMN.

    teamattack bench --suite speed --model digits-cnn -n 100 --thread-counts 1,2 --repeats 2 \\
        --json docs/results/speed-digits-cnn.json --markdown docs/results/speed-digits-cnn.md

For one batch of N correctly classified test images, in one process, every attack runs on the
whole batch `repeats` times, alternating (A B C A B C: a slow spell of a shared machine hits every
attack alike), at each torch thread count; a row reports the fastest of its runs (the least
disturbed one; the median as well) and the process's CPU time (at one thread it barely depends on
what else the machine runs). Beside the wall time: gradients and forwards per image (the
`CountingModel`), success rate and median distance over successes, and every attack's *gradient
floor*: its gradients per image times the measured cost of one batched forward + backward of the
same batch (fastest of several, measured between the attacks' runs), and the ratio wall / floor
(what an attack spends beyond its gradients: for TEAM subproblem solves, verdict forwards and
Python; the peers' rows show what a plain gradient loop spends beyond the same floor).

The attacks are the suite `speed` (`bench.suites.speed_suite`): TEAM min-norm L2 and Linf (the
defaults), adv_lib's DDN-100 and FMN-100 (L2 and Linf: the presets `ddn-100`, `fmn-l2-100`,
`fmn-linf-100`) and foolbox's DDN-100 (`DDNAttack(steps=100)`, no preset of its own).
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .suites import AttackSpec, get_suite



@dataclass(frozen=True)
class SpeedRow:
    """One attack at one thread count: per-image figures over the batch (fastest run's wall time)."""

    model: str
    threads: int
    attack: str
    library: str
    norm: str
    images: int
    seconds_per_image: float          # wall time, the fastest of the runs
    median_seconds_per_image: float   # their median
    cpu_seconds_per_image: float      # CPU time of this process (all threads), the least of the runs
    runs: int
    gradients_per_image: float
    forwards_per_image: float
    success: float
    median_distance: float | None     # over successes, in the attack's norm
    floor_seconds_per_image: float | None = None  # gradients x (forward + backward) per image
    wall_over_floor: float | None = None
    cpu_over_floor: float | None = None  # the same in CPU time (robust to other processes at 1 thread)


@dataclass
class SpeedTable:
    """A speed run: its rows and the forward + backward cost per image at each thread count."""

    model: str
    n: int
    seed: int
    repeats: int
    rows: list[SpeedRow] = field(default_factory=list)
    fwd_bwd_seconds_per_image: dict[int, float] = field(default_factory=dict)
    fwd_bwd_cpu_seconds_per_image: dict[int, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    command: str = ""


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def fwd_bwd_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 3) -> tuple[float, float]:
    """(wall, CPU) seconds per image of one batched forward + backward pass (the gradient of one
    logit per image w.r.t. the input, as the attacks take it): the median of `repeats`."""
    walls, cpus = [], []
    for _ in range(repeats):
        xr = x.detach().clone().requires_grad_(True)
        w0, c0 = _clock()
        z = model(xr)
        (g,) = torch.autograd.grad(z.gather(1, y[:, None]).sum(), xr)
        w1, c1 = _clock()
        walls.append(w1 - w0)
        cpus.append(c1 - c0)
    return statistics.median(walls) / len(x), statistics.median(cpus) / len(x)


def _distance(res, norm: str) -> float | None:
    d = res.l2 if norm == "l2" else res.linf
    d = d[res.success]
    return float(d.median()) if d.numel() else None


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, specs: list[AttackSpec] | None = None, *,
            model_name: str, threads=(1, 2), repeats: int = 2, seed: int = 0,
            log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> SpeedTable:
    """Every attack of `specs` (default: the suite `speed`) on (x, y), `repeats` alternating runs
    at each thread count; TEAM's floor. Attacks whose library is missing are listed as skipped."""
    if specs is None:
        specs = get_suite("speed")[0]
    for p in model.parameters():
        p.requires_grad_(False)
    table = SpeedTable(model_name, len(x), seed, repeats)
    built = {}
    for spec in specs:
        try:
            built[spec.name] = spec.build(model, targeted=False, seed=seed)
        except ImportError as err:
            table.skipped[spec.name] = f"{type(err).__name__}: {err}"
            log(f"{spec.name}: skipped ({err})")
            continue
    before = torch.get_num_threads()
    for attack in built.values():  # warm-up, untimed: imports, lazy initialisation, allocator
        attack(x[:2], y[:2])
    try:
        for t in threads:
            torch.set_num_threads(int(t))
            walls: dict[str, list[float]] = {n: [] for n in built}
            cpus: dict[str, list[float]] = {n: [] for n in built}
            results, fb = {}, []
            for rep in range(repeats):
                for name, attack in built.items():
                    fb.append(fwd_bwd_seconds(model, x, y))  # between the attacks: the same conditions
                    torch.manual_seed(seed)
                    w0, c0 = _clock()
                    res = attack(x, y)
                    w1, c1 = _clock()
                    walls[name].append((w1 - w0) / len(x))
                    cpus[name].append((c1 - c0) / len(x))
                    results[name] = res
                    log(f"threads {t} run {rep + 1}/{repeats} {name}: {walls[name][-1]:.4g} s/img")
            cost, cpu_cost = min(f[0] for f in fb), min(f[1] for f in fb)
            table.fwd_bwd_seconds_per_image[int(t)] = cost
            table.fwd_bwd_cpu_seconds_per_image[int(t)] = cpu_cost
            for name, attack in built.items():
                res = results[name]
                c = res.counters.per_example(len(x))
                wall, cpu = min(walls[name]), min(cpus[name])
                floor = ratio = cpu_ratio = None
                if c["gradients"] > 0:
                    floor = c["gradients"] * cost
                    ratio, cpu_ratio = wall / floor, cpu / (c["gradients"] * cpu_cost)
                table.rows.append(SpeedRow(
                    model_name, int(t), name, attack.library, attack.norm, len(x), wall,
                    statistics.median(walls[name]), cpu, repeats, c["gradients"], c["forwards"],
                    float(res.success.float().mean()), _distance(res, attack.norm), floor, ratio, cpu_ratio))
    finally:
        torch.set_num_threads(before)
    return table


def markdown(table: SpeedTable) -> str:
    """The table as Markdown (one section per thread count)."""
    def f(v, d=4):
        return "-" if v is None else f"{v:.{d}g}"

    out = [f"# Speed: {table.model}, N = {table.n} (seed {table.seed}), fastest of {table.repeats} alternating runs",
           ""]
    if table.command:
        out += [f"Command: `{table.command}`", ""]
    out += ["Seconds per image (time of the whole batch / N): wall time (fastest and median run) and this "
            "process's CPU time (least run; all threads). Floor = an attack's gradients per image x the cost of one "
            "batched forward + backward of the same batch (fastest between the runs), in wall and in CPU time; "
            "median distance over successes.", ""]
    for t, cost in table.fwd_bwd_seconds_per_image.items():
        cpu_cost = table.fwd_bwd_cpu_seconds_per_image.get(t)
        out += [f"## {t} torch thread{'s' if t > 1 else ''} (forward + backward: {cost:.3g} s/img wall, "
                f"{f(cpu_cost, 3)} s/img CPU)", "",
                "| attack | library | norm | s/img | median s/img | CPU s/img | grads/img | fwds/img | success | "
                "median dist | floor s/img | wall / floor | CPU / floor |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in table.rows:
            if r.threads != t:
                continue
            out.append(f"| {r.attack} | {r.library} | {r.norm} | {f(r.seconds_per_image)} | "
                       f"{f(r.median_seconds_per_image)} | {f(r.cpu_seconds_per_image)} | {r.gradients_per_image:.1f} | "
                       f"{r.forwards_per_image:.1f} | {r.success:.3f} | {f(r.median_distance)} | "
                       f"{f(r.floor_seconds_per_image)} | {f(r.wall_over_floor, 3)} | {f(r.cpu_over_floor, 3)} |")
        out.append("")
    for name, why in table.skipped.items():
        out.append(f"- {name}: not run ({why})")
    return "\n".join(out).rstrip() + "\n"


def document(table: SpeedTable) -> dict:
    """The JSON document of a speed run."""
    from .. import __version__

    return {"suite": "speed", "model": table.model, "n": table.n, "seed": table.seed, "repeats": table.repeats,
            "command": table.command, "teamattack": __version__, "torch": torch.__version__,
            "fwd_bwd_seconds_per_image": {str(k): v for k, v in table.fwd_bwd_seconds_per_image.items()},
            "fwd_bwd_cpu_seconds_per_image": {str(k): v for k, v in table.fwd_bwd_cpu_seconds_per_image.items()},
            "skipped": table.skipped, "rows": [asdict(r) for r in table.rows]}


def run_cli(args, specs: list[AttackSpec]) -> int:
    """`teamattack bench --suite speed ...`: measure, print the table, write --json / --markdown."""
    from ..atomic import atomic_write_text
    from ..cli.common import command_line, dataset_for, device, load_model, progress, write_json
    from .harness import load_images

    dev = device(args.device)
    model = load_model(args.model, args.weights, dev)
    dataset = dataset_for(model, args.dataset, args.model)
    x, y, _ = load_images(dataset, model, args.n, args.seed, args.data_root, dev)
    threads = args.thread_counts
    log = (lambda s: print(s, file=sys.stderr)) if progress(args) else (lambda s: None)
    table = measure(model, x, y, specs, model_name=args.model, threads=threads, repeats=args.repeats,
                    seed=args.seed, log=log)
    table.command = command_line()
    text = markdown(table)
    print(text)
    if args.json:
        write_json(args.json, document(table))
    if args.markdown:
        atomic_write_text(args.markdown, text)
    return 0
