"""Small shared helpers: batch parameters, operators (dense H or an HVP callable), phi."""
from __future__ import annotations

from collections.abc import Callable

import torch

HVP = Callable[[torch.Tensor], torch.Tensor]
MatrixOrHVP = torch.Tensor | HVP


def check_g(g: torch.Tensor) -> None:
    if not torch.is_tensor(g) or not g.is_floating_point() or g.dim() != 2:
        raise ValueError(f"g must be a floating-point tensor of shape (B, n); got "
                         f"{getattr(g, 'shape', type(g))}")


def batch_param(value, B: int, like: torch.Tensor, name: str, allow_extra: bool = False) -> torch.Tensor:
    """A python number / tensor broadcast to shape (B,) (or (B, K) when allow_extra), like's dtype and device."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(B).clone()
    if t.dim() == 1 and t.shape[0] == B:
        return t
    if t.dim() == 1 and t.shape[0] == 1:
        return t.expand(B).clone()
    if allow_extra and t.dim() == 2 and t.shape[0] in (1, B):
        return t.expand(B, t.shape[1]).clone() if t.shape[0] == 1 else t
    raise ValueError(f"{name} must be a number or a tensor of shape (B,)"
                     f"{' or (B, K)' if allow_extra else ''} with B={B}; got {tuple(t.shape)}")


def box_param(value, g: torch.Tensor, name: str) -> torch.Tensor:
    """Bounds: a number, (n,) or (B, n), returned as (B, n)."""
    t = torch.as_tensor(value, dtype=g.dtype, device=g.device)
    try:
        return t.expand_as(g)
    except RuntimeError:
        raise ValueError(f"{name} must broadcast to g's shape {tuple(g.shape)}; got {tuple(t.shape)}") from None


def bmv(H: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Batched matvec: H (B, n, n), v (B, n) -> (B, n)."""
    return torch.matmul(H, v.unsqueeze(-1)).squeeze(-1)


def as_operator(H_or_hvp: MatrixOrHVP, g: torch.Tensor) -> tuple[HVP, torch.Tensor | None]:
    """(hvp, dense H or None). A dense H must have shape (B, n, n) (or (n, n), shared)."""
    if torch.is_tensor(H_or_hvp):
        H = H_or_hvp.to(dtype=g.dtype, device=g.device)
        B, n = g.shape
        if H.dim() == 2:
            H = H.expand(B, n, n)
        if H.shape != (B, n, n):
            raise ValueError(f"H must have shape (B, n, n) = {(B, n, n)}; got {tuple(H.shape)}")
        return (lambda V: bmv(H, V)), H
    if callable(H_or_hvp):
        return H_or_hvp, None
    raise TypeError("H_or_hvp must be a (B, n, n) tensor or a callable hvp(V: (B, n)) -> (B, n)")


def phi(g: torch.Tensor, d: torch.Tensor, Hd: torch.Tensor) -> torch.Tensor:
    """g.d + 1/2 d.Hd per example (the quadratic model without its constant)."""
    return (g * d).sum(-1) + 0.5 * (d * Hd).sum(-1)


def eps_of(t: torch.Tensor) -> float:
    return float(torch.finfo(t.dtype).eps)


def tiny_of(t: torch.Tensor) -> float:
    return float(torch.finfo(t.dtype).tiny)


def power_norm_estimate(hvp: HVP, g: torch.Tensor, iters: int = 8) -> torch.Tensor:
    """Estimate of ||H||_2 per example by power iteration (an underestimate; callers backtrack)."""
    gen = torch.Generator(device="cpu").manual_seed(1234)
    v = torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(tiny_of(g))
    est = torch.zeros(g.shape[0], dtype=g.dtype, device=g.device)
    for _ in range(iters):
        w = hvp(v)
        nw = w.norm(dim=-1)
        est = torch.maximum(est, nw)
        v = torch.where(nw[:, None] > 0, w / nw.clamp_min(tiny_of(g))[:, None], v)
    return est


def shrink_into_ball(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Scale rows of d (..., n) with ||d|| > r back into the ball (slightly inside, to survive
    rounding); rows already inside are returned bit for bit."""
    nrm = d.norm(dim=-1)
    fac = torch.where(nrm > r, r / nrm.clamp_min(tiny_of(d)) * (1 - 2 * eps_of(d)),
                      torch.ones_like(nrm))
    return torch.where((nrm > r).unsqueeze(-1), d * fac.unsqueeze(-1), d)
