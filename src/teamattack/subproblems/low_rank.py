"""Low-rank curvature H = U diag(s) U^T (U (B, n, r), r << n): reduce the TRS and the min-norm
problem EXACTLY to span([U, g]) (dimension r + 1).

Why exact: both solutions lie on the curve d(lam) = -(H + lam I)^{-1} g (plus, in the hard
case, an eigenvector of the smallest eigenvalue). Split R^n = range(U) + its complement;
H maps everything into range(U) and is 0 on the complement. For lam > 0, (H + lam I) d = -g
gives lam d = -g - H d, a vector in span{g, range(U)}. For lam = 0 (interior TRS, or the
min-norm limit), d = -H^+ g is in range(U) (the interior TRS needs H positive definite,
impossible when r < n unless g's complement part is 0, and then it is the minimum-norm
interior solution). In the hard case with ev_min < 0 the eigenvector is in range(U) (the
complement only carries eigenvalue 0). So the full solution is Qb d_small where Qb is an
orthonormal basis of span([U, g]) and d_small solves the problem with g_small = Qb^T g,
H_small = Qb^T H Qb = (Qb^T U) diag(s) (Qb^T U)^T: ||Qb d_small|| = ||d_small|| and
phi(Qb d_small) = phi_small(d_small). (If ev_min = 0 is a hard case, every solution differs
only by a null-space vector and they share phi.) The box constraints do NOT reduce (a box is not
rotation invariant): use low_rank_hvp with the full-space box solvers.
"""
from __future__ import annotations

import torch

from ._common import check_g


def reduce_low_rank(g: torch.Tensor, U: torch.Tensor, s: torch.Tensor):
    """(Qb (B, n, r+1), g_small (B, r+1), H_small (B, r+1, r+1)) for H = U diag(s) U^T.

    Qb has orthonormal columns spanning (a superset of) span([U, g]) (Householder QR, so also
    for rank-deficient U or g in range(U)); d = Qb @ d_small maps solutions back (see lift).
    Needs r + 1 <= n.
    """
    check_g(g)
    B, n = g.shape
    U = U.to(g)
    if U.dim() == 2:
        U = U.expand(B, *U.shape)
    if U.dim() != 3 or U.shape[:2] != (B, n):
        raise ValueError(f"U must have shape (B, n, r) with (B, n) = {(B, n)}; got {tuple(U.shape)}")
    r = U.shape[2]
    if r + 1 > n:
        raise ValueError(f"rank {r} + 1 exceeds n = {n}; use the dense solvers")
    s = torch.as_tensor(s, dtype=g.dtype, device=g.device)
    if s.dim() == 1:
        s = s.expand(B, r)
    A = torch.cat([U, g.unsqueeze(-1)], -1)
    Qb, _ = torch.linalg.qr(A, mode="reduced")
    UQ = torch.matmul(Qb.transpose(-1, -2), U)            # (B, r+1, r)
    Hs = torch.matmul(UQ * s.unsqueeze(-2), UQ.transpose(-1, -2))
    Hs = 0.5 * (Hs + Hs.transpose(-1, -2))
    gs = torch.matmul(Qb.transpose(-1, -2), g.unsqueeze(-1)).squeeze(-1)
    return Qb, gs, Hs


def lift(Qb: torch.Tensor, d_small: torch.Tensor) -> torch.Tensor:
    """Qb (B, n, m) times d_small (B, m) -> (B, n), or (B, K, m) -> (B, K, n)."""
    if d_small.dim() == 3:
        return torch.matmul(d_small, Qb.transpose(-1, -2))
    return torch.matmul(Qb, d_small.unsqueeze(-1)).squeeze(-1)


def low_rank_hvp(U: torch.Tensor, s: torch.Tensor):
    """hvp(V) = U diag(s) U^T V for V (B, n): O(n r) per product, for the box solvers."""
    def hvp(V: torch.Tensor) -> torch.Tensor:
        c = torch.matmul(U.transpose(-1, -2), V.unsqueeze(-1)).squeeze(-1) * s
        return torch.matmul(U, c.unsqueeze(-1)).squeeze(-1)
    return hvp
