"""The second-order model of an objective around a batch of inputs.

phi(d) = f + g.d + 1/2 d.H d per example, with H stored in one of two forms:

- dense:    H (B, n, n)                       (exact Hessian of small inputs)
- factored: H = Q Hs Q^T, Q (B, n, r), Hs (B, r, r)
            (exact low-rank Hessian of nets whose smooth layers sit on top, Gauss-Newton, or the
            rank-k Lanczos approximation; r = 0 is the first-order model H = 0)

Every curvature source returns an `Expansion`; subproblem solvers only need `matvec` and, for
the ball-only problems, the small dense problem of `reduced()` in which the solution lies exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Expansion:
    f: torch.Tensor                 # (B,) objective value at the expansion point
    g: torch.Tensor                 # (B, n) gradient
    H: torch.Tensor | None = None   # (B, n, n) dense Hessian, or None
    Q: torch.Tensor | None = None   # (B, n, r) basis of the factored form
    Hs: torch.Tensor | None = None  # (B, r, r) small symmetric matrix of the factored form
    kind: str = "none"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The sources differentiate through the model, whose parameters require grad: without this
        # every tensor derived from the expansion would keep that autograd graph (and its memory)
        # alive for the rest of the attack.
        for name in ("f", "g", "H", "Q", "Hs"):
            t = getattr(self, name)
            if t is not None and t.requires_grad:
                setattr(self, name, t.detach())

    @property
    def n(self) -> int:
        return self.g.shape[1]

    @property
    def rank(self) -> int:
        if self.H is not None:
            return self.n
        return 0 if self.Q is None else self.Q.shape[2]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for v (B, n)."""
        if self.H is not None:
            return torch.bmm(self.H, v.unsqueeze(-1)).squeeze(-1)
        if self.Q is None or self.Q.shape[2] == 0:
            return torch.zeros_like(v)
        w = torch.bmm(self.Q.transpose(1, 2), v.unsqueeze(-1))
        return torch.bmm(self.Q, torch.bmm(self.Hs, w)).squeeze(-1)

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

    def small_eig(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(P, g_hat, ev, W) of the reduced problem: H_small = W diag(ev) W^T, g_hat = W^T g_small.

        Cached: the radius search solves many radii from this one decomposition.
        """
        if "_eig" not in self.info:
            P, gs, Hs = self.reduced()
            ev, W = torch.linalg.eigh(Hs)
            g_hat = torch.bmm(W.transpose(1, 2), gs.unsqueeze(-1)).squeeze(-1)
            self.info["_eig"] = (P, g_hat, ev, W)
        return self.info["_eig"]

    def model(self, d: torch.Tensor) -> torch.Tensor:
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

    def select(self, idx: torch.Tensor) -> Expansion:
        """The expansion of a subset of the batch."""
        pick = lambda t: None if t is None else t[idx]
        return Expansion(self.f[idx], self.g[idx], pick(self.H), pick(self.Q), pick(self.Hs), self.kind,
                         {k: v for k, v in self.info.items() if not k.startswith("_")})

    def recentred(self, delta: torch.Tensor) -> Expansion:
        """The same quadratic written around a point shifted by -delta.

        If this expansion was taken at x_b = x + delta, the returned one is the model as a function
        of the total perturbation e = delta + d from x: f' + g'.e + 1/2 e.H e with
        g' = g - H delta and f' = f - g.delta + 1/2 delta.H delta.
        """
        Hd = self.matvec(delta)
        g2 = self.g - Hd
        f2 = self.f - (self.g * delta).sum(1) + 0.5 * (delta * Hd).sum(1)
        return Expansion(f2, g2, self.H, self.Q, self.Hs, self.kind, dict(self.info))

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
