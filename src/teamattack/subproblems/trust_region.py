"""The trust-region subproblem (TRS), solved to GLOBAL optimality, batched.

    minimise  phi(d) = g.d + 1/2 d.H d   s.t.  ||d||_2 <= radius          (H symmetric, any sign)

Optimality (Moré-Sorensen; no duality gap even for indefinite H): d is a global minimiser iff
for some lam >= 0:  (H + lam I) d = -g,  H + lam I PSD,  lam (||d|| - radius) = 0.

Method: H = Q diag(ev) Q^T once (torch.linalg.eigh, batched), then per example and per radius a
safeguarded Newton iteration on the secular equation psi(lam) = 1/||d(lam)|| - 1/radius with
d(lam) = -Q diag(1/(ev+lam)) Q^T g, vectorised over every (example, radius) pair with masks.
psi is concave and increasing on (-ev_min, inf), so Newton started left of the root converges
monotonically; a bracket [lo, hi] with a bisection fallback guards against rounding.
The hard case (g has (almost) no component on the ev_min eigenspace, so ||d(lam)|| stays below
the radius as lam -> -ev_min) is detected and finished by moving along the ev_min eigenvector to
the boundary, the sign chosen to decrease g.d.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import batch_param, check_g, eps_of, shrink_into_ball, tiny_of


@dataclass
class TRSolution:
    """Solution of a batch of trust-region subproblems.

    d: (B, n) or (B, K, n); lam: multiplier, same leading shape as the radii; interior: lam = 0 and
    ||d|| < radius; hard_case: finished along the ev_min eigenvector; converged: the secular
    iteration met its tolerance (always True for interior / hard / zero-radius cases);
    value: phi(d) = g.d + 1/2 d.Hd; iterations: Newton iterations of the slowest problem.
    """

    d: torch.Tensor
    lam: torch.Tensor
    interior: torch.Tensor
    hard_case: torch.Tensor
    converged: torch.Tensor
    value: torch.Tensor
    iterations: int


def _secular_norm(w: torch.Tensor, ev: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return (w / (ev + lam.unsqueeze(-1)) ** 2).sum(-1).sqrt()


def trs_core(ghat: torch.Tensor, ev: torch.Tensor, r: torch.Tensor, max_iter: int = 100):
    """TRS in eigen-coordinates. ghat (..., n), ev (..., n) ascending (broadcastable), r (...).

    Returns (coef (..., n) = Q^T d, lam, interior, hard, converged, iterations).
    """
    ghat, ev = torch.broadcast_tensors(ghat, ev)
    lead = torch.broadcast_shapes(ghat.shape[:-1], r.shape)
    ghat, ev = ghat.expand(*lead, ghat.shape[-1]), ev.expand(*lead, ev.shape[-1])
    r = r.expand(lead)
    eps, tiny = eps_of(ghat), tiny_of(ghat)
    w = ghat * ghat
    gnorm = w.sum(-1).sqrt()
    ev1 = ev[..., 0]
    zero_r = r <= 0
    r_safe = torch.where(zero_r, torch.ones_like(r), r)
    scale = torch.maximum(ev.abs().amax(-1), gnorm / r_safe)
    delta = 10.0 * eps * scale + tiny ** 0.5

    # Work with the shift from the pole, sig = lam + ev1, and the gaps sh = ev - ev1 (sh_0 = 0):
    # ev_i + lam = sh_i + sig keeps full relative precision when lam sits next to -ev1.
    sh = (ev - ev1.unsqueeze(-1)).clamp_min(0.0)
    zeros = torch.zeros_like(r)
    # interior: H positive definite and the Newton point inside
    n0 = torch.where(ev1 > 0, _secular_norm(w, torch.where(ev > 0, ev, torch.ones_like(ev)), zeros),
                     torch.full_like(r, float("inf")))
    interior = (ev1 > 0) & (n0 <= r) & ~zero_r
    # near-singular / indefinite: test the hard case at lam_h = max(0, -ev1) + delta
    singular = ev1 <= delta
    sig_h = torch.clamp(ev1, min=0.0) + delta
    n_h = _secular_norm(w, sh, sig_h)
    hard = singular & (n_h <= r) & ~interior & ~zero_r
    boundary = ~interior & ~hard & ~zero_r

    lo = torch.where(singular, sig_h, torch.clamp(ev1, min=0.0))
    # bounds on the root: ||d|| <= ||g|| / (ev1 + lam) and ||d|| >= |ghat_i| / (ev_i + lam)
    hi = torch.maximum(lo, gnorm / r_safe)
    lo = torch.maximum(lo, (ghat.abs() / r_safe.unsqueeze(-1) - sh).amax(-1))
    lo = torch.minimum(lo, hi)
    sig = lo.clone()
    rtol = 4.0 * eps
    converged = ~boundary
    iterations = 0
    for it in range(max_iter):
        if not bool((~converged).any()):
            break
        iterations = it + 1
        den = sh + sig.unsqueeze(-1)
        nrm2 = (w / den ** 2).sum(-1)
        nrm = nrm2.sqrt()
        q2 = (w / den ** 3).sum(-1)
        left = nrm > r  # psi < 0
        lo = torch.where(~converged & left, sig, lo)
        hi = torch.where(~converged & ~left, sig, hi)
        step = (nrm2 / q2) * (nrm - r) / r_safe
        # done: on the sphere, or the bracket / the Newton step is at machine precision in sig
        done = ((nrm - r).abs() <= rtol * r) | ((hi - lo) <= rtol * hi.abs().clamp_min(tiny)) \
            | (step.abs() <= rtol * sig.abs())
        converged = converged | done
        new = sig + step
        bad = ~torch.isfinite(new) | (new < lo) | (new > hi) | (left & (new <= sig) & ~done)
        new = torch.where(bad, 0.5 * (lo + hi), new)
        sig = torch.where(converged, sig, new)

    sig_out = torch.where(hard, sig_h, sig)
    lam_out = torch.where(interior, zeros, sig_out - ev1)
    lam_out = torch.where(zero_r, torch.clamp(-ev1, min=0.0), lam_out)
    coef = -ghat / (sh + sig_out.unsqueeze(-1))
    coef = torch.where(interior.unsqueeze(-1), -ghat / torch.where(ev > 0, ev, torch.ones_like(ev)), coef)
    # hard case: put the rest of the radius on the ev_min eigenvector, sign decreasing g.d
    rest2 = (coef[..., 1:] ** 2).sum(-1)
    tau = (r * r - rest2).clamp_min(0.0).sqrt()
    sgn = torch.where(ghat[..., 0] > 0, -torch.ones_like(tau), torch.ones_like(tau))
    c0 = torch.where(hard, sgn * tau, coef[..., 0])
    coef = torch.cat([c0.unsqueeze(-1), coef[..., 1:]], -1)
    # boundary (and hard): exactly on the sphere; every case: never outside it
    nrm = coef.norm(dim=-1)
    on_sphere = boundary | hard
    fac = torch.where(on_sphere & (nrm > 0), r / nrm.clamp_min(tiny), torch.ones_like(nrm))
    fac = torch.where(~on_sphere & (nrm > r), r / nrm.clamp_min(tiny), fac)
    coef = coef * fac.unsqueeze(-1)
    coef = torch.where(zero_r.unsqueeze(-1), torch.zeros_like(coef), coef)
    return coef, lam_out, interior, hard, converged, iterations


def _value_eig(ghat, ev, coef):
    return (ghat * coef).sum(-1) + 0.5 * (ev * coef * coef).sum(-1)


def solve_trust_region_eig(g_hat: torch.Tensor, ev: torch.Tensor, Q: torch.Tensor | None, radii,
                           max_iter: int = 100) -> TRSolution:
    """TRS from a precomputed eigen-decomposition H = Q diag(ev) Q^T, for many radii at once.

    g_hat = Q^T g (B, n); ev (B, n) ascending; Q (B, n, m) or None (then d is returned in
    eigen-coordinates, i.e. Q^T d); radii (B,) or (B, K) (numbers accepted). With (B, K) radii
    d is (B, K, n): every radius is solved in the same vectorised pass, no new decomposition.
    Q may have fewer rows than columns' worth (m == len(ev)) -- e.g. Ritz vectors (B, n, k).
    """
    check_g(g_hat)
    B = g_hat.shape[0]
    r = batch_param(radii, B, g_hat, "radii", allow_extra=True)
    if torch.any(r < 0):
        raise ValueError("radii must be >= 0")
    ev = ev.to(g_hat)
    if r.dim() == 2:
        gh, e = g_hat.unsqueeze(1), ev.unsqueeze(1)
    else:
        gh, e = g_hat, ev
    coef, lam, interior, hard, conv, its = trs_core(gh, e, r, max_iter=max_iter)
    value = _value_eig(gh, e, coef)
    if Q is None:
        d = coef
    elif r.dim() == 2:
        d = torch.matmul(coef, Q.transpose(-1, -2))
    else:
        d = torch.matmul(Q, coef.unsqueeze(-1)).squeeze(-1)
    d = shrink_into_ball(d, r)  # rounding in Q coef can overshoot the radius by an ulp
    return TRSolution(d, lam, interior, hard, conv, value, its)


def trust_region_eig(g_hat: torch.Tensor, ev: torch.Tensor, Q: torch.Tensor | None, radii,
                     max_iter: int = 100) -> torch.Tensor:
    """d only, see solve_trust_region_eig. radii (B,) -> (B, n); radii (B, K) -> (B, K, n)."""
    return solve_trust_region_eig(g_hat, ev, Q, radii, max_iter).d


def eigh_batched(H: torch.Tensor, g: torch.Tensor):
    """(g_hat, ev, Q) for H (B, n, n) symmetric (symmetrised here)."""
    H = H.to(g)
    if H.dim() == 2:
        H = H.expand(g.shape[0], *H.shape)
    Hs = 0.5 * (H + H.transpose(-1, -2))
    ev, Q = torch.linalg.eigh(Hs)
    g_hat = torch.matmul(Q.transpose(-1, -2), g.unsqueeze(-1)).squeeze(-1)
    return g_hat, ev, Q


def solve_trust_region(g: torch.Tensor, H: torch.Tensor, radius, max_iter: int = 100) -> TRSolution:
    """Global minimiser of g.d + 1/2 d.Hd s.t. ||d|| <= radius; g (B, n), H (B, n, n) dense.

    radius: number, (B,) or (B, K) (then d is (B, K, n), one eigen-decomposition for all K).
    For an operator H use trust_region_lanczos.
    """
    check_g(g)
    if not torch.is_tensor(H):
        raise TypeError("solve_trust_region needs a dense H (B, n, n); for an hvp callable use "
                        "trust_region_lanczos")
    g_hat, ev, Q = eigh_batched(H, g)
    return solve_trust_region_eig(g_hat, ev, Q, radius, max_iter)


def trust_region(g: torch.Tensor, H: torch.Tensor, radius, max_iter: int = 100) -> torch.Tensor:
    """d only, see solve_trust_region."""
    return solve_trust_region(g, H, radius, max_iter).d
