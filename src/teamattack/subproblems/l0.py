"""L0: at most k changed coordinates (or pixel positions, via `groups`) per example.

Greedy pruning on top of the box solver: solve over the full box, score every group of the
support by its share of the model decrease, -(g_i d_i + 1/2 d_i (H d)_i) summed over the
group's coordinates (the terms sum exactly to -phi(d)), drop the lowest-scoring fraction of the
support beyond k, re-solve on the remaining support, repeat until the support has <= k groups.
The last solve is on the final support. Coordinates outside the support are fixed to 0 (their
bounds are set to 0), so the result has at most k nonzero groups and lies in the box.
"""
from __future__ import annotations

import torch

from ._common import MatrixOrHVP, as_operator, box_param, check_g, phi
from .box import box_qp, trust_region_box


def _groups_tensor(groups, g: torch.Tensor) -> torch.Tensor:
    B, n = g.shape
    if groups is None:
        return torch.arange(n, device=g.device).expand(B, n)
    gr = torch.as_tensor(groups, device=g.device).long()
    if gr.dim() == 1:
        gr = gr.expand(B, n)
    if gr.shape != (B, n):
        raise ValueError(f"groups must have shape (n,) or (B, n) = {(B, n)}; got {tuple(gr.shape)}")
    if bool((gr < 0).any()):
        raise ValueError("groups must be >= 0")
    return gr


def best_single_coordinate(g: torch.Tensor, diag: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """The exact minimiser of g.d + 1/2 d.Hd over the box among d with ONE nonzero coordinate.

    Along coordinate i the model is g_i t + 1/2 H_ii t^2 on [lower_i, upper_i]: its minimum is at
    a bound or, for H_ii > 0, at the clipped stationary point -g_i / H_ii. diag: H's diagonal (B, n).
    """
    B = g.shape[0]
    stat = torch.where(diag > 0, (-g / diag.clamp_min(torch.finfo(g.dtype).tiny)).clamp(lower, upper), lower)
    cands = torch.stack([lower, upper, stat])                          # (3, B, n)
    vals = g * cands + 0.5 * diag * cands * cands
    v, which = vals.min(0)                                             # best value per coordinate
    i = v.argmin(1)
    ar = torch.arange(B, device=g.device)
    d = torch.zeros_like(g)
    d[ar, i] = cands[which[ar, i], ar, i]
    return d


def l0_search(g: torch.Tensor, H_or_hvp: MatrixOrHVP, k, lower, upper, groups=None,
              drop: float = 0.3, iters: int = 100, radius=None, max_rounds: int = 100,
              diag: torch.Tensor | None = None) -> torch.Tensor:
    """minimise g.d + 1/2 d.Hd over the box with at most k nonzero groups per example (greedy).

    k: int or (B,) ints. groups: None (every coordinate is its own group) or (n,) / (B, n) ints
    mapping coordinates to pixel positions (for NCHW images: the flattened index modulo H*W),
    so a position counts once whatever the number of channels changed; a group is kept or
    dropped whole. drop: fraction of the current support removed per round (at least one group).
    radius: optional L2 budget as well (then the re-solves use trust_region_box).
    diag: H's diagonal (B, n), needed only for a callable H (a dense H gives its own): then the
    result is never worse on the model than the exact best single-coordinate move (for k >= 1),
    which the greedy pruning alone does not guarantee for an indefinite H.
    """
    check_g(g)
    B = g.shape[0]
    lo, up = box_param(lower, g, "lower"), box_param(upper, g, "upper")
    hvp, H = as_operator(H_or_hvp, g)
    kk = torch.as_tensor(k, device=g.device).long()
    kk = kk.expand(B) if kk.dim() == 0 else kk
    if kk.shape != (B,):
        raise ValueError(f"k must be an int or a (B,) tensor; got shape {tuple(kk.shape)}")
    if not 0.0 < drop < 1.0:
        raise ValueError("drop must be in (0, 1)")
    gr = _groups_tensor(groups, g)
    G = int(gr.max()) + 1
    present = torch.zeros(B, G, dtype=torch.bool, device=g.device).scatter_(1, gr, True)
    keep = present.clone()  # group support

    def solve(keep_g):
        m = torch.gather(keep_g, 1, gr)
        zero = torch.zeros_like(g)
        lo_m, up_m = torch.where(m, lo, zero), torch.where(m, up, zero)
        if radius is None:
            return box_qp(g, hvp, lo_m, up_m, iters=iters)
        return trust_region_box(g, hvp, radius, lo_m, up_m, iters=iters)

    d = solve(keep)
    for _ in range(max_rounds):
        size = keep.sum(-1)
        over = size > kk
        if not bool(over.any()):
            break
        Hd = hvp(d)
        contrib = -(g * d + 0.5 * d * Hd)
        score = torch.zeros(B, G, dtype=g.dtype, device=g.device).scatter_add_(1, gr, contrib)
        score = torch.where(keep, score, torch.full_like(score, -float("inf")))
        target = torch.floor(size.to(torch.float64) * (1.0 - drop)).long()
        target = torch.minimum(target, size - 1)
        target = torch.where(over, torch.maximum(target, kk), size)
        order = torch.argsort(score, dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(G, device=g.device).expand(B, G))
        keep = keep & (rank < target.unsqueeze(-1))
        d = solve(keep)
    # guarantee: nothing outside the support (the solvers fix those coordinates to 0 already)
    m = torch.gather(keep, 1, gr)
    d = torch.where(m, d, torch.zeros_like(d))
    if H is not None:
        diag = torch.diagonal(H, dim1=1, dim2=2)
    if diag is not None:
        lo1, up1 = lo, up
        if radius is not None:
            r = torch.as_tensor(radius, dtype=g.dtype, device=g.device).reshape(-1, 1)
            lo1, up1 = torch.maximum(lo, -r), torch.minimum(up, r)
        one = best_single_coordinate(g, diag.to(g.dtype), lo1, up1)
        better = (kk >= 1) & (phi(g, one, hvp(one)) < phi(g, d, hvp(d)))
        d = torch.where(better[:, None], one, d)
    return d
