"""`evaluate`: clean and robust accuracy over all n images, per attack and worst case, per eps."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from ..data import predict
from ..validation import InputError, check_inputs, check_model, check_number
from .attacks import resolve
from .result import AttackRun, RobustAccuracy
from .run import attack_subset, within


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str = "linf",
             eps: float | Sequence[float] = (0.3,), attacks: Sequence[object] | None = None, *,
             cascade: bool = True, batch_size: int = 500, seed: int | None = 0,
             reuse: RobustAccuracy | None = None,
             log: Callable[[str], None] | None = None) -> RobustAccuracy:
    """Robust accuracy the standard way (AutoAttack / RobustBench) at each eps.

    Every one of the n images counts: a clean error is broken at every eps. Attacks (default:
    TEAM's fixed-budget mode) are names ("team", peer presets such as "autoattack", "apgd-ce"),
    Attack objects (run once; broken at eps where they succeeded within eps) or factories
    eps -> Attack. cascade (AutoAttack style): each attack runs only on the images still robust
    after the ones before it; cascade=False runs every attack on every clean-correct image (each
    attack's own robust accuracy and wall time). An image is robust (`worst`) only if every
    attack failed. eps 0 gives the clean accuracy. Successes outside the eps-ball do not count
    (`AttackRun.outside`). `seed` seeds torch's RNG before every attack run.

    reuse: an earlier independent evaluation of the same images (same norm, n and clean
    predictions): its attacks that `attacks` does not name, where it ran them at every eps, are
    carried over (their runs marked `reused`) beside the ones run now, in its order, so one attack
    can be rerun beside expensive peers.
    """
    check_model(model)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[-1]
    check_inputs(x, y, None, num_classes)
    eps_list = [float(check_number("eps", e, low=0.0)) for e in ([eps] if isinstance(eps, (int, float)) else eps)]
    if not eps_list:
        raise InputError("eps must hold at least one value")
    batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
    specs = resolve(model, norm, attacks)
    correct = predict(model, x, batch_size) == y
    n = len(y)
    out = RobustAccuracy(norm, eps_list, n, int(correct.sum()) / n if n else float("nan"),
                         [bool(c) for c in correct.tolist()], [s.label for s in specs], cascade)
    carried = _reusable(reuse, out, [s.label for s in specs])
    if carried:  # the earlier evaluation's order, the attacks run now in their places or after
        labels = [a for a in reuse.attacks if a in carried or a in out.attacks]
        out.attacks = labels + [a for a in out.attacks if a not in labels]
    by_label = {s.label: s for s in specs}
    once: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # single-run attacks: (success, distance) per image
    for e in eps_list:
        robust = correct.clone()
        for label in out.attacks:
            if label in carried:
                out.runs.append(replace(reuse.run(label, e), reused=True))
                if log is not None:
                    log(f"eps={e:g} {label}: robust accuracy {out.runs[-1].accuracy:.4f} (carried over)")
                continue
            spec = by_label[label]
            base = robust if cascade else correct
            idx = base.nonzero().squeeze(1)
            broken = torch.zeros_like(correct)
            outside, seconds, grads, fwds, ran_on = 0, 0.0, 0, 0, 0
            if e > 0 and len(idx):
                if spec.per_eps:
                    res, dist, seconds = attack_subset(spec.build(e), x, y, idx, norm, batch_size, seed)
                    ok, grads, fwds, ran_on = res.success, res.counters.gradients, res.counters.forwards, len(idx)
                else:
                    if spec.label not in once:  # run once on every clean-correct image
                        all_idx = correct.nonzero().squeeze(1)
                        res, d, seconds = attack_subset(spec.build(None), x, y, all_idx, norm, batch_size, seed)
                        succ = torch.zeros_like(correct)
                        succ[all_idx] = res.success
                        dd = torch.full((n,), float("inf"), device=x.device)
                        dd[all_idx] = d.to(dd.dtype)
                        once[spec.label] = (succ, dd)
                        grads, fwds, ran_on = res.counters.gradients, res.counters.forwards, len(all_idx)
                    succ, dd = once[spec.label]
                    ok, dist = succ[idx], dd[idx]
                inside = within(dist.to(x.device), e, norm)
                broken[idx] = ok & inside
                outside = int((ok & ~inside).sum())
            flags = base & ~broken
            if cascade:
                robust = flags
            out.runs.append(AttackRun(spec.label, e, [bool(f) for f in flags.tolist()], int(len(idx) if e > 0 else 0),
                                      int(broken.sum()), outside, seconds, int(grads), int(fwds), ran_on))
            if log is not None:
                r = out.runs[-1]
                log(f"eps={e:g} {spec.label}: robust accuracy {r.accuracy:.4f} "
                    f"(broke {r.broken} of {r.attacked}, {r.seconds:.1f} s)")
    return out


def _reusable(reuse: RobustAccuracy | None, out: RobustAccuracy, labels: list[str]) -> set[str]:
    """The attacks of `reuse` not in `labels` (those run now) whose runs it holds at every eps of
    `out`; refuses an evaluation of other images or another threat model, and a cascade (its rows
    depend on the order)."""
    if reuse is None:
        return set()
    if out.cascade or reuse.cascade:
        raise InputError("reuse needs independent runs (cascade=False) in both evaluations: a cascade's "
                         "rows depend on the attacks before them")
    if reuse.norm != out.norm or reuse.n != out.n or reuse.clean_correct != out.clean_correct:
        raise InputError(f"reuse: the earlier evaluation is of other images or another threat model "
                         f"({reuse.norm}, n = {reuse.n} against {out.norm}, n = {out.n}, or other clean predictions)")
    have = {(r.attack, r.eps) for r in reuse.runs}
    return {a for a in reuse.attacks if a not in labels and all((a, e) in have for e in out.eps)}
