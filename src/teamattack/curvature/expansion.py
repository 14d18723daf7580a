"""The second-order model of an objective around a batch of inputs.

phi(d) = f + g.d + 1/2 d.H d per example, with H stored in one of two forms:

- dense:    H (B, n, n)                       (exact Hessian of small inputs)
- factored: H = Q Hs Q^T, Q (B, n, r), Hs (B, r, r)
            (exact low-rank Hessian of nets whose smooth layers sit on top, Gauss-Newton, or the
            rank-k Lanczos approximation; r = 0 is the first-order model H = 0)

Every curvature source returns an `Expansion`; subproblem solvers only need `matvec` and, for
the ball-only problems, the small dense problem of `reduced()` in which the solution lies exactly.
The eigen-decomposition of that small problem depends on H (and, for the factored form, on the
span of [Q, g], which a re-centring keeps), not on g: it is computed once, cached privately and
shared by `recentred`; only g's coordinates in it are recomputed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class _Eig:
    """H_small = W diag(ev) W^T in the basis P (None: the full space); V = P W (B, n, k)."""

    P: torch.Tensor | None
    ev: torch.Tensor
    W: torch.Tensor
    V: torch.Tensor


@dataclass(frozen=True)
class Expansion:
    """phi(d) = f + g.d + 1/2 d.H d of an objective around a batch (see the module docstring).

    f (B,), g (B, n); H (B, n, n) dense, or Q (B, n, r) and Hs (B, r, r) factored, or neither
    (H = 0). `source` names the curvature source that built it; `logits` are the network's logits
    at the expansion point when the source computed them anyway (first order), else None.
    """

    f: torch.Tensor
    g: torch.Tensor
    H: torch.Tensor | None = None
    Q: torch.Tensor | None = None
    Hs: torch.Tensor | None = None
    source: str = "none"
    logits: torch.Tensor | None = None
    _eig: list = field(default_factory=list, repr=False, compare=False)   # [] or [_Eig]: the cache

    def __post_init__(self) -> None:
        # The sources differentiate through the model, whose parameters require grad: without this
        # every tensor derived from the expansion would keep that autograd graph (and its memory)
        # alive for the rest of the attack.
        for name in ("f", "g", "H", "Q", "Hs", "logits"):
            t = getattr(self, name)
            if t is not None and t.requires_grad:
                object.__setattr__(self, name, t.detach())

    @property
    def n(self) -> int:
        return self.g.shape[1]

    @property
    def rank(self) -> int:
        if self.H is not None:
            return self.n
        return 0 if self.Q is None else self.Q.shape[2]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for v (B, n) (as rows: v Q, not Q^T v, which is several times slower on CPU)."""
        return self.matvec_repeated(1)(v)

    def matvec_repeated(self, K: int):
        """H v for rows (B*K, n) that are K consecutive copies per example: one shared H, no copies."""
        B, n = self.g.shape

        def mv(v: torch.Tensor) -> torch.Tensor:
            V = v.reshape(B, K, n)
            if self.H is not None:
                out = torch.matmul(V, self.H)                       # H symmetric
            elif self.Q is None or self.Q.shape[2] == 0:
                out = torch.zeros_like(V)
            else:
                w = torch.matmul(V, self.Q)                         # (B, K, r)
                out = torch.matmul(torch.matmul(w, self.Hs), self.Q.transpose(1, 2))
            return out.reshape(B * K, n)

        return mv

    def _eigen(self) -> _Eig:
        if not self._eig:
            P, _, Hs = self.reduced()
            ev, W = torch.linalg.eigh(Hs)
            self._eig.append(_Eig(P, ev, W, W if P is None else torch.bmm(P, W)))
        return self._eig[0]

    def small_eig(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(P, g_hat, ev, W) of the reduced problem: H_small = W diag(ev) W^T, g_hat = W^T P^T g.

        The decomposition is cached (the radius search solves many radii from it, a re-centred
        expansion shares it); g_hat is computed from this expansion's own g.
        """
        e = self._eigen()
        gs = self.g if e.P is None else torch.bmm(e.P.transpose(1, 2), self.g.unsqueeze(-1)).squeeze(-1)
        g_hat = torch.bmm(e.W.transpose(1, 2), gs.unsqueeze(-1)).squeeze(-1)
        return e.P, g_hat, e.ev, e.W

    def eigenvectors(self) -> torch.Tensor:
        """The full-space eigenvectors P W (B, n, k) of the reduced problem (cached)."""
        return self._eigen().V

    def phi(self, d: torch.Tensor) -> torch.Tensor:
        """phi(d) = f + g.d + 1/2 d.H d, (B,)."""
        return self.f + (self.g * d).sum(1) + 0.5 * (d * self.matvec(d)).sum(1)

    def dense(self) -> torch.Tensor:
        """The full (B, n, n) Hessian of the model (for tests and small n)."""
        if self.H is not None:
            return self.H
        B, n = self.g.shape
        if self.Q is None or self.Q.shape[2] == 0:
            return self.g.new_zeros(B, n, n)
        return self.Q @ self.Hs @ self.Q.transpose(1, 2)

    def recentred(self, delta: torch.Tensor) -> Expansion:
        """The same quadratic written around a point shifted by -delta.

        If this expansion was taken at x_b = x + delta, the returned one is the model as a function
        of the total perturbation e = delta + d from x: f' + g'.e + 1/2 e.H e with
        g' = g - H delta and f' = f - g.delta + 1/2 delta.H delta. H, and with it the cached
        eigen-decomposition, is unchanged (g' stays in span[Q, g]); g_hat is recomputed from g'.
        The logits belong to the expansion point, which is no longer the origin: dropped.
        """
        Hd = self.matvec(delta)
        g2 = self.g - Hd
        f2 = self.f - (self.g * delta).sum(1) + 0.5 * (delta * Hd).sum(1)
        return Expansion(f2, g2, self.H, self.Q, self.Hs, self.source, None, self._eig)

    def reduced(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(basis P (B,n,k) or None, g_small (B,k), H_small (B,k,k)) holding the ball-only solutions.

        The trust-region and minimum-norm solutions lie in span{g, range(H)}; for the factored form
        that is span([Q, g]), so solving in the small space and mapping back with P is exact.
        Dense: P is None and the small problem is the full one.
        """
        if self.H is not None:
            return None, self.g, self.H
        B, n = self.g.shape
        cols = [self.g.unsqueeze(-1)] if self.Q is None else [self.Q, self.g.unsqueeze(-1)]
        M = torch.cat(cols, dim=2)
        P, R = torch.linalg.qr(M)                      # (B, n, r+1)
        # drop numerically dependent columns (e.g. g already in range(Q)) by zeroing them
        keep = R.diagonal(dim1=1, dim2=2).abs() > 1e-7 * R.diagonal(dim1=1, dim2=2).abs().amax(1, keepdim=True).clamp_min(1e-30)
        P = P * keep.unsqueeze(1)
        gs = torch.bmm(P.transpose(1, 2), self.g.unsqueeze(-1)).squeeze(-1)
        if self.Q is None or self.Q.shape[2] == 0:
            Hs = self.g.new_zeros(B, P.shape[2], P.shape[2])
        else:
            QtP = torch.bmm(self.Q.transpose(1, 2), P)
            Hs = QtP.transpose(1, 2) @ self.Hs @ QtP
            Hs = 0.5 * (Hs + Hs.transpose(1, 2))
        return P, gs, Hs
