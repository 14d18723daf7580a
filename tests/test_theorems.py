"""E9: the math paper's bounds (Thm 3.2/3.4, 4.1), FGSM monotonicity below them, and Thm 5.1's closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from teamattack.experiments.theorems import (
    NotSupported,
    cw_bound,
    cw_checks,
    cw_closed_form_is_minimiser,
    cw_exact_threshold,
    decompose,
    fgsm_checks,
    inf_norm,
    local_row_norms,
    preactivations,
    row_abs_sums,
    solve_cw_relaxed,
    targeted_u2,
    unrolled,
    untargeted_bounds,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add contention (10x slower on a shared 2-core machine)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _net(*weights, biases=None) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, w in enumerate(weights):
        w = torch.tensor(w, dtype=torch.float64)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=biases is not None).double()
        with torch.no_grad():
            lin.weight.copy_(w)
            if biases is not None:
                lin.bias.copy_(torch.tensor(biases[i], dtype=torch.float64))
        mods.append(lin)
        if i < len(weights) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


# --------------------------------------------------------------------------------- hand-made nets
def test_two_layer_bound_known_answer():
    # Wx = (3, -2): |Wx|_min = 2, ||W||_inf = max(3, 4) = 4 -> Thm 3.2's bound 0.5
    net = _net([[1.0, 2.0], [-3.0, 1.0]], [[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]])
    layers = decompose(net, (2,))
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    b = untargeted_bounds(layers, x)
    assert b["paper"].item() == pytest.approx(0.5)
    assert b["product"].item() == pytest.approx(0.5)
    assert b["local"].item() == pytest.approx(min(3 / 3, 2 / 4))
    assert inf_norm(layers[0]) == pytest.approx(4.0)


def test_two_layer_bound_with_bias():
    # Tmp = 2 * 0.5 - 0.5 + 0.1 = 0.6, ||W||_inf = 3 -> 0.2; the bias moves Tmp, not the norm
    net = _net([[2.0, -1.0]], [[1.0], [-1.0]], biases=[[0.1], [0.0, 0.0]])
    b = untargeted_bounds(decompose(net, (2,)), torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    assert b["paper"].item() == pytest.approx(0.2)
    assert b["local"].item() == pytest.approx(0.2)


def test_linear_softmax_has_no_bound():
    b = untargeted_bounds(decompose(_net([[1.0, 2.0], [0.0, 1.0]]), (2,)), torch.rand(3, 2, dtype=torch.float64))
    assert all(bool(torch.isinf(v).all()) for v in b.values())


def test_printed_bound_is_not_sufficient_beyond_two_layers():
    """Thm 3.4 as printed: min_j |Tmp_j|_min / ||W_j||_inf. Layer 2's input moves by 10 eps, not eps."""
    net = _net([[10.0, 0.0], [0.0, 1.0]], [[1.0, -1.0]], [[1.0], [-1.0]])
    layers = decompose(net, (2,))
    x = torch.tensor([[0.1, 0.9]], dtype=torch.float64)        # Tmp_1 = (1, 0.9), Tmp_2 = 0.1
    b = untargeted_bounds(layers, x)
    assert b["paper"].item() == pytest.approx(min(0.9 / 10, 0.1 / 2))      # 0.05
    assert b["product"].item() == pytest.approx(min(0.9 / 10, 0.1 / 20))   # 0.005
    assert b["local"].item() == pytest.approx(min(1 / 10, 0.9 / 1, 0.1 / 11))
    eps = 0.04                                                  # below the printed bound ...
    x1 = x + eps * torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    assert preactivations(layers, x1)[1].item() < 0 < preactivations(layers, x)[1].item()  # ... yet a sign flips
    for name in ("product", "local"):                           # the sound bounds: no corner flips a sign
        e = 0.999 * b[name].item()
        for s in ([1, 1], [1, -1], [-1, 1], [-1, -1]):
            x2 = x + e * torch.tensor([s], dtype=torch.float64)
            assert all(((p > 0) == (q > 0)).all() for p, q in zip(preactivations(layers, x)[:2], preactivations(layers, x2)[:2]))


def test_unsupported_layers_are_refused():
    with pytest.raises(NotSupported):
        decompose(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 2)), (2,))
    with pytest.raises(NotSupported):
        decompose(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)), (1, 6, 6))


# ------------------------------------------------------------------------------------ convolutions
@pytest.mark.parametrize("conv,shape", [
    ({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 5)),
    ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 2, "dilation": 2, "groups": 2}, (4, 6, 6)),
    ({"in_channels": 1, "out_channels": 2, "kernel_size": (2, 3), "stride": (1, 2)}, (1, 4, 7)),
])
def test_conv_inf_norm_equals_brute_force_unrolled_matrix(conv, shape):
    torch.manual_seed(0)
    c = nn.Conv2d(**conv).double()
    net = nn.Sequential(c, nn.ReLU(), nn.Flatten())
    with torch.no_grad():
        out_numel = c(torch.zeros(1, *shape, dtype=torch.float64)).numel()
    net.append(nn.Linear(out_numel, 2).double())
    layers = decompose(net.eval(), shape)
    L = layers[0]
    # brute force: the unrolled matrix from the conv applied to every basis image, by autograd
    n = int(np.prod(shape))
    M = torch.autograd.functional.jacobian(lambda v: c(v.reshape(1, *shape)).flatten() - c.bias.repeat_interleave(
        out_numel // c.out_channels), torch.zeros(n, dtype=torch.float64))
    assert torch.allclose(unrolled(L), M)
    assert torch.allclose(row_abs_sums(L), M.abs().sum(dim=1))
    assert inf_norm(L) == pytest.approx(float(M.abs().sum(dim=1).max()))
    x = torch.rand(1, *shape, dtype=torch.float64)
    assert torch.allclose(M @ x.flatten() + c.bias.repeat_interleave(out_numel // c.out_channels), c(x).flatten())


def test_local_jacobian_matches_autograd():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, stride=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(2 * 2 * 2, 4)).double().eval()
    layers = decompose(net, (1, 5, 5))
    x = torch.rand(3, 1, 5, 5, dtype=torch.float64)
    _pres, norms, T = local_row_norms(layers, x)
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda v: net(v.reshape(1, 1, 5, 5)).flatten(), x[i].flatten())
        assert torch.allclose(T[i], J)
        J1 = torch.autograd.functional.jacobian(lambda v: net[0](v.reshape(1, 1, 5, 5)).flatten(), x[i].flatten())
        assert torch.allclose(norms[0][i], J1.abs().sum(dim=1))


def test_targeted_bound_linear_formula():
    torch.manual_seed(2)
    W = torch.randn(4, 3, dtype=torch.float64)
    x = torch.rand(1, 3, dtype=torch.float64)
    t = 2
    Z = (W @ x[0])
    e = Z.exp()
    expect = min(math.log1p(abs(float((e * W[:, i]).sum() - W[t, i] * e.sum())) /
                            float(((W[:, i] - W[t, i]).abs() * e).sum())) for i in range(3)) / float(W.abs().sum(1).max())
    got = targeted_u2(Z[None], W[None], torch.tensor([t]))
    assert got.item() == pytest.approx(expect)


# ----------------------------------------------------------------------- FGSM monotonicity property
@st.composite
def relu_nets(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    conv = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    k = draw(st.integers(2, 5))
    if conv:
        c1 = draw(st.integers(1, 3))
        shape = (1, 4, 4)
        net = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(c1 * 16, k))
    else:
        n = draw(st.integers(2, 5))
        widths = draw(st.lists(st.integers(2, 6), min_size=1, max_size=3))
        shape = (n,)
        mods: list[nn.Module] = []
        prev = n
        for w in widths:
            mods += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        mods.append(nn.Linear(prev, k))
        net = nn.Sequential(*mods)
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * draw(st.sampled_from([0.3, 1.0, 3.0])))
    x = torch.rand((6, *shape), generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (6,), generator=g)
    return net, shape, x, y, k


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(relu_nets())
def test_fgsm_never_decreases_loss_below_the_sound_bounds(case):
    net, shape, x, y, k = case
    layers = decompose(net, shape)
    res = fgsm_checks(net, layers, x, y)
    for name in ("product", "local"):
        assert res["bounds"][name]["claim_below_bound"]["violations"] == 0
        assert res["bounds"][name]["lemma_3_3_signs_kept_below_bound"]["violations"] == 0
    # targeted (Thm 4.1-4.3): every target != y
    t = (y + torch.randint(1, k, y.shape)) % k
    rest = fgsm_checks(net, layers, x, y, t)
    for name in ("product", "local"):
        assert rest["bounds"][name]["claim_below_bound"]["violations"] == 0


# ---------------------------------------------------------------------------------- Theorem 5.1
def _linear_model(W, b):
    lin = nn.Linear(W.shape[1], W.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_cw_closed_form_on_linear_softmax():
    torch.manual_seed(3)
    W = torch.randn(5, 6, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    x = torch.rand(6, dtype=torch.float64)
    Z = W @ x + b
    y = int(Z.argmax())
    for t in range(5):
        if t == y:
            continue
        cb = cw_bound(W, Z, y, t)
        ce = cw_exact_threshold(W, Z, y, t)
        assert ce >= cb
        c = 0.5 * cb
        d = solve_cw_relaxed(W, Z, t, c)
        closed = (-0.5 * c * (W[y] - W[t])).numpy()
        assert np.allclose(d, closed, rtol=1e-6, atol=1e-10)
        assert cw_closed_form_is_minimiser(W, Z, y, t, c)
        Z1 = Z + W @ torch.from_numpy(d)
        assert float(Z1[t] - Z1[y]) >= float(Z[t] - Z[y])        # P(t)/P(y) went up
        assert not cw_closed_form_is_minimiser(W, Z, y, t, 1.01 * ce)
        d2 = solve_cw_relaxed(W, Z, t, 2 * ce)                  # past the exact threshold: not the closed form
        assert not np.allclose(d2, (-ce * (W[y] - W[t])).numpy(), rtol=1e-3)
    res = cw_checks(_linear_model(W, b), x[None], torch.tensor([y]))
    for key in ("closed_form_kkt", "closed_form_matches_numerical", "ratio_t_over_y_increases",
                "third_class_prediction_5_3", "exact_threshold_ge_bound"):
        assert res[key]["violations"] == 0, key


@pytest.mark.parametrize("wk,up", [((0.0, 2.0, 0.0), False), ((0.0, -1.0, 0.0), True)])
def test_section_5_3_example(wk, up):
    """The paper's 3-D example: W_y = (1,1,1), W_t = (1,0,1); W_k = (0,2,0) -> P(k)/P(y) down, (0,-1,0) -> up."""
    W = torch.tensor([(1.0, 1.0, 1.0), (1.0, 0.0, 1.0), wk], dtype=torch.float64)
    x = torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64)
    Z = W @ x
    y, t, k = 0, 1, 2
    assert int(Z.argmax()) == y
    c = 0.5 * cw_bound(W, Z, y, t)
    d = torch.from_numpy(solve_cw_relaxed(W, Z, t, c))
    Z1 = Z + W @ d
    assert (float(Z1[k] - Z1[y]) > float(Z[k] - Z[y])) == up
