"""Tests of teamattack.subproblems against brute force, KKT conditions and each other."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import teamattack.subproblems as sp
from teamattack.subproblems.box import steepest_descent_point

DT = torch.float64
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BRUTE = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**31 - 1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small problems: torch's intra-op threads only add contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def mv(H, v):
    return (H @ v.unsqueeze(-1)).squeeze(-1)


def phi(g, H, d):
    return (g * d).sum(-1) + 0.5 * (d * mv(H, d)).sum(-1)


def rand_problem(rng, B, n, kind="indef"):
    A = rng.standard_normal((B, n, n))
    H = 0.5 * (A + A.transpose(0, 2, 1))
    if kind == "pd":
        H = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(n)
    elif kind == "psd":  # singular PSD
        A[:, :, 0] = 0
        H = A @ A.transpose(0, 2, 1)
    g = rng.standard_normal((B, n))
    return torch.tensor(g, dtype=DT), torch.tensor(H, dtype=DT)


def hard_case(rng, B, n, scale=1.0):
    """Indefinite H with g orthogonal to the ev_min eigenvector (and a large radius)."""
    ev = np.sort(rng.standard_normal((B, n)) * 2, -1)
    ev[:, 0] = -abs(ev[:, 0]) - 0.5
    Q, _ = np.linalg.qr(rng.standard_normal((B, n, n)))
    H = Q @ (ev[:, :, None] * Q.transpose(0, 2, 1))
    c = rng.standard_normal((B, n)) * scale
    c[:, 0] = 0
    g = (Q @ c[:, :, None])[..., 0]
    return torch.tensor(g, dtype=DT), torch.tensor(H, dtype=DT)


# --------------------------------------------------------------------- brute force references
def brute_trs(g, H, r, starts=20, rng=None):
    rng = rng or np.random.default_rng(0)
    n = len(g)
    cons = [{"type": "ineq", "fun": lambda d: r * r - d @ d, "jac": lambda d: -2 * d}]
    best = 0.0
    f = lambda d: g @ d + 0.5 * d @ H @ d
    jac = lambda d: g + H @ d
    for _ in range(starts):
        x0 = rng.standard_normal(n)
        x0 *= r * rng.uniform() ** (1 / n) / np.linalg.norm(x0)
        res = minimize(f, x0, jac=jac, constraints=cons, method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
        if res.x @ res.x <= r * r * (1 + 1e-9):
            best = min(best, res.fun)
    if n == 2:  # dense boundary sampling too
        th = np.linspace(0, 2 * np.pi, 200001)
        P = r * np.stack([np.cos(th), np.sin(th)], 1)
        best = min(best, (P @ g + 0.5 * np.einsum("ij,jk,ik->i", P, H, P)).min())
    return best


def brute_min_norm(g, H, c, starts=30, rng=None):
    rng = rng or np.random.default_rng(0)
    n = len(g)
    cons = [{"type": "ineq", "fun": lambda d: -(c + g @ d + 0.5 * d @ H @ d), "jac": lambda d: -(g + H @ d)}]
    best = np.inf
    for _ in range(starts):
        x0 = rng.standard_normal(n) * rng.uniform(0.1, 5)
        res = minimize(lambda d: d @ d, x0, jac=lambda d: 2 * d, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-15, "maxiter": 1000})
        if c + g @ res.x + 0.5 * res.x @ H @ res.x <= 1e-9:
            best = min(best, np.linalg.norm(res.x))
    return best


def kkt_trs(g, H, r, s, tol=1e-9):
    scale = 1 + H.abs().amax((1, 2)) * r + g.norm(dim=1)
    res = mv(H, s.d) + s.lam[:, None] * s.d + g
    assert (res.norm(dim=1) <= tol * scale).all(), res.norm(dim=1)
    assert (s.lam >= 0).all()
    ev = torch.linalg.eigvalsh(H)
    assert (ev[:, 0] + s.lam >= -tol * scale).all()
    assert ((s.lam * (s.d.norm(dim=1) - r)).abs() <= tol * scale * (1 + s.lam)).all()
    assert (s.d.norm(dim=1) <= r * (1 + 1e-12)).all()


# --------------------------------------------------------------------- trust region
@BRUTE
@given(seeds, st.integers(2, 6), st.sampled_from(["indef", "pd", "psd"]))
def test_trs_vs_brute_force_and_kkt(seed, n, kind):
    rng = np.random.default_rng(seed)
    g, H = rand_problem(rng, 3, n, kind)
    r = torch.tensor(rng.uniform(0.05, 3, 3), dtype=DT)
    s = sp.solve_trust_region(g, H, r)
    kkt_trs(g, H, r, s)
    val = phi(g, H, s.d)
    assert torch.allclose(val, s.value, atol=1e-10)
    for b in range(3):
        ref = brute_trs(g[b].numpy(), H[b].numpy(), float(r[b]), starts=8, rng=rng)
        assert float(val[b]) <= ref + 1e-8 * (1 + abs(ref))


@BRUTE
@given(seeds, st.integers(2, 6))
def test_trs_hard_case(seed, n):
    rng = np.random.default_rng(seed)
    g, H = hard_case(rng, 3, n, scale=0.1)
    r = torch.tensor(rng.uniform(2, 5, 3), dtype=DT)
    s = sp.solve_trust_region(g, H, r)
    assert s.hard_case.all()
    kkt_trs(g, H, r, s)
    assert torch.allclose(s.d.norm(dim=1), r)
    val = phi(g, H, s.d)
    for b in range(3):
        ref = brute_trs(g[b].numpy(), H[b].numpy(), float(r[b]), starts=8, rng=rng)
        assert float(val[b]) <= ref + 1e-8 * (1 + abs(ref))


@pytest.mark.parametrize("tiny", [1e-14, 1e-10, 1e-6, 1e-3])
def test_trs_near_hard_case(tiny):
    # g has a tiny component on the ev_min eigenvector: Newton next to the pole must converge
    rng = np.random.default_rng(21)
    g, H = hard_case(rng, 4, 6, scale=0.1)
    _, Q = torch.linalg.eigh(H)
    g = g + tiny * Q[:, :, 0]
    r = torch.tensor([0.2, 1.0, 3.0, 6.0], dtype=DT)
    s = sp.solve_trust_region(g, H, r)
    assert s.converged.all() and s.iterations < 40
    kkt_trs(g, H, r, s, tol=1e-8)
    val = phi(g, H, s.d)
    for b in range(4):
        ref = brute_trs(g[b].numpy(), H[b].numpy(), float(r[b]), starts=6, rng=rng)
        assert float(val[b]) <= ref + 1e-8 * (1 + abs(ref))


def test_trs_special_cases():
    n = 4
    g = torch.zeros(3, n, dtype=DT)
    H = torch.diag_embed(torch.tensor([[1., 2, 3, 4], [-1., 2, 3, 4], [0., 0, 0, 0]], dtype=DT))
    s = sp.solve_trust_region(g, H, 2.0)
    assert torch.equal(s.d[0], torch.zeros(n, dtype=DT)) and s.interior[0]
    assert torch.allclose(s.d[1].abs(), torch.tensor([2., 0, 0, 0], dtype=DT))  # min eigvec step
    assert phi(g, H, s.d)[2] == 0
    # zero radius -> zero step
    g2 = torch.randn(2, n, dtype=DT)
    assert torch.equal(sp.trust_region(g2, H[:2], 0.0), torch.zeros(2, n, dtype=DT))
    # H = 0: the steepest-descent step to the boundary
    d = sp.trust_region(g2, torch.zeros(2, n, n, dtype=DT), torch.tensor([0.5, 2.0], dtype=DT))
    ref = -g2 / g2.norm(dim=1, keepdim=True) * torch.tensor([[0.5], [2.0]], dtype=DT)
    assert torch.allclose(d, ref, atol=1e-14)


def test_trs_mixed_batch_equals_alone():
    rng = np.random.default_rng(3)
    n = 5
    gi, Hi = rand_problem(rng, 1, n, "pd")            # interior with a big radius
    gb, Hb = rand_problem(rng, 1, n, "indef")         # boundary
    gh, Hh = hard_case(rng, 1, n, scale=0.1)          # hard
    gz, Hz = rand_problem(rng, 1, n, "psd")
    g = torch.cat([gi, gb, gh, gz])
    H = torch.cat([Hi, Hb, Hh, Hz])
    r = torch.tensor([100.0, 0.7, 4.0, 0.3], dtype=DT)
    s = sp.solve_trust_region(g, H, r)
    assert s.interior.tolist() == [True, False, False, False]
    assert s.hard_case.tolist() == [False, False, True, False]
    for b in range(4):
        alone = sp.solve_trust_region(g[b:b + 1], H[b:b + 1], r[b:b + 1])
        assert torch.allclose(alone.d[0], s.d[b], atol=1e-12)
        assert torch.allclose(alone.lam[0], s.lam[b], atol=1e-12)


def test_trs_many_radii_one_decomposition():
    rng = np.random.default_rng(4)
    g, H = rand_problem(rng, 4, 6, "indef")
    radii = torch.tensor(rng.uniform(0.01, 4, (4, 7)), dtype=DT)
    g_hat, ev, Q = sp.eigh_batched(H, g)
    D = sp.trust_region_eig(g_hat, ev, Q, radii)
    assert D.shape == (4, 7, 6)
    for j in range(7):
        assert torch.allclose(D[:, j], sp.trust_region(g, H, radii[:, j]), atol=1e-12)
    # (B, K) radii straight through solve_trust_region too
    s = sp.solve_trust_region(g, H, radii)
    assert s.d.shape == (4, 7, 6) and s.lam.shape == (4, 7)


def test_trs_float32_smoke():
    torch.manual_seed(0)
    B, n = 8, 50
    A = torch.randn(B, n, n)
    H = 0.5 * (A + A.transpose(1, 2))
    g = torch.randn(B, n)
    r = torch.rand(B) + 0.1
    s = sp.solve_trust_region(g, H, r)
    assert s.d.dtype == torch.float32 and s.converged.all()
    res = mv(H, s.d) + s.lam[:, None] * s.d + g
    assert (res.norm(dim=1) <= 1e-3 * (1 + g.norm(dim=1))).all()
    assert (s.d.norm(dim=1) <= r * (1 + 1e-5)).all()
    ref = sp.trust_region(g.double(), H.double(), r.double())
    assert (phi(g.double(), H.double(), s.d.double()) - phi(g.double(), H.double(), ref)).abs().max() < 1e-3
    d = sp.trust_region_box(g, H, r, -0.05, 0.05, iters=50)
    assert d.dtype == torch.float32 and (d.abs() <= 0.05).all()
    m = sp.solve_min_norm(g, H, torch.rand(B))
    assert m.d.dtype == torch.float32 and m.feasible.all() and (m.value.abs() < 1e-3).all()


# --------------------------------------------------------------------- Lanczos
@SETTINGS
@given(seeds, st.integers(2, 8), st.sampled_from(["indef", "pd"]))
def test_lanczos_full_equals_exact(seed, n, kind):
    rng = np.random.default_rng(seed)
    g, H = rand_problem(rng, 3, n, kind)
    r = torch.tensor(rng.uniform(0.05, 3, 3), dtype=DT)
    s = sp.trust_region_lanczos(g, lambda V: mv(H, V), r, k=n)
    ref = sp.solve_trust_region(g, H, r)
    assert torch.allclose(phi(g, H, s.d), ref.value, atol=1e-9)
    assert torch.allclose(s.d, ref.d, atol=1e-6)
    assert (s.hvps <= n).all()


@SETTINGS
@given(seeds, st.integers(1, 6))
def test_lanczos_beats_cauchy(seed, k):
    rng = np.random.default_rng(seed)
    n = 30
    g, H = rand_problem(rng, 4, n, "indef")
    r = torch.tensor(rng.uniform(0.05, 3, 4), dtype=DT)
    s = sp.trust_region_lanczos(g, lambda V: mv(H, V), r, k=k)
    assert (s.hvps == k).all() and (s.d.norm(dim=1) <= r * (1 + 1e-12)).all()
    gHg = (g * mv(H, g)).sum(1)
    gn = g.norm(dim=1)
    t = torch.where(gHg > 0, torch.minimum(gn ** 2 / gHg.clamp_min(1e-300), r / gn), r / gn)
    cauchy = -t[:, None] * g
    assert (phi(g, H, s.d) <= phi(g, H, cauchy) + 1e-10).all()


def test_lanczos_breakdown_and_reuse():
    # H with 2 distinct eigenvalues: the Krylov space from g is invariant after 2 steps
    n = 10
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=DT))
    ev = torch.tensor([-1.0] * 5 + [2.0] * 5, dtype=DT)
    H1 = Q @ torch.diag(ev) @ Q.T
    H = torch.stack([H1, torch.diag(torch.linspace(-1, 1, n, dtype=DT))])
    g = torch.randn(2, n, dtype=DT)
    basis = sp.lanczos(g, lambda V: mv(H, V), 8)
    assert basis.k_eff.tolist() == [2, 8]
    V, T = basis  # unpacks as (V, T)
    assert V.shape == (2, n, 8) and T.shape == (2, 8, 8)
    assert torch.allclose(V[0].T @ V[0], torch.diag(torch.tensor([1.0] * 2 + [0.0] * 6, dtype=DT)), atol=1e-12)
    r = torch.tensor([[0.5, 3.0], [0.5, 3.0]], dtype=DT)
    D = sp.trust_region_krylov(basis, r).d
    ref = sp.trust_region(g[:1], H[:1], r[:1, 0])
    assert torch.allclose(D[0, 0], ref[0], atol=1e-10)
    assert (D.norm(dim=-1) <= r * (1 + 1e-12)).all()
    # g = 0 with negative curvature: the random start still finds it
    s = sp.trust_region_lanczos(torch.zeros(1, n, dtype=DT), lambda V: mv(H[1:], V), 1.0, k=n)
    assert torch.allclose(phi(torch.zeros(1, n, dtype=DT), H[1:], s.d), torch.tensor([-0.5], dtype=DT))


# --------------------------------------------------------------------- ball and box
def brute_projection(z, r, lo, up):
    cons = [{"type": "ineq", "fun": lambda d: r * r - d @ d, "jac": lambda d: -2 * d}]
    res = minimize(lambda d: 0.5 * (d - z) @ (d - z), np.clip(z, lo, up) * 0, jac=lambda d: d - z,
                   bounds=list(zip(lo, up)), constraints=cons, method="SLSQP",
                   options={"ftol": 1e-15, "maxiter": 1000})
    return res.x


@SETTINGS
@given(seeds, st.integers(1, 6))
def test_project_ball_box_vs_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    B = 4
    z = rng.standard_normal((B, n)) * rng.uniform(0.1, 3)
    lo = -rng.uniform(0, 1, (B, n)) * (rng.uniform(size=(B, n)) > 0.1)
    up = rng.uniform(0, 1, (B, n)) * (rng.uniform(size=(B, n)) > 0.1)
    r = rng.uniform(0, 2, B)
    r[0] = 0.0
    d = sp.project_ball_box(torch.tensor(z), torch.tensor(r), torch.tensor(lo), torch.tensor(up))
    for b in range(B):
        ref = brute_projection(z[b], r[b], lo[b], up[b])
        np.testing.assert_allclose(d[b].numpy(), ref, atol=2e-6)
    assert (d.norm(dim=1) <= torch.tensor(r)).all()
    assert ((d >= torch.tensor(lo)) & (d <= torch.tensor(up))).all()


def test_project_ball_box_inside_is_identity():
    z = torch.tensor([[0.1, -0.2, 0.05]], dtype=DT)
    assert torch.equal(sp.project_ball_box(z, 1.0, -1.0, 1.0), z)


@SETTINGS
@given(seeds, st.integers(2, 12), st.sampled_from(["indef", "pd", "psd"]), st.booleans())
def test_trust_region_box_feasible_and_no_worse_than_starts(seed, n, kind, use_hvp):
    rng = np.random.default_rng(seed)
    B = 4
    g, H = rand_problem(rng, B, n, kind)
    x = torch.tensor(rng.uniform(0, 1, (B, n)))
    lo, up = -x, 1 - x
    r = torch.tensor(rng.uniform(0.05, 2, B))
    op = (lambda V: mv(H, V)) if use_hvp else H
    d = sp.trust_region_box(g, op, r, lo, up, iters=60, lanczos_k=n)
    assert (d.norm(dim=1) <= r * (1 + 1e-12)).all()
    assert ((d >= lo) & (d <= up)).all()
    hvp = lambda V: mv(H, V)
    d_trs = sp.trust_region(g, H, r)
    s1 = sp.project_ball_box(d_trs, r, lo, up)
    s2 = steepest_descent_point(g, hvp, r, lo, up)
    f = phi(g, H, d)
    assert (f <= torch.minimum(phi(g, H, s1), phi(g, H, s2)) + 1e-9).all()
    inactive = ((d_trs >= lo) & (d_trs <= up)).all(1)
    if not use_hvp:
        assert torch.equal(d[inactive], d_trs[inactive])


def test_trust_region_box_inactive_returns_trs_exactly():
    rng = np.random.default_rng(7)
    g, H = rand_problem(rng, 3, 5, "indef")
    r = torch.tensor([0.1, 0.2, 0.3], dtype=DT)
    d = sp.trust_region_box(g, H, r, -10.0, 10.0)
    assert torch.equal(d, sp.trust_region(g, H, r))


@pytest.mark.parametrize("seed", range(4))
def test_trust_region_box_tiny_vs_grid(seed):
    # n = 2, convex: the projected-gradient answer is global; compare with a fine grid
    rng = np.random.default_rng(seed)
    g, H = rand_problem(rng, 1, 2, "pd")
    g = g * 3
    lo = torch.tensor([[-0.3, -0.6]], dtype=DT)
    up = torch.tensor([[0.5, 0.2]], dtype=DT)
    r = 0.45
    d = sp.trust_region_box(g, H, r, lo, up, iters=500)
    xs = np.linspace(-0.6, 0.5, 1101)
    X, Y = np.meshgrid(xs, xs)
    P = np.stack([X.ravel(), Y.ravel()], 1)
    ok = (P[:, 0] >= -0.3) & (P[:, 0] <= 0.5) & (P[:, 1] >= -0.6) & (P[:, 1] <= 0.2) & ((P ** 2).sum(1) <= r * r)
    P = P[ok]
    Hn, gn = H[0].numpy(), g[0].numpy()
    ref = (P @ gn + 0.5 * np.einsum("ij,jk,ik->i", P, Hn, P)).min()
    val = float(phi(g, H, d)[0])
    assert val <= ref + 1e-9
    assert val >= ref - 1e-2  # the grid is within 1e-3 of the optimum point


def test_trust_region_box_reduced_start():
    rng = np.random.default_rng(11)
    B, n, rk = 3, 40, 4
    U = torch.tensor(rng.standard_normal((B, n, rk)))
    s = torch.tensor(rng.standard_normal((B, rk)))
    g = torch.tensor(rng.standard_normal((B, n)))
    Hf = U @ torch.diag_embed(s) @ U.transpose(1, 2)
    x = torch.tensor(rng.uniform(0, 1, (B, n)))
    r = torch.tensor([0.2, 1.0, 3.0], dtype=DT)
    red = sp.reduce_low_rank(g, U, s)
    d1 = sp.trust_region_box(g, sp.low_rank_hvp(U, s), r, -x, 1 - x, reduced=red, iters=100)
    d2 = sp.trust_region_box(g, Hf, r, -x, 1 - x, iters=100)
    assert (d1.norm(dim=1) <= r * (1 + 1e-12)).all() and ((d1 >= -x) & (d1 <= 1 - x)).all()
    assert torch.allclose(phi(g, Hf, d1), phi(g, Hf, d2), rtol=1e-3, atol=1e-6)


# --------------------------------------------------------------------- L_inf box QP
def test_box_qp_zero_hessian_is_fgsm_vertex():
    torch.manual_seed(1)
    B, n = 5, 30
    g = torch.randn(B, n, dtype=DT)
    g[:, :3] = 0
    x = torch.rand(B, n, dtype=DT)
    C = 0.1
    lo, up = torch.clamp(-x, min=-C), torch.clamp(1 - x, max=C)
    d = sp.box_qp(g, torch.zeros(B, n, n, dtype=DT), lo, up)
    v = torch.where(g > 0, lo, torch.where(g < 0, up, torch.zeros_like(g)))
    assert torch.equal(d, v)
    d2 = sp.box_qp(g, lambda V: torch.zeros_like(V), lo, up)
    assert torch.equal(d2, v)


@SETTINGS
@given(seeds, st.integers(1, 15), st.sampled_from(["indef", "pd", "psd"]))
def test_box_qp_never_worse_than_vertex(seed, n, kind):
    rng = np.random.default_rng(seed)
    B = 4
    g, H = rand_problem(rng, B, n, kind)
    H = H * rng.uniform(0.01, 10)
    x = torch.tensor(rng.uniform(0, 1, (B, n)))
    C = float(rng.uniform(0.01, 0.5))
    lo, up = torch.clamp(-x, min=-C), torch.clamp(1 - x, max=C)
    d = sp.box_qp(g, H, lo, up, iters=50)
    v = sp.fgsm_vertex(g, lo, up)
    assert ((d >= lo) & (d <= up)).all()
    assert (phi(g, H, d) <= phi(g, H, v) + 1e-12).all()


def test_box_qp_convex_is_optimal():
    rng = np.random.default_rng(5)
    n = 6
    g, H = rand_problem(rng, 1, n, "pd")
    lo, up = -0.2 * torch.ones(1, n, dtype=DT), 0.3 * torch.ones(1, n, dtype=DT)
    d = sp.box_qp(g, H, lo, up, iters=2000)
    Hn, gn = H[0].numpy(), g[0].numpy()
    res = minimize(lambda z: gn @ z + 0.5 * z @ Hn @ z, np.zeros(n), jac=lambda z: gn + Hn @ z,
                   bounds=[(-0.2, 0.3)] * n, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12})
    assert float(phi(g, H, d)[0]) <= res.fun + 1e-9


# --------------------------------------------------------------------- L0
@SETTINGS
@given(seeds, st.integers(0, 12))
def test_l0_support_and_box(seed, k):
    rng = np.random.default_rng(seed)
    B, n = 3, 24
    g, H = rand_problem(rng, B, n, "indef")
    x = torch.tensor(rng.uniform(0, 1, (B, n)))
    d = sp.l0_search(g, H, k, -x, 1 - x, iters=30)
    assert ((d != 0).sum(1) <= k).all()
    assert ((d >= -x) & (d <= 1 - x)).all()
    assert (phi(g, H, d) <= 1e-12).all()                      # never worse than d = 0
    if k >= 1:  # never worse than the exact best move of one coordinate (brute force over i and t)
        Hd = torch.diagonal(torch.as_tensor(H), dim1=1, dim2=2)
        gg = torch.as_tensor(g)
        s = -x[:, :, None] + torch.linspace(0, 1, 401, dtype=torch.float64)   # every move of x_i in [0, 1]
        best = (gg[:, :, None] * s + 0.5 * Hd[:, :, None] * s * s).flatten(1).amin(1)
        assert (phi(g, H, d) <= best + 1e-9).all()


def test_l0_groups_and_per_example_k():
    rng = np.random.default_rng(9)
    B, Cc, P = 3, 3, 16  # 3 channels x 16 positions (NCHW flattened)
    n = Cc * P
    g, H = rand_problem(rng, B, n, "indef")
    x = torch.tensor(rng.uniform(0, 1, (B, n)))
    groups = torch.arange(n) % P
    k = torch.tensor([0, 2, 5])
    d = sp.l0_search(g, H, k, -x, 1 - x, groups=groups, iters=30)
    changed = (d.reshape(B, Cc, P) != 0).any(1).sum(1)
    assert (changed <= k).all() and changed[0] == 0
    assert ((d >= -x) & (d <= 1 - x)).all()
    assert (phi(g, H, d)[1:] < 0).all()
    # with a budget above the support the answer is the full box QP
    d_full = sp.l0_search(g, H, n, -x, 1 - x, iters=30)
    assert torch.equal(d_full, sp.box_qp(g, H, -x, 1 - x, iters=30))


def _l0_reference(g, H, k, lower, upper, groups, drop=0.3, iters=30):
    """The pruning loop written per k: solve, drop the lowest-scoring groups beyond k, re-solve."""
    B, n = g.shape
    gr = groups.expand(B, n)
    G = int(gr.max()) + 1
    keep = torch.ones(B, G, dtype=torch.bool)

    def solve(keep):
        m = torch.gather(keep, 1, gr)
        return sp.box_qp(g, H, torch.where(m, lower, 0 * g), torch.where(m, upper, 0 * g), iters=iters)

    d = solve(keep)
    while bool((keep.sum(1) > k).any()):
        size = keep.sum(1)
        contrib = -(g * d + 0.5 * d * torch.einsum("bij,bj->bi", H, d))
        score = torch.zeros(B, G, dtype=g.dtype).scatter_add_(1, gr, contrib).masked_fill(~keep, -float("inf"))
        target = torch.maximum(torch.minimum((size * (1 - drop)).floor().long(), size - 1), k)
        target = torch.where(size > k, target, size)
        rank = torch.argsort(torch.argsort(score, dim=1, descending=True, stable=True), dim=1)
        keep = keep & (rank < target[:, None])
        d = solve(keep)
    return d, keep


@SETTINGS
@given(seeds, st.integers(0, 16))
def test_l0_path_equals_the_pruning_loop(seed, k):
    """l0_search prunes once (l0_path) for every k: the support and the point are those of the
    loop that prunes for one k, and a path of P problems serves K copies of each at once with
    the supports of one call per budget."""
    rng = np.random.default_rng(seed)
    B, Cc, P = 3, 2, 16
    n = Cc * P
    g, H = rand_problem(rng, B, n, "indef")
    x = torch.tensor(rng.uniform(0, 1, (B, n)))
    groups = torch.arange(n) % P
    kk = torch.full((B,), k)
    ref, keep = _l0_reference(g, H, kk, -x, 1 - x, groups)
    path = sp.l0_path(g, H, -x, 1 - x, groups=groups, iters=30)
    assert torch.equal(path.supports(kk[:, None])[:, 0], keep)
    d = sp.l0_search(g, H, k, -x, 1 - x, groups=groups, iters=30, path=path)
    better_single = ~torch.isclose(d, ref).all(1)       # the single-coordinate safeguard took over
    assert torch.allclose(d[~better_single], ref[~better_single], atol=1e-12)
    assert (phi(g, H, d) <= phi(g, H, ref) + 1e-12).all()
    # K = 3 budgets per problem, rows repeat_interleave'd, against one call per budget
    ks = torch.tensor([[k, 1, 7]] * B)
    rows = sp.l0_search(g.repeat_interleave(3, 0), H.repeat_interleave(3, 0), ks.reshape(-1),
                        (-x).repeat_interleave(3, 0), (1 - x).repeat_interleave(3, 0), groups=groups,
                        iters=30, path=path).reshape(B, 3, n)
    for j in range(3):
        one = sp.l0_search(g, H, ks[:, j], -x, 1 - x, groups=groups, iters=30)
        # the same support (the points are the box solver's on it: an indefinite H's local minimum
        # after 30 iterations, not compared bit for bit across batch shapes)
        assert torch.equal(rows[:, j] != 0, one != 0)
    with pytest.raises(ValueError, match="copies"):
        sp.l0_search(g[:2], H[:2], 1, -x[:2], 1 - x[:2], path=path)


def test_l0_with_l2_radius():
    rng = np.random.default_rng(10)
    g, H = rand_problem(rng, 2, 12, "indef")
    x = torch.tensor(rng.uniform(0, 1, (2, 12)))
    d = sp.l0_search(g, H, 3, -x, 1 - x, radius=0.5, iters=30)
    assert ((d != 0).sum(1) <= 3).all() and (d.norm(dim=1) <= 0.5 * (1 + 1e-12)).all()


# --------------------------------------------------------------------- minimum norm
def test_min_norm_linear_is_deepfool():
    torch.manual_seed(2)
    B, n = 6, 20
    g = torch.randn(B, n, dtype=DT)
    c = torch.rand(B, dtype=DT) + 0.1
    c[0] = -0.3
    c[1] = 0.0
    s = sp.solve_min_norm(g, torch.zeros(B, n, n, dtype=DT), c)
    ref = -c.clamp_min(0)[:, None] * g / (g * g).sum(1, keepdim=True)
    assert torch.allclose(s.d, ref, rtol=1e-13, atol=1e-15)
    assert torch.equal(s.d[:2], torch.zeros(2, n, dtype=DT)) and s.feasible.all()


@BRUTE
@given(seeds, st.integers(2, 5), st.sampled_from(["indef", "pd", "psd"]))
@example(434024235, 3, "psd")  # g off a PSD H's range: |d| ~ 1.5e3 along the null space
def test_min_norm_vs_brute_force(seed, n, kind):
    rng = np.random.default_rng(seed)
    B = 3
    g, H = rand_problem(rng, B, n, kind)
    H = H * 0.3
    c = torch.tensor(rng.uniform(0.05, 2, B))
    s = sp.solve_min_norm(g, H, c)
    val = c + phi(g, H, s.d)
    # the reported value (computed in H's eigenbasis) against the direct one, to rounding: a PSD H
    # with g off its range puts d far along the null space (|d| ~ 1e3), where a zero eigenvalue
    # computed as 1e-16 alone moves 1/2 d.H d by 1e-10
    dn = s.d.norm(dim=1)
    scale = 1 + g.norm(dim=1) * dn + torch.linalg.matrix_norm(H, ord=2) * dn**2
    assert ((val - s.value).abs() <= 1e-10 + 1e-14 * scale).all()
    for b in range(B):
        ref = brute_min_norm(g[b].numpy(), H[b].numpy(), float(c[b]), starts=8, rng=rng)
        if not bool(s.feasible[b]):
            assert torch.linalg.eigvalsh(H[b])[0] > 0 and not np.isfinite(ref)
            assert torch.allclose(s.d[b], -torch.linalg.solve(H[b], g[b]), atol=1e-8)
            continue
        assert abs(float(val[b])) <= 1e-9 * (1 + float(c[b]))
        nrm = float(s.d[b].norm())
        assert nrm <= ref + 1e-6 * (1 + ref)
        # KKT: d = -mu (g + H d), I + mu H PSD
        mu = s.mu[b]
        assert mu >= 0
        assert torch.allclose(s.d[b], -mu * (g[b] + H[b] @ s.d[b]), atol=1e-7 * (1 + float(mu)))
        assert torch.linalg.eigvalsh(torch.eye(n, dtype=DT) + mu * H[b])[0] >= -1e-9


@BRUTE
@given(seeds, st.integers(2, 5))
def test_min_norm_hard_case(seed, n):
    rng = np.random.default_rng(seed)
    g, H = hard_case(rng, 3, n, scale=0.05)
    c = torch.tensor(rng.uniform(2, 4, 3))  # big margin: the curve never reaches the boundary
    s = sp.solve_min_norm(g, H, c)
    assert s.feasible.all() and s.hard_case.all()
    assert (s.value.abs() <= 1e-9).all()
    for b in range(3):
        ref = brute_min_norm(g[b].numpy(), H[b].numpy(), float(c[b]), starts=8, rng=rng)
        assert float(s.d[b].norm()) <= ref + 1e-6 * (1 + ref)


@pytest.mark.parametrize("tiny", [1e-14, 1e-10, 1e-6, 1e-3])
def test_min_norm_near_hard_case(tiny):
    rng = np.random.default_rng(22)
    g, H = hard_case(rng, 4, 5, scale=0.05)
    _, Q = torch.linalg.eigh(H)
    g = g + tiny * Q[:, :, 0]
    c = torch.tensor([0.3, 1.0, 3.0, 6.0], dtype=DT)
    s = sp.solve_min_norm(g, H, c)
    assert s.converged.all() and s.feasible.all() and s.iterations < 40
    assert (s.value.abs() <= 1e-10 * (1 + c)).all()
    res = s.d + s.mu[:, None] * (g + mv(H, s.d))
    assert (res.norm(dim=1) <= 1e-9 * (1 + s.mu)).all()
    for b in range(4):
        ref = brute_min_norm(g[b].numpy(), H[b].numpy(), float(c[b]), starts=6, rng=rng)
        assert float(s.d[b].norm()) <= ref + 1e-6 * (1 + ref)


def test_min_norm_infeasible_and_many_margins():
    rng = np.random.default_rng(12)
    g, H = rand_problem(rng, 2, 4, "pd")
    cmin = 0.5 * (g * torch.linalg.solve(H, g)).sum(1)  # model minimum is c - cmin
    s = sp.solve_min_norm(g, H, cmin + 1.0)
    assert not s.feasible.any() and torch.isinf(s.mu).all()
    assert torch.allclose(s.d, -torch.linalg.solve(H, g))
    cs = torch.stack([cmin * 0.5, cmin * 0.9, cmin + 1], 1)
    g_hat, ev, Q = sp.eigh_batched(H, g)
    m = sp.solve_min_norm_eig(g_hat, ev, Q, cs)
    assert m.d.shape == (2, 3, 4) and m.feasible.tolist() == [[True, True, False]] * 2
    for j in range(3):
        assert torch.allclose(m.d[:, j], sp.min_norm(g, H, cs[:, j]), atol=1e-12)


def test_min_norm_mixed_batch_equals_alone():
    rng = np.random.default_rng(13)
    n = 4
    g1, H1 = rand_problem(rng, 1, n, "indef")
    g2, H2 = hard_case(rng, 1, n, scale=0.05)
    g3, H3 = rand_problem(rng, 1, n, "pd")
    g = torch.cat([g1, g2, g3, g1])
    H = torch.cat([H1, H2, H3, H1])
    c = torch.tensor([0.5, 3.0, 100.0, -1.0], dtype=DT)
    s = sp.solve_min_norm(g, H, c)
    assert s.hard_case.tolist() == [False, True, False, False]
    assert s.feasible.tolist() == [True, True, False, True]
    for b in range(4):
        alone = sp.solve_min_norm(g[b:b + 1], H[b:b + 1], c[b:b + 1])
        assert torch.allclose(alone.d[0], s.d[b], atol=1e-12)


# --------------------------------------------------------------------- low rank
@pytest.mark.parametrize("sign", ["indef", "pos", "neg"])
def test_reduce_low_rank_is_exact(sign):
    rng = np.random.default_rng({"indef": 0, "pos": 1, "neg": 2}[sign])
    B, n, rk = 4, 50, 6
    U = torch.tensor(rng.standard_normal((B, n, rk)))
    s = torch.tensor(rng.standard_normal((B, rk)))
    s = {"indef": s, "pos": s.abs(), "neg": -s.abs()}[sign]
    g = torch.tensor(rng.standard_normal((B, n)))
    Hf = U @ torch.diag_embed(s) @ U.transpose(1, 2)
    Qb, gs, Hs = sp.reduce_low_rank(g, U, s)
    assert Qb.shape == (B, n, rk + 1)
    assert torch.allclose(Qb.transpose(1, 2) @ Qb, torch.eye(rk + 1, dtype=DT).expand(B, -1, -1), atol=1e-12)
    r = torch.tensor([[0.1, 1.0, 10.0]] * B, dtype=DT)
    D_small = sp.trust_region(gs, Hs, r)
    D_full = sp.trust_region(g, Hf, r)
    assert torch.allclose(sp.lift(Qb, D_small), D_full, atol=1e-8)
    c = torch.tensor(rng.uniform(0.1, 3, B))
    m_small = sp.solve_min_norm(gs, Hs, c)
    m_full = sp.solve_min_norm(g, Hf, c)
    assert torch.equal(m_small.feasible, m_full.feasible)
    assert torch.allclose(sp.lift(Qb, m_small.d), m_full.d, atol=1e-8)
    # hard case in the full space (g orthogonal to the negative eigenvector) stays exact
    if sign != "pos":
        g_h = g - (Qb[:, :, :rk] @ (Qb[:, :, :rk].transpose(1, 2) @ g[..., None]))[..., 0]  # g outside range(U)
        _, gs2, Hs2 = sp.reduce_low_rank(g_h, U, s)
        ds = sp.trust_region(gs2, Hs2, 5.0)
        df = sp.solve_trust_region(g_h, Hf, 5.0)
        assert df.hard_case.all()
        assert torch.allclose(phi(gs2, Hs2, ds), df.value, atol=1e-8)
    hvp = sp.low_rank_hvp(U, s)
    v = torch.randn(B, n, dtype=DT)
    assert torch.allclose(hvp(v), mv(Hf, v))


def test_input_errors():
    g = torch.randn(2, 3)
    with pytest.raises(ValueError):
        sp.trust_region(g, torch.zeros(2, 3, 3), torch.ones(3))
    with pytest.raises(ValueError):
        sp.project_ball_box(g, 1.0, 0.1, 1.0)
    with pytest.raises(TypeError):
        sp.trust_region(g, lambda v: v, 1.0)
    with pytest.raises(ValueError):
        sp.trust_region(torch.randn(3), torch.zeros(3, 3), 1.0)


# ------------------------------------------------------------------ min-norm step with the box
def _slsqp_min_norm_box(g, c, lo, hi):
    cons = [{"type": "ineq", "fun": lambda v: -(c + g @ v), "jac": lambda v: -g}]
    r = minimize(lambda v: v @ v, np.clip(-g, lo, hi), jac=lambda v: 2 * v, constraints=cons,
                 bounds=list(zip(lo, hi)), method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
    return r.x if r.success and c + g @ r.x <= 1e-9 else None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_norm_box_vs_brute_force(seed):
    """The sorted-breakpoint solution is the global optimum of the convex problem (SLSQP agrees)."""
    gen = torch.Generator().manual_seed(seed)
    B, n = 40, 7
    g = torch.randn(B, n, generator=gen, dtype=DT)
    x = torch.rand(B, n, generator=gen, dtype=DT)
    x[x < 0.25] = 0.0                      # pixels at the bounds, as in MNIST
    x[x > 0.9] = 1.0
    c = 1.5 * torch.rand(B, generator=gen, dtype=DT) - 0.2
    d, feasible = sp.min_norm_box(g, c, -x, 1 - x)
    assert bool(((d >= -x - 1e-12) & (d <= 1 - x + 1e-12)).all())
    checked = 0
    for b in range(B):
        if not feasible[b]:
            vertex = torch.where(g[b] > 0, -x[b], 1 - x[b])
            assert float(c[b] + g[b] @ vertex) > 0
            continue
        assert float(c[b] + g[b] @ d[b]) <= 1e-10
        ref = _slsqp_min_norm_box(g[b].numpy(), float(c[b]), (-x[b]).numpy(), (1 - x[b]).numpy())
        if ref is not None:
            assert float(d[b].norm()) <= np.linalg.norm(ref) + 1e-7
            checked += 1
    assert checked >= B // 2


def test_min_norm_box_linf_vs_linear_program():
    """Linf: min t s.t. |d_i| <= t, c + g.d <= 0, box (an LP, scipy's HiGHS) has the same optimum."""
    from scipy.optimize import linprog

    gen = torch.Generator().manual_seed(3)
    B, n = 30, 6
    g = torch.randn(B, n, generator=gen, dtype=DT)
    x = torch.rand(B, n, generator=gen, dtype=DT)
    x[x < 0.3] = 0.0
    c = torch.rand(B, generator=gen, dtype=DT)
    d, feasible = sp.min_norm_box(g, c, -x, 1 - x, "linf")
    eye = np.eye(n)
    for b in range(B):
        A = np.vstack([np.c_[eye, -np.ones(n)], np.c_[-eye, -np.ones(n)], np.r_[g[b].numpy(), 0.0][None]])
        ub = np.r_[np.zeros(2 * n), -float(c[b])]
        bounds = [(-float(x[b, i]), 1 - float(x[b, i])) for i in range(n)] + [(0, None)]
        lp = linprog(np.r_[np.zeros(n), 1.0], A_ub=A, b_ub=ub, bounds=bounds)
        assert bool(feasible[b]) == (lp.status == 0)
        if lp.status == 0:
            assert float(c[b] + g[b] @ d[b]) <= 1e-10
            assert float(d[b].abs().max()) == pytest.approx(lp.x[n], abs=1e-9)


def test_min_norm_box_without_active_bounds_is_deepfool():
    g = torch.randn(5, 9, dtype=DT)
    c = torch.rand(5, dtype=DT)
    d, feasible = sp.min_norm_box(g, c, -1e9, 1e9)
    torch.testing.assert_close(d, -(c / (g * g).sum(1))[:, None] * g)
    assert bool(feasible.all())
    d0, _ = sp.min_norm_box(g, -c, -1.0, 1.0)          # already satisfied: no move
    assert bool((d0 == 0).all())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 40), st.integers(0, 10_000), st.sampled_from(["l2", "linf"]))
def test_min_norm_box_newton_equals_sorted_breakpoints(n, seed, norm):
    """The two exact root finders agree: Newton (any iteration cap, unfinished rows go to the
    sorted path; finished rows leave the iteration) and the sorted breakpoints alone (newton_iter=0)."""
    gen = torch.Generator().manual_seed(seed)
    B = 8
    g = torch.randn(B, n, generator=gen, dtype=DT)
    g[g.abs() < 0.15] = 0.0          # coordinates the constraint does not see (never saturate)
    x = torch.rand(B, n, generator=gen, dtype=DT)
    x[x < 0.3] = 0.0
    x[x > 0.85] = 1.0
    c = 2.0 * torch.rand(B, generator=gen, dtype=DT) - 0.3
    ref, f_ref = sp.min_norm_box(g, c, -x, 1 - x, norm, newton_iter=0)
    for cap in (1, 2, 32):
        d, f = sp.min_norm_box(g, c, -x, 1 - x, norm, newton_iter=cap)
        assert torch.equal(f, f_ref)
        torch.testing.assert_close(d, ref, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 12), st.integers(0, 10_000), st.floats(0.0, 3.0))
def test_min_norm_box_kkt(n, seed, c_val):
    """KKT: d = clip(-mu g, lo, hi) with mu >= 0 and the constraint active when it binds."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(1, n, generator=gen, dtype=DT)
    x = torch.rand(1, n, generator=gen, dtype=DT)
    d, feasible = sp.min_norm_box(g, c_val, -x, 1 - x)
    if not bool(feasible) or c_val == 0.0:
        return
    value = c_val + float(g[0] @ d[0])
    assert abs(value) <= 1e-9 * (1 + c_val)              # active at the optimum
    free = (d[0] > -x[0] + 1e-12) & (d[0] < 1 - x[0] - 1e-12) & (g[0].abs() > 1e-12)
    if bool(free.any()):
        mu = -d[0][free] / g[0][free]
        assert float(mu.min()) >= -1e-12
        assert float(mu.max() - mu.min()) <= 1e-8 * (1 + float(mu.abs().max()))
