"""Curvature sources against finite differences and against each other."""
import pytest
import torch
from torch import nn

from teamattack.curvature import expand, hvp_operator
from teamattack.objectives import OBJECTIVES


class SmoothTop(nn.Module):
    """Piecewise-linear features, a sigmoid, a linear head (the Table I structure, tiny)."""

    def __init__(self, n=12, p=6, m=4):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(n, 9), nn.ReLU(), nn.Linear(9, p))
        self.smooth = nn.Sigmoid()
        self.head = nn.Linear(p, m)

    def forward(self, x):
        return self.head(self.smooth(self.features(x)))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = SmoothTop().double().eval()
    x = torch.rand(5, 1, 3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    t = torch.tensor([1, 2, 3, 0, 2])
    return model, x, y, t


def fd_grad(fun, x, eps=1e-6):
    B = x.shape[0]
    xf = x.reshape(B, -1)
    g = torch.zeros_like(xf)
    for i in range(xf.shape[1]):
        e = torch.zeros_like(xf)
        e[:, i] = eps
        g[:, i] = (fun((xf + e).reshape(x.shape)) - fun((xf - e).reshape(x.shape))) / (2 * eps)
    return g


@pytest.mark.parametrize("name", ["T1", "T4", "margin", "T2", "T5", "T3", "T6"])
def test_gradient_and_exact_hessian_vs_finite_differences(setup, name):
    model, x, y, t = setup
    obj = OBJECTIVES[name]
    target = t if obj.targeted else None
    other = obj.runner_up(model(x), y, target) if obj.margin else None
    e = expand(model, obj, x, y, target, other, source="exact")
    fun = lambda z: obj(model(z), y, target, other)
    torch.testing.assert_close(e.f, fun(x))
    torch.testing.assert_close(e.g, fd_grad(fun, x), atol=1e-6, rtol=1e-5)
    # Hessian column i = d g / d x_i by finite differences of the gradient
    def grad_at(z):
        zr = z.detach().requires_grad_(True)
        (gz,) = torch.autograd.grad(fun(zr).sum(), zr)
        return gz.reshape(len(z), -1)
    n = e.n
    H = e.dense()
    for i in range(n):
        d = torch.zeros(x.shape[0], n, dtype=x.dtype)
        d[:, i] = 1e-6
        col = (grad_at(x + d.reshape(x.shape)) - grad_at(x - d.reshape(x.shape))) / 2e-6
        torch.testing.assert_close(H[:, :, i], col, atol=1e-5, rtol=1e-4)


def test_lowrank_exact_equals_dense_exact(setup):
    from teamattack.curvature.sources import exact_dense, exact_lowrank

    model, x, y, t = setup
    obj = OBJECTIVES["T4"]
    a = exact_lowrank(model, obj, x, y)
    b = exact_dense(model, obj, x, y)
    torch.testing.assert_close(a.dense(), b.H, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(a.g, b.g)


def test_hvp_matches_dense(setup):
    model, x, y, t = setup
    obj = OBJECTIVES["T6"]
    other = obj.runner_up(model(x), y, t)
    f, g, hvp = hvp_operator(model, obj, x, y, t, other)
    H = expand(model, obj, x, y, t, other, source="exact").dense()
    v = torch.randn_like(g)
    torch.testing.assert_close(hvp(v), torch.bmm(H, v.unsqueeze(-1)).squeeze(-1), atol=1e-10, rtol=1e-8)


def test_ggn_equals_exact_hessian_on_linear_softmax():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, 4)).double().eval()
    x = torch.rand(3, 10, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    obj = OBJECTIVES["T4"]
    ggn = expand(model, obj, x, y, source="ggn")
    ex = expand(model, obj, x, y, source="exact")
    torch.testing.assert_close(ggn.dense(), ex.dense(), atol=1e-10, rtol=1e-8)


def test_logit_objective_of_relu_net_has_zero_curvature():
    from teamattack.curvature import curvature_is_zero

    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    x = torch.rand(4, 10, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    assert curvature_is_zero(model, OBJECTIVES["T1"], x, y)
    assert not curvature_is_zero(model, OBJECTIVES["T4"], x, y)


def test_reduced_problem_represents_the_same_quadratic(setup):
    model, x, y, t = setup
    e = expand(model, OBJECTIVES["T4"], x, y, source="exact")
    P, gs, Hs = e.reduced()
    # for any d in span(P): phi(P c) computed both ways agrees
    c = torch.randn_like(gs)
    d = torch.bmm(P, c.unsqueeze(-1)).squeeze(-1)
    lhs = (e.g * d).sum(1) + 0.5 * (d * e.matvec(d)).sum(1)
    rhs = (gs * c).sum(1) + 0.5 * (c * torch.bmm(Hs, c.unsqueeze(-1)).squeeze(-1)).sum(1)
    torch.testing.assert_close(lhs, rhs)


def test_recentred_model_is_the_same_function(setup):
    model, x, y, t = setup
    e = expand(model, OBJECTIVES["T4"], x, y, source="exact")
    delta = 0.1 * torch.randn_like(e.g)
    r = e.recentred(delta)
    d = 0.1 * torch.randn_like(e.g)
    torch.testing.assert_close(r.phi(delta + d), e.phi(d))


def test_affine_model_has_zero_hvp_and_runs_team():
    from teamattack.attacks import TEAM
    from teamattack.curvature import curvature_is_zero

    model = nn.Sequential(nn.Flatten(), nn.Linear(10, 3)).double().eval()
    x = torch.rand(4, 10, dtype=torch.float64)
    y = model(x).argmax(1)
    assert curvature_is_zero(model, OBJECTIVES["T1"], x, y)
    res = TEAM(model, norm="l2")(x, y)
    assert res.asr == 1.0


def test_smooth_max_temperature_bounds_the_plain_max():
    """The smooth max tau logsumexp(Z / tau) over m-1 competitors lies in [max, max + tau log(m-1)],
    so T3 <= T3-lse(tau) <= T3 + tau log(m-1); it tends to T3 as tau -> 0; tau = 1 is the default."""
    import dataclasses
    import math

    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 10, generator=gen, dtype=torch.float64)
    y = torch.zeros(64, dtype=torch.long)
    t = torch.randint(1, 10, (64,), generator=gen)
    plain, lse = OBJECTIVES["T3"](logits, y, t), OBJECTIVES["T3-lse"]
    assert lse.temperature == 1.0
    for tau in (1.0, 0.3, 0.03, 1e-3):
        f = dataclasses.replace(lse, temperature=tau)(logits, y, t)
        assert bool((f >= plain - 1e-12).all()) and bool((f <= plain + tau * math.log(9) + 1e-12).all())
    tiny = dataclasses.replace(lse, temperature=1e-4)(logits, y, t)
    torch.testing.assert_close(tiny, plain, atol=1e-3, rtol=0)
