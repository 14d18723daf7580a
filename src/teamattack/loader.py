"""Attacking a whole DataLoader: `attack.run_loader(loader)` (every teamattack `Attack`).

The batches may be `(x, y)` or `(x, y, target)` (targeted attacks); each is attacked as one
call, on the attack model's device, and the results are concatenated into one `AttackResult`
(counters summed). `verbose=True` shows a tqdm progress bar with the running success rate.
`keep_images=False` drops `x_adv` / `raw` after each batch (they are then empty tensors), so a long
run keeps only the per-example distances.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from .result import AttackResult
from .validation import InputError

if TYPE_CHECKING:
    from .attacks.base import Attack


def _device(attack: Attack) -> torch.device:
    try:
        return next(attack.model.parameters()).device
    except (StopIteration, AttributeError, TypeError):
        return torch.device("cpu")


def run_loader(attack: Attack, loader: Iterable[Any], verbose: bool = False,
               keep_images: bool = True) -> AttackResult:
    """Attack every batch of `loader` and return one `AttackResult` over all of it."""
    from tqdm.auto import tqdm

    device = _device(attack)
    results: list[AttackResult] = []
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(loader, total=total, desc=getattr(attack, "name", "attack"), disable=not verbose, unit="batch")
    done = succeeded = 0
    for batch in bar:
        if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
            raise InputError("each batch must be (x, y) or (x, y, target)")
        x, y = batch[0].to(device), batch[1].to(device)
        target = batch[2].to(device) if len(batch) == 3 else None
        r = attack(x, y, target)
        if not keep_images:
            r.x_adv = r.raw = r.x_adv.new_empty((0, *r.x_adv.shape[1:]))
        results.append(r)
        done, succeeded = done + len(r), succeeded + int(r.success.sum())
        bar.set_postfix(asr=f"{100 * succeeded / max(done, 1):.1f}%")
    bar.close()
    if not results:
        raise InputError("the loader yielded no batches")
    return AttackResult.cat(results)
