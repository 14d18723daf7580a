"""Minimum-norm step onto the quadratic model of the boundary (a second-order DeepFool step).

    minimise ||d||_2  s.t.  c + g.d + 1/2 d.H d <= 0          (c (B,) the current margin value)

One quadratic constraint and a strictly convex objective: by the S-lemma the Lagrangian dual is
exact. KKT: d(mu) = -mu (I + mu H)^{-1} g, I + mu H PSD, mu >= 0, constraint active (c > 0).
Writing lam = 1/mu, d(mu) = -(H + lam I)^{-1} g: the answer lies on the same curve as the TRS
solutions. With H = Q diag(e) Q^T and w = (Q^T g)^2 the constraint along the curve is

    h(mu) = c - 1/2 sum_i w_i mu (2 + mu e_i) / (1 + mu e_i)^2,    h'(mu) = -sum_i w_i/(1+mu e_i)^3 < 0,

decreasing on [0, mu_max), mu_max = 1/max(0, -e_min) (h is the derivative of the concave dual
function). The root is found by a safeguarded Newton iteration (bracket + bisection) in
u = log(lam + e_min), on log(c - h) = log c, which is nearly linear in u near the pole and far
from it; for H = 0 it is exactly linear, so the DeepFool step -c g/||g||^2 comes out exactly.
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


def _S(w, sh, sig, lam):
    """S = 1/2 g.(H+lam)^{-1}(2 lam + H)(H+lam)^{-1} g = c - h, and dS/dsig = -sum w lam/den^3,
    with den = sh + sig = e + lam (computed from the shift, exact near the pole)."""
    den = sh + sig.unsqueeze(-1)
    inv = 1.0 / den
    S = 0.5 * (w * (inv + lam.unsqueeze(-1) * inv * inv)).sum(-1)
    dS = -(w * lam.unsqueeze(-1) * inv ** 3).sum(-1)
    return S, dS


def min_norm_core(ghat, ev, c, max_iter: int = 200):
    """Eigen-coordinates: ghat (..., n), ev (..., n) ascending, c (...). Returns
    (coef, mu, feasible, hard, converged, iterations).

    The root of h = c - S(sig) = 0 is found in u = log(sig), sig = lam + ev1 = 1/mu + ev1 (the
    distance of lam from the pole): log S is close to linear in u both near the pole
    (S ~ k / sig^2) and far from it (S ~ ||g||^2 / sig), so Newton is fast and, for H = 0,
    exact in one step; a bracket with bisection in u keeps it safe.
    """
    ghat, ev = torch.broadcast_tensors(ghat, ev)
    lead = torch.broadcast_shapes(ghat.shape[:-1], c.shape)
    ghat, ev = ghat.expand(*lead, ghat.shape[-1]), ev.expand(*lead, ev.shape[-1])
    c = c.expand(lead)
    eps, tiny = eps_of(ghat), tiny_of(ghat)
    w = ghat * ghat
    g2 = w.sum(-1)
    ev1 = ev[..., 0]
    sh = (ev - ev1.unsqueeze(-1)).clamp_min(0.0)
    inf = torch.full_like(c, float("inf"))
    zeros = torch.zeros_like(c)
    pos = c > 0
    c_safe = torch.where(pos, c, torch.ones_like(c))
    scale = torch.maximum(ev.abs().amax(-1), g2 / c_safe)
    delta = 10.0 * eps * scale + tiny ** 0.5
    singular = ev1 <= delta

    # the left end: lam = 0 (H positive definite) or lam = max(0, -ev1) + delta
    sig_lo = torch.where(singular, torch.clamp(ev1, min=0.0) + delta, ev1)
    lam_lo = sig_lo - ev1
    S_lo, _ = _S(w, sh, sig_lo, lam_lo)
    stuck = pos & (S_lo < c)               # the curve never reaches the constraint
    infeasible_pd = stuck & ~singular
    hardish = stuck & singular
    root = pos & ~stuck

    # right end: S(sig) <= c (S ~ ||g||^2 / sig for large sig); expand until bracketed
    sig_hi = torch.maximum(2 * sig_lo, 2 * g2 / c_safe + 2 * ev.abs().amax(-1))
    for _ in range(60):
        S_hi, _ = _S(w, sh, sig_hi, sig_hi - ev1)
        need = root & (S_hi > c)
        if not bool(need.any()):
            break
        sig_hi = torch.where(need, 4 * sig_hi, sig_hi)
    u_lo = torch.log(sig_lo.clamp_min(tiny))
    u_hi = torch.log(sig_hi.clamp_min(tiny))
    log_c = torch.log(c_safe)
    u = u_lo.clone()
    converged = ~root
    rtol = 8.0 * eps
    its = 0
    for it in range(max_iter):
        if not bool((~converged).any()):
            break
        its = it + 1
        sig = torch.exp(u)
        S, dS = _S(w, sh, sig, sig - ev1)
        F = torch.log(S.clamp_min(tiny)) - log_c          # decreasing in u
        dF = sig * dS / S.clamp_min(tiny)
        left = F > 0
        u_lo = torch.where(~converged & left, u, u_lo)
        u_hi = torch.where(~converged & ~left, u, u_hi)
        step = -F / torch.where(dF < 0, dF, -torch.ones_like(dF))
        done = (F.abs() <= rtol) | ((u_hi - u_lo) <= rtol * (1 + u.abs())) | \
               (step.abs() <= rtol * (1 + u.abs()))
        converged = converged | done
        new = u + step
        bad = ~torch.isfinite(new) | (new < u_lo) | (new > u_hi) | (dF >= 0)
        new = torch.where(bad, 0.5 * (u_lo + u_hi), new)
        u = torch.where(converged, u, new)
    sig = torch.exp(u)
    # prefer the feasible side (S >= c) when the bracket is that tight
    S_u, _ = _S(w, sh, sig, sig - ev1)
    use_lo = root & (S_u < c) & ((u_hi - u_lo) <= 1e3 * eps * (1 + u.abs()))
    sig = torch.where(use_lo, torch.exp(u_lo), sig)
    sig = torch.where(root, sig, sig_lo)

    coef = -ghat / (sh + sig.unsqueeze(-1))
    # hard / near-singular case: the e_min coordinate from the constraint
    rest = coef[..., 1:]
    Cp = c + (ghat[..., 1:] * rest).sum(-1) + 0.5 * (ev[..., 1:] * rest * rest).sum(-1)
    b = ghat[..., 0]
    D = b * b - 2 * ev1 * Cp
    feas_h = hardish & (D >= 0)
    sgn = torch.where(b < 0, -torch.ones_like(b), torch.ones_like(b))
    y = -sgn * 2 * Cp / (b.abs() + D.clamp_min(0).sqrt()).clamp_min(tiny)
    y = torch.where(feas_h, y, coef[..., 0])
    coef = torch.cat([y.unsqueeze(-1), rest], -1)
    coef = torch.where(pos.unsqueeze(-1), coef, torch.zeros_like(coef))

    lam = sig - ev1
    mu = torch.where(lam > 0, 1.0 / lam.clamp_min(tiny), inf)
    mu_out = torch.where(root | hardish, mu, torch.where(infeasible_pd, inf, zeros))
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


def _root_sorted(brk: torch.Tensor, slope: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Smallest mu >= 0 with c - sum_i slope_i min(mu, brk_i) <= 0 (inf: none), by sorting the
    breakpoints: O(n log n), exact. Rows with c <= 0 get 0."""
    B, n = brk.shape
    order = brk.argsort(dim=1)
    b_s = brk.gather(1, order)
    sl_s = slope.gather(1, order)
    finite = torch.isfinite(b_s)
    sb_s = torch.where(finite, sl_s * b_s, torch.zeros_like(b_s))
    total = slope.sum(1, keepdim=True)
    sat_sl = sl_s.cumsum(1)              # after the k-th breakpoint the first k+1 coordinates sit at their bounds
    sat_sb = sb_s.cumsum(1)
    value_at = c[:, None] - torch.where(finite, b_s, torch.zeros_like(b_s)) * (total - sat_sl) - sat_sb
    value_at = torch.where(finite, value_at, torch.full_like(value_at, float("inf")))
    crossed = value_at <= 0
    hit = crossed.any(1)
    k = torch.where(hit, crossed.float().argmax(1), torch.full((B,), n, device=brk.device))
    before = (k - 1).clamp_min(0)[:, None]   # the root lies before breakpoint k
    prev_sl = torch.where(k > 0, sat_sl.gather(1, before)[:, 0], torch.zeros_like(c))
    prev_sb = torch.where(k > 0, sat_sb.gather(1, before)[:, 0], torch.zeros_like(c))
    mu = ((c - prev_sb) / (total[:, 0] - prev_sl).clamp_min(tiny_of(brk))).clamp_min(0.0)
    mu = torch.where(hit, mu, torch.full_like(mu, float("inf")))
    return torch.where(c <= 0, torch.zeros_like(mu), mu)


def _root_newton(brk: torch.Tensor, slope: torch.Tensor, sb: torch.Tensor, c: torch.Tensor,
                 skip: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same root by Newton's method from mu = 0 (sb = slope * brk, 0 where slope = 0; rows
    not in `skip` have a root; `skip` rows stay at 0): f(mu) = c - sum_i slope_i min(mu, brk_i) is convex, non-increasing
    and piecewise linear, so the iterates rise monotonically to the root; an iterate is the root
    once the next one saturates no further coordinate (f is linear between them). A few O(n)
    iterations on image inputs. Returns (mu, converged)."""
    total = slope.sum(1)
    mu = torch.zeros_like(c)
    done = skip.clone()
    prev = torch.full_like(c, -1.0)
    rows = torch.arange(len(c), device=c.device)   # the rows iterated (all, until most have finished)
    out_mu, out_done = mu.clone(), done.clone()
    for _ in range(max_iter + 1):
        finished = int(done.sum())           # one sync per iteration
        if finished == len(done):
            break
        if 2 * finished > len(done):   # iterate on the unfinished rows only (rows are independent)
            out_mu[rows], out_done[rows] = mu, done
            live = ~done
            rows, mu, done, prev = rows[live], mu[live], done[live], prev[live]
            brk, slope, sb, c, total = brk[live], slope[live], sb[live], c[live], total[live]
        sat = (brk <= mu[:, None]).to(slope.dtype)
        s_sl, s_sb = (sat * slope).sum(1), (sat * sb).sum(1)
        done = done | (s_sl == prev)                 # no new saturation since mu was computed
        rest = (c - s_sb).clamp_min(0.0)
        new = mu.maximum(rest / (total - s_sl).clamp_min(tiny_of(slope)))
        mu = torch.where(done, mu, new)
        prev = s_sl
    out_mu[rows], out_done[rows] = mu, done
    return out_mu, out_done


def min_norm_box(g: torch.Tensor, c, lower, upper, norm: str = "l2",
                 newton_iter: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact min ||d|| s.t. c + g.d <= 0 and lower <= d <= upper (lower <= 0 <= upper), L2 or Linf.

    The first-order minimum-norm step with the [0, 1] box. Convex; the optimum lies on the path
    d(mu) = clip(-mu w, lower, upper) with w = g (L2: the KKT conditions) or w = sign(g) (Linf: the
    best point of the cube of half-width mu is its FGSM vertex), for the smallest mu >= 0 with
    c + g.d(mu) <= 0. g.d(mu) = -sum_i slope_i min(mu, brk_i) is piecewise linear, convex and
    non-increasing in mu, with a breakpoint brk_i where coordinate i reaches its bound, so mu is
    found exactly: by Newton's method (finite, a few O(n) steps; `newton_iter` at most), rows it
    has not finished by sorting the breakpoints (O(n log n)). c <= 0: d = 0. If even the vertex
    clip(-inf w) leaves c + g.d > 0, that vertex is returned (the closest the box allows to the
    half-space) with feasible = False.

    g (B, n); c a number or (B,); bounds numbers, (n,) or (B, n); norm "l2" or "linf".
    Returns (d (B, n), feasible (B,)).
    """
    check_g(g)
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    B, n = g.shape
    c = batch_param(c, B, g, "c")
    lo = torch.as_tensor(lower, dtype=g.dtype, device=g.device).expand_as(g)
    hi = torch.as_tensor(upper, dtype=g.dtype, device=g.device).expand_as(g)
    # elementwise arithmetic rather than torch.where: several times faster on CPU
    sgn = torch.sign(g)
    w = g if norm == "l2" else sgn
    room = 0.5 * ((1.0 + sgn) * (-lo) + (1.0 - sgn) * hi)  # how far -mu w can go before its bound
    g_abs = g.abs()
    # slope: -d(g.d)/d mu while coordinate i is free (|g| |w|); sb = slope * brk: what i gives when
    # saturated; brk: where it saturates (L2: inf / nan where g = 0; there slope = sb = 0, so no
    # coordinate with g = 0 ever counts, whatever its brk)
    slope = g_abs * g_abs if norm == "l2" else g_abs
    sb = g_abs * room
    brk = room / g_abs if norm == "l2" else room
    feasible = (c - sb.sum(1)) <= 0                        # the vertex meets the constraint
    mu, done = _root_newton(brk, slope, sb, c, ~feasible | (c <= 0), newton_iter)
    if not bool(done.all()):
        left = (~done).nonzero().squeeze(1)
        b_left = torch.where(slope[left] > 0, brk[left], torch.full_like(brk[left], float("inf")))
        mu[left] = _root_sorted(b_left, slope[left], c[left])
    # infeasible rows: the vertex (mu = the largest float; g = 0 coordinates stay at 0)
    mu = torch.where(feasible | (c <= 0), mu, torch.full_like(mu, torch.finfo(g.dtype).max))
    d = torch.minimum(torch.maximum(-mu[:, None] * w, lo), hi)
    return d, feasible | (c <= 0)
