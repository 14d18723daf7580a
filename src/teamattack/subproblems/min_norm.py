"""Minimum-norm step onto the quadratic model of the boundary (a second-order DeepFool step).

    minimise ||d||_2  s.t.  c + g.d + 1/2 d.H d <= 0          (c (B,) the current margin value)

One quadratic constraint and a strictly convex objective: by the S-lemma the Lagrangian dual is
exact. KKT: d(mu) = -mu (I + mu H)^{-1} g, I + mu H PSD, mu >= 0, constraint active (c > 0).
Writing lam = 1/mu, d(mu) = -(H + lam I)^{-1} g: the answer lies on the same curve as the TRS
solutions. With H = Q diag(e) Q^T and w = (Q^T g)^2 the constraint along the curve is

    h(mu) = c - 1/2 sum_i w_i mu (2 + mu e_i) / (1 + mu e_i)^2,    h'(mu) = -sum_i w_i/(1+mu e_i)^3 < 0,

decreasing on [0, mu_max), mu_max = 1/max(0, -e_min) (h is the derivative of the concave dual
function). A safeguarded Newton iteration (bracket + bisection) finds the root; from mu = 0 the
first step is mu = c/||g||^2, so H = 0 gives the DeepFool step -c g/||g||^2 exactly.
Special cases: c <= 0 -> d = 0. Hard case (e_min < 0 and h stays > 0 up to mu_max): move along
the e_min eigenvector until the constraint is met. Infeasible (the model's minimum stays > 0,
e.g. H positive definite with c > 1/2 g.H^{-1}g): return the model's minimiser -H^+ g with
feasible = False.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import batch_param, check_g, eps_of, tiny_of
from .trust_region import eigh_batched


@dataclass
class MinNormSolution:
    """d (B, n) (or (B, K, n)); mu (multiplier, inf for an unconstrained minimiser);
    feasible: the model constraint can be met (d meets it); hard_case; converged;
    value: c + g.d + 1/2 d.Hd (<= ~0 when feasible); iterations."""

    d: torch.Tensor
    mu: torch.Tensor
    feasible: torch.Tensor
    hard_case: torch.Tensor
    converged: torch.Tensor
    value: torch.Tensor
    iterations: int


def _terms(w, ev, mu):
    """(sum w f(mu), sum w f'(mu)) with f = mu(2+mu e)/(1+mu e)^2, stable for small and large mu."""
    m = mu.unsqueeze(-1)
    small = m <= 1
    lam = 1.0 / torch.where(small, torch.ones_like(m), m)
    a = torch.where(small, 1 + m * ev, lam + ev)            # (1 + mu e) or (lam + e)
    f = torch.where(small, m * (2 + m * ev) / a ** 2, (2 * lam + ev) / a ** 2)
    fp = torch.where(small, 2.0 / a ** 3, 2.0 * (lam / a) ** 3)
    return (w * f).sum(-1), (w * fp).sum(-1)


def _coef(ghat, ev, mu):
    m = mu.unsqueeze(-1)
    small = m <= 1
    big_lam = 1.0 / torch.where(small, torch.ones_like(m), m)
    return torch.where(small, -m * ghat / (1 + m * ev), -ghat / (big_lam + ev))


def min_norm_core(ghat, ev, c, max_iter: int = 200):
    """Eigen-coordinates: ghat (..., n), ev (..., n) ascending, c (...). Returns
    (coef, mu, feasible, hard, converged, iterations)."""
    ghat, ev = torch.broadcast_tensors(ghat, ev)
    lead = torch.broadcast_shapes(ghat.shape[:-1], c.shape)
    ghat, ev = ghat.expand(*lead, ghat.shape[-1]), ev.expand(*lead, ev.shape[-1])
    c = c.expand(lead)
    eps, tiny = eps_of(ghat), tiny_of(ghat)
    w = ghat * ghat
    g2 = w.sum(-1)
    ev1 = ev[..., 0]
    inf = torch.full_like(c, float("inf"))
    zeros = torch.zeros_like(c)
    pos = c > 0
    c_safe = torch.where(pos, c, torch.ones_like(c))
    scale = torch.maximum(ev.abs().amax(-1), g2 / c_safe)
    delta = 10.0 * eps * scale + tiny ** 0.5
    singular = ev1 <= delta

    # PD (not singular): can the constraint be met at all? h(mu = inf) = c - 1/2 g.H^{-1}g
    ev_pd = torch.where(ev > 0, ev, torch.ones_like(ev))
    h_inf = c - 0.5 * (w / ev_pd).sum(-1)
    infeasible_pd = pos & ~singular & (h_inf > 0)
    # singular / indefinite: the largest usable mu is 1/lam_h
    lam_h = torch.clamp(-ev1, min=0.0) + delta
    mu_h = 1.0 / lam_h
    f_h, _ = _terms(w, ev, mu_h)
    h_h = c - 0.5 * f_h
    hardish = pos & singular & (h_h > 0)

    # root finding on [0, hi] where h(hi) <= 0
    root = pos & ~infeasible_pd & ~hardish
    lo = zeros.clone()
    hi = torch.where(singular, mu_h, inf)
    mu = zeros.clone()
    converged = ~root
    rtol = 8.0 * eps
    its = 0
    for it in range(max_iter):
        if not bool((~converged).any()):
            break
        its = it + 1
        f, fp = _terms(w, ev, mu)
        h = c - 0.5 * f
        right = h <= 0
        lo = torch.where(~converged & ~right, mu, lo)
        hi = torch.where(~converged & right, mu, hi)
        done = (h.abs() <= rtol * (c.abs() + 0.5 * f.abs())) | \
               (torch.isfinite(hi) & ((hi - lo) <= rtol * hi.abs().clamp_min(tiny)))
        converged = converged | done
        new = mu + 2 * h / fp.clamp_min(tiny)      # Newton: mu - h/h', h' = -fp/2
        fallback = torch.where(torch.isinf(hi), torch.maximum(2 * lo, c_safe / g2.clamp_min(tiny)),
                               0.5 * (lo + hi))
        bad = ~torch.isfinite(new) | (new <= lo) | (new >= hi)
        new = torch.where(bad, fallback, new)
        mu = torch.where(converged, mu, new)
    # the feasible side of the bracket when it is (numerically) as good
    f_mu, _ = _terms(w, ev, mu)
    use_hi = root & (c - 0.5 * f_mu > 0) & torch.isfinite(hi) & ((hi - lo) <= 1e3 * eps * hi)
    mu = torch.where(use_hi, hi, mu)

    coef = _coef(ghat, ev, torch.where(root, mu, zeros))
    coef = torch.where(infeasible_pd.unsqueeze(-1), -ghat / ev_pd, coef)
    # hard / near-singular case: all but the e_min coordinate from lam_h, that one from the constraint
    coef_h = -ghat / (ev + lam_h.unsqueeze(-1))
    rest = coef_h[..., 1:]
    Cp = c + (ghat[..., 1:] * rest).sum(-1) + 0.5 * (ev[..., 1:] * rest * rest).sum(-1)
    b = ghat[..., 0]
    D = b * b - 2 * ev1 * Cp
    feas_h = hardish & (D >= 0)
    sgn = torch.where(b > 0, torch.ones_like(b), torch.where(b < 0, -torch.ones_like(b), torch.ones_like(b)))
    y = -sgn * 2 * Cp / (b.abs() + D.clamp_min(0).sqrt()).clamp_min(tiny)
    y = torch.where(feas_h, y, coef_h[..., 0])
    coef_h = torch.cat([y.unsqueeze(-1), rest], -1)
    coef = torch.where(hardish.unsqueeze(-1), coef_h, coef)
    coef = torch.where(pos.unsqueeze(-1), coef, torch.zeros_like(coef))

    mu_out = torch.where(root, mu, torch.where(hardish, mu_h, torch.where(infeasible_pd, inf, zeros)))
    feasible = ~(infeasible_pd | (hardish & ~feas_h))
    hard = feas_h & (ev1 < -delta)
    return coef, mu_out, feasible, hard, converged, its


def solve_min_norm_eig(g_hat: torch.Tensor, ev: torch.Tensor, Q: torch.Tensor | None, c,
                       max_iter: int = 200) -> MinNormSolution:
    """Min-norm step from H = Q diag(ev) Q^T (g_hat = Q^T g); c (B,) or (B, K) (then d (B, K, n))."""
    check_g(g_hat)
    B = g_hat.shape[0]
    cc = batch_param(c, B, g_hat, "c", allow_extra=True)
    ev = ev.to(g_hat)
    gh, e = (g_hat.unsqueeze(1), ev.unsqueeze(1)) if cc.dim() == 2 else (g_hat, ev)
    coef, mu, feas, hard, conv, its = min_norm_core(gh, e, cc, max_iter)
    value = cc + (gh * coef).sum(-1) + 0.5 * (e * coef * coef).sum(-1)
    if Q is None:
        d = coef
    elif cc.dim() == 2:
        d = torch.matmul(coef, Q.transpose(-1, -2))
    else:
        d = torch.matmul(Q, coef.unsqueeze(-1)).squeeze(-1)
    return MinNormSolution(d, mu, feas, hard, conv, value, its)


def solve_min_norm(g: torch.Tensor, H, c, max_iter: int = 200, k: int = 30) -> MinNormSolution:
    """minimise ||d|| s.t. c + g.d + 1/2 d.Hd <= 0; g (B, n), H (B, n, n) dense (or an hvp
    callable: then solved in a k-step Lanczos space from g), c number / (B,) / (B, K)."""
    check_g(g)
    if torch.is_tensor(H):
        g_hat, ev, Q = eigh_batched(H, g)
    elif callable(H):
        from .lanczos import lanczos
        g_hat, ev, Q = lanczos(g, H, k).ritz()
    else:
        raise TypeError("H must be a (B, n, n) tensor or an hvp callable")
    return solve_min_norm_eig(g_hat, ev, Q, c, max_iter)


def min_norm(g: torch.Tensor, H, c, max_iter: int = 200, k: int = 30) -> torch.Tensor:
    """d only, see solve_min_norm."""
    return solve_min_norm(g, H, c, max_iter, k).d


def min_norm_eig(g_hat, ev, Q, c, max_iter: int = 200) -> torch.Tensor:
    """d only, see solve_min_norm_eig."""
    return solve_min_norm_eig(g_hat, ev, Q, c, max_iter).d
