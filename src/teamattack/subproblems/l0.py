"""L0: at most k changed coordinates (or pixel positions, via `groups`) per example.

Greedy pruning on top of the box solver: solve over the full box, score every group of the
support by its share of the model decrease, -(g_i d_i + 1/2 d_i (H d)_i) summed over the
group's coordinates (the terms sum exactly to -phi(d)), drop the lowest-scoring fraction of the
support beyond k, re-solve on the remaining support, repeat until the support has <= k groups.
The last solve is on the final support. Coordinates outside the support are fixed to 0 (their
bounds are set to 0), so the result has at most k nonzero groups and lies in the box.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class L0Path:
    """The greedy pruning of `l0_search` from the full support, kept for every budget k at once.

    Step j holds a support S_j (sizes s_0 > s_1 > ... per example, step 0 the full support) and
    the rank of each group of S_j by its share of the model decrease at the box solution on S_j.
    For a budget k, `l0_search` prunes along these steps while the support is larger than k, so
    its last support is S_0 when s_0 <= k, and otherwise the k best-ranked groups of the last step
    with more than k groups. A radius search that asks for many k pays the pruning once and one
    solve per k (`l0_search(..., path=...)`).
    """

    keeps: torch.Tensor     # (J, B, G) bool: S_j
    ranks: torch.Tensor     # (J, B, G) long: rank of each group at step j (0 = largest share)
    groups: torch.Tensor    # (B, n) coordinate -> group

    def supports(self, k: torch.Tensor) -> torch.Tensor:
        """The final support (B, K, G) for budgets k (B, K)."""
        sizes = self.keeps.sum(-1)                                     # (J, B)
        over = (sizes[:, :, None] > k[None]).sum(0)                    # steps with more than k groups
        j = (over - 1).clamp_min(0)                                    # (B, K)
        b = torch.arange(k.shape[0], device=k.device)[:, None].expand_as(k)
        keep, rank = self.keeps[j, b], self.ranks[j, b]                # (B, K, G)
        pruned = keep & (rank < k[..., None])
        return torch.where((over > 0)[..., None], pruned, self.keeps[0][:, None])


def _check_k(k, B: int, device) -> torch.Tensor:
    kk = torch.as_tensor(k, device=device).long()
    kk = kk.expand(B) if kk.dim() == 0 else kk
    if kk.shape != (B,):
        raise ValueError(f"k must be an int or a (B,) tensor; got shape {tuple(kk.shape)}")
    return kk


def _solver(g, hvp, lo, up, gr, radius, iters):
    """solve(keep (B, G)): the box (or box-and-ball) solution with the coordinates outside keep fixed at 0."""
    def solve(keep_g):
        m = torch.gather(keep_g, 1, gr)
        zero = torch.zeros_like(g)
        lo_m, up_m = torch.where(m, lo, zero), torch.where(m, up, zero)
        if radius is None:
            return box_qp(g, hvp, lo_m, up_m, iters=iters)
        return trust_region_box(g, hvp, radius, lo_m, up_m, iters=iters)
    return solve


def l0_path(g: torch.Tensor, H_or_hvp: MatrixOrHVP, lower, upper, groups=None, drop: float = 0.3,
            iters: int = 100, radius=None, max_rounds: int = 100, k_min: int = 1) -> L0Path:
    """The pruning path of `l0_search` (same arguments, no k), far enough for every budget k >=
    k_min: it stops before a step where no example has more than k_min groups."""
    check_g(g)
    if not 0.0 < drop < 1.0:
        raise ValueError("drop must be in (0, 1)")
    B = g.shape[0]
    lo, up = box_param(lower, g, "lower"), box_param(upper, g, "upper")
    hvp, _ = as_operator(H_or_hvp, g)
    gr = _groups_tensor(groups, g)
    G = int(gr.max()) + 1
    keep = torch.zeros(B, G, dtype=torch.bool, device=g.device).scatter_(1, gr, True)
    solve = _solver(g, hvp, lo, up, gr, radius, iters)
    keeps, ranks = [], []
    for _ in range(max_rounds):
        size = keep.sum(-1)
        if keeps and not bool((size > k_min).any()):
            break
        d = solve(keep)
        contrib = -(g * d + 0.5 * d * hvp(d))
        score = torch.zeros(B, G, dtype=g.dtype, device=g.device).scatter_add_(1, gr, contrib)
        score = torch.where(keep, score, torch.full_like(score, -float("inf")))
        order = torch.argsort(score, dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(G, device=g.device).expand(B, G))
        keeps.append(keep)
        ranks.append(rank)
        target = torch.minimum(torch.floor(size.to(torch.float64) * (1.0 - drop)).long(), size - 1)
        keep = keep & (rank < torch.where(size > 1, target, size).unsqueeze(-1))
    return L0Path(torch.stack(keeps), torch.stack(ranks), gr)


def l0_search(g: torch.Tensor, H_or_hvp: MatrixOrHVP, k, lower, upper, groups=None,
              drop: float = 0.3, iters: int = 100, radius=None, max_rounds: int = 100,
              diag: torch.Tensor | None = None, path: L0Path | None = None) -> torch.Tensor:
    """minimise g.d + 1/2 d.Hd over the box with at most k nonzero groups per example (greedy).

    k: int or (B,) ints. groups: None (every coordinate is its own group) or (n,) / (B, n) ints
    mapping coordinates to pixel positions (for NCHW images: the flattened index modulo H*W),
    so a position counts once whatever the number of channels changed; a group is kept or
    dropped whole. drop: fraction of the current support removed per round (at least one group).
    radius: optional L2 budget as well (then the re-solves use trust_region_box).
    diag: H's diagonal (B, n), needed only for a callable H (a dense H gives its own): then the
    result is never worse on the model than the exact best single-coordinate move (for k >= 1),
    which the greedy pruning alone does not guarantee for an indefinite H.
    path: `l0_path` of the P distinct problems of which the B rows here are K = B / P
    consecutive copies each (`repeat_interleave`), with the same groups, drop, iters and radius:
    the pruning is then not repeated, one solve per row remains.
    """
    check_g(g)
    B = g.shape[0]
    kk = _check_k(k, B, g.device)
    if path is None:
        path = l0_path(g, H_or_hvp, lower, upper, groups, drop, iters, radius, max_rounds, k_min=max(1, int(kk.min())))
    P = path.keeps.shape[1]
    if B % P:
        raise ValueError(f"path has {P} problems; {B} rows are not copies of them")
    lo, up = box_param(lower, g, "lower"), box_param(upper, g, "upper")
    hvp, H = as_operator(H_or_hvp, g)
    gr = path.groups.repeat_interleave(B // P, dim=0)
    keep = path.supports(kk.reshape(P, B // P)).reshape(B, -1)
    d = _solver(g, hvp, lo, up, gr, radius, iters)(keep)
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
