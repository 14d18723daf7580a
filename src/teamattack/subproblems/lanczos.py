"""Hessian-free TRS: Lanczos (full reorthogonalisation) from g, exact TRS in the Krylov space.

lanczos(g, hvp, k) builds, per example, an orthonormal basis V (n x k) of
K_k(H, g) = span{g, Hg, ..., H^{k-1} g} and the tridiagonal T = V^T H V (k x k), with k batched
HVPs. The TRS restricted to the Krylov space, min ||g|| e1.s + 1/2 s.T s s.t. ||s|| <= r, is
solved globally by the dense eigen-solver (GLTR's idea, with an exact small solve), d = V s.
Breakdown (an invariant subspace found after j < k steps) is handled per example: its later
basis vectors are zero and T is padded with a diagonal block larger than its spectrum, so the
padded directions never enter the solution. An example with g = 0 starts from a fixed random
vector instead (so negative curvature can still be found; with g = 0 the answer is the
min-eigenvector step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import HVP, batch_param, check_g, eps_of, tiny_of
from .trust_region import TRSolution, solve_trust_region_eig


@dataclass
class LanczosBasis:
    """V (B, n, k) orthonormal columns (zero past k_eff), T (B, k, k) tridiagonal (padded past
    k_eff), k_eff (B,) dimension reached, hvps (B,) products applied per example, calls: batched
    hvp calls, gnorm (B,) ||g||. Iterating gives (V, T), so `V, T = lanczos(g, hvp, k)` works.
    """

    V: torch.Tensor
    T: torch.Tensor
    k_eff: torch.Tensor
    hvps: torch.Tensor
    calls: int
    gnorm: torch.Tensor

    def __iter__(self):
        return iter((self.V, self.T))

    def ritz(self):
        """(g_hat, ev, E): the Krylov-space model in Ritz coordinates, E = V W (B, n, k), so
        trust_region_eig(g_hat, ev, E, radii) solves the Krylov TRS for many radii at once."""
        ev, W = torch.linalg.eigh(self.T)
        g_hat = self.gnorm.unsqueeze(-1) * W[:, 0, :]
        return g_hat, ev, torch.matmul(self.V, W)


def lanczos(g: torch.Tensor, hvp: HVP, k: int, seed: int = 0) -> LanczosBasis:
    """k Lanczos steps started at g (B, n) with full reorthogonalisation; see the module doc."""
    check_g(g)
    B, n = g.shape
    k = int(max(1, min(int(k), n)))
    eps, tiny = eps_of(g), tiny_of(g)
    gnorm = g.norm(dim=-1)
    start = g
    if bool((gnorm == 0).any()):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        rnd = torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g)
        start = torch.where((gnorm == 0).unsqueeze(-1), rnd, g)
    q = start / start.norm(dim=-1, keepdim=True).clamp_min(tiny)
    V = g.new_zeros(B, k, n)
    alpha = g.new_zeros(B, k)
    beta = g.new_zeros(B, k)
    active = torch.ones(B, dtype=torch.bool, device=g.device)
    k_eff = torch.full((B,), k, dtype=torch.long, device=g.device)
    hvps = torch.zeros(B, dtype=torch.long, device=g.device)
    scale = g.new_zeros(B)
    calls = 0
    for j in range(k):
        V[:, j] = q
        v = hvp(q)
        calls += 1
        hvps += active.long()
        a = (q * v).sum(-1)
        alpha[:, j] = torch.where(active, a, torch.zeros_like(a))
        scale = torch.maximum(scale, a.abs())
        if j == k - 1:
            break
        Vj = V[:, : j + 1]
        for _ in range(2):  # full reorthogonalisation (twice is enough)
            v = v - torch.matmul(torch.matmul(Vj, v.unsqueeze(-1)).transpose(-1, -2), Vj).squeeze(-2)
        b = v.norm(dim=-1)
        scale = torch.maximum(scale, b)
        broke = active & (b <= 1e3 * eps * scale)
        k_eff = torch.where(broke, torch.full_like(k_eff, j + 1), k_eff)
        active = active & ~broke
        beta[:, j] = torch.where(active, b, torch.zeros_like(b))
        q = torch.where(active.unsqueeze(-1), v / b.clamp_min(tiny).unsqueeze(-1), torch.zeros_like(v))
        if not bool(active.any()):
            # every example broke down: the remaining columns stay zero
            break
    # tridiagonal, padded past k_eff with a value above the spectrum (Gershgorin)
    idx = torch.arange(k, device=g.device)
    valid = idx.unsqueeze(0) < k_eff.unsqueeze(1)
    gersh = (alpha.abs() + 2 * beta.abs()).amax(-1)
    pad = torch.where(gersh > 0, 2 * gersh, torch.ones_like(gersh))
    diag = torch.where(valid, alpha, pad.unsqueeze(-1).expand(B, k))
    T = torch.diag_embed(diag)
    if k > 1:
        off = beta[:, : k - 1]
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return LanczosBasis(V.transpose(-1, -2), T, k_eff, hvps, calls, gnorm)


@dataclass
class LanczosTRSolution(TRSolution):
    """TRSolution plus hvps (B,) products per example, k_eff (B,) Krylov dimension, basis."""

    hvps: torch.Tensor = None
    k_eff: torch.Tensor = None
    basis: LanczosBasis = None


def trust_region_krylov(basis: LanczosBasis, radii, max_iter: int = 100) -> TRSolution:
    """TRS in an existing Krylov basis, for radii (B,) or (B, K) (then d is (B, K, n))."""
    g_hat, ev, E = basis.ritz()
    return solve_trust_region_eig(g_hat, ev, E, radii, max_iter)


def trust_region_lanczos(g: torch.Tensor, hvp: HVP, radius, k: int = 20,
                         max_iter: int = 100) -> LanczosTRSolution:
    """Hessian-free TRS: k Lanczos HVPs from g, then the exact TRS in the Krylov space.

    Returns a LanczosTRSolution: .d (B, n) (or (B, K, n) for (B, K) radii), .lam, .hvps (B,)
    HVPs per example, .k_eff, .basis (reuse it with trust_region_krylov for more radii). With
    k = n (and no breakdown) it equals the exact solver; with any k >= 1 it is never worse on
    phi than the Cauchy point (the Krylov space contains g).
    """
    check_g(g)
    batch_param(radius, g.shape[0], g, "radius", allow_extra=True)
    basis = lanczos(g, hvp, k)
    s = trust_region_krylov(basis, radius, max_iter)
    return LanczosTRSolution(s.d, s.lam, s.interior, s.hard_case, s.converged, s.value,
                             s.iterations, hvps=basis.hvps, k_eff=basis.k_eff, basis=basis)
