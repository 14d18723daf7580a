"""Distances, PSNR, success and summary statistics (the protocol: docs/bench.md)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .goal import Goal


def _flat(d: torch.Tensor) -> torch.Tensor:
    return d.reshape(d.shape[0], -1)


def l0(x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Number of changed pixel positions per example.

    For (B, C, H, W) tensors a position counts once if any of its C channels changed (as C&W
    count); for other shapes every element is a position.
    """
    changed = (x_adv - x).abs() > tol
    if changed.dim() == 4:
        changed = changed.any(dim=1)
    return _flat(changed).sum(dim=1).to(torch.float32)


def l2(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    return _flat(x_adv - x).norm(dim=1).to(torch.float32)


def linf(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    return _flat(x_adv - x).abs().amax(dim=1).to(torch.float32)


def psnr(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Standard PSNR = 10 log10(1 / MSE) on the [0,1] scale; +inf where nothing changed."""
    mse = _flat((x_adv - x).double() ** 2).mean(dim=1)
    out = 10.0 * torch.log10(1.0 / mse)
    return out.to(torch.float32)


def distances(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"l0": l0(x, x_adv), "l2": l2(x, x_adv), "linf": linf(x, x_adv), "psnr": psnr(x, x_adv)}


@torch.no_grad()
def is_adversarial(
    model: torch.nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    batch_size: int = 500,
) -> torch.Tensor:
    """Fresh forward pass: misclassified (untargeted) or classified as `target` (targeted).

    Success needs a finite x_adv and finite logits there (`Goal.reached`): a NaN is never a success.
    """
    goal = Goal(y, target)
    finite = torch.isfinite(x_adv.reshape(len(x_adv), -1)).all(1)
    out = [goal[i:i + batch_size].reached(model(x_adv[i:i + batch_size]))
           for i in range(0, len(x_adv), batch_size)]
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x_adv.device)) & finite


def stats(values: Iterable[float]) -> dict[str, float | None]:
    """Mean and median of finite values (None when there are none)."""
    v = [float(a) for a in values if math.isfinite(float(a))]
    if not v:
        return {"mean": None, "median": None}
    t = torch.tensor(v, dtype=torch.float64)
    # the median of an even count is the mean of the two middle values (numpy convention)
    s = t.sort().values
    k = len(s)
    med = float(s[k // 2]) if k % 2 else float((s[k // 2 - 1] + s[k // 2]) / 2)
    return {"mean": float(t.mean()), "median": med}


def summarize(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    success: torch.Tensor,
) -> dict[str, object]:
    """ASR and distortion statistics over successes only (the papers' convention)."""
    d = distances(x, x_adv)
    ok = success.bool().cpu()
    out: dict[str, object] = {"n": int(ok.numel()), "asr": float(ok.float().mean()) if ok.numel() else 0.0}
    for k, v in d.items():
        out[k] = stats(v.cpu()[ok].tolist())
    return out
