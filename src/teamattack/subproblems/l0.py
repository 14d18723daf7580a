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

from ._common import MatrixOrHVP, as_operator, box_param, check_g
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


def l0_search(g: torch.Tensor, H_or_hvp: MatrixOrHVP, k, lower, upper, groups=None,
              drop: float = 0.3, iters: int = 100, radius=None, max_rounds: int = 100) -> torch.Tensor:
    """minimise g.d + 1/2 d.Hd over the box with at most k nonzero groups per example (greedy).

    k: int or (B,) ints. groups: None (every coordinate is its own group) or (n,) / (B, n) ints
    mapping coordinates to pixel positions (for NCHW images: the flattened index modulo H*W),
    so a position counts once whatever the number of channels changed; a group is kept or
    dropped whole. drop: fraction of the current support removed per round (at least one group).
    radius: optional L2 budget as well (then the re-solves use trust_region_box).
    """
    check_g(g)
    B = g.shape[0]
    lo, up = box_param(lower, g, "lower"), box_param(upper, g, "upper")
    hvp, _ = as_operator(H_or_hvp, g)
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
    return torch.where(m, d, torch.zeros_like(d))
