"""TEAM engine: limits with known answers, budgets, and success on a trained model."""
import pytest
import torch
from torch import nn

import teamattack as ta
from teamattack.attacks import TEAM, GaussNewton
from teamattack.goal import Goal
from teamattack.paper import FGSM
from teamattack.validation import InputError


def _linear(n=16, m=2, seed=0, scale=1.0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n, m)).double().eval()
    with torch.no_grad():
        model[1].weight.mul_(scale)
    return model


def test_linf_step_with_zero_curvature_is_fgsm():
    """Two classes: sign(grad CE) = -sign(grad margin), so TEAM-Linf(H=0) is exactly FGSM."""
    model = _linear(m=2)
    x = torch.rand(6, 16, dtype=torch.float64)
    y = model(x).argmax(1)
    eps = 0.05
    team = TEAM(model, norm="linf", objective="margin", hessian="none", eps=eps)(x, y)
    fgsm = FGSM(model, eps=eps)(x, y)
    torch.testing.assert_close(team.x_adv, fgsm.x_adv)


def test_l2_step_with_zero_curvature_is_normalised_gradient():
    model = _linear(m=3)
    x = torch.full((4, 16), 0.5, dtype=torch.float64) + 0.01 * torch.randn(4, 16, dtype=torch.float64)
    y = model(x).argmax(1)
    eps = 0.1
    res = TEAM(model, norm="l2", objective="T1", hessian="none", eps=eps, mode="paper")(x, y)
    w = model[1].weight[y]                                  # grad of Z_y
    expected = x - eps * w / w.norm(dim=1, keepdim=True)
    torch.testing.assert_close(res.x_adv, expected, atol=1e-6, rtol=1e-6)


def test_min_norm_on_linear_softmax_matches_closed_form():
    model = _linear(n=16, m=4, seed=3, scale=3.0)
    torch.manual_seed(4)
    x = 0.5 + 0.05 * torch.rand(8, 16, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
        W = model[1].weight
        z = model(x)
        dist = torch.full((8,), float("inf"), dtype=torch.float64)
        step_linf = torch.zeros(8, dtype=torch.float64)
        for j in range(4):
            w = W[y] - W[j]
            dj = (z.gather(1, y[:, None])[:, 0] - z[:, j]) / w.norm(dim=1)
            closer = (y != j) & (dj < dist)
            step_linf = torch.where(closer, (dj[:, None] * w / w.norm(dim=1, keepdim=True)).abs().amax(1), step_linf)
            dist = torch.where(closer, dj, dist)
    assert float(step_linf.max()) < 0.44, "the closed form needs the box to stay inactive"
    res = TEAM(model, norm="l2", mode="min-norm", hessian="exact")(x, y)
    assert bool(res.success.all())
    torch.testing.assert_close(res.l2.double(), dist, rtol=1e-3, atol=0)


@pytest.fixture(scope="module")
def digits():
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=60, seed=0)
    x, y = ta.data.correctly_classified(model, x, y)
    return model, x[:24], y[:24]


@pytest.mark.parametrize("norm", ["l2", "linf", "l0"])
@pytest.mark.parametrize("targeted", [False, True])
def test_full_success_on_trained_digits_model_inside_box_and_budget(digits, norm, targeted):
    model, x, y = digits
    target = (y + 1 + torch.arange(len(y)) % 9) % 10 if targeted else None
    res = TEAM(model, norm=norm, targeted=targeted)(x, y, target)
    assert res.asr == 1.0
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    dist = {"l2": res.l2, "linf": res.linf, "l0": res.l0}[norm]
    assert bool((dist <= res.radius + 1e-4).all()), "output outside the budget it reports"
    fresh = model(res.x_adv).argmax(1)
    assert bool((fresh == target).all()) if targeted else bool((fresh != y).all())


@pytest.mark.parametrize("mode,norm", [("iterated", "l2"), ("min-norm", "l2"), ("min-norm", "linf")])
@pytest.mark.parametrize("targeted", [False, True])
def test_beyond_paper_modes_succeed(digits, mode, norm, targeted):
    model, x, y = digits
    x, y = x[:20], y[:20]
    target = (y + 1 + torch.arange(len(y)) % 9) % 10 if targeted else None
    res = TEAM(model, norm=norm, mode=mode, targeted=targeted, steps=5 if mode == "iterated" else None)(x, y, target)
    assert res.asr == 1.0
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    dist = res.l2 if norm == "l2" else res.linf
    torch.testing.assert_close(dist, res.radius, atol=1e-5, rtol=1e-5)   # the norm it reports is the one reached


def test_min_norm_linf_beats_the_iterated_bisection(digits):
    model, x, y = digits
    it = TEAM(model, norm="linf", mode="iterated")(x[:20], y[:20])
    mn = TEAM(model, norm="linf", mode="min-norm")(x[:20], y[:20])
    assert float(mn.linf.median()) < float(it.linf.median())


def test_min_norm_is_closer_than_paper_mode(digits):
    model, x, y = digits
    paper = TEAM(model, norm="l2", mode="paper")(x[:20], y[:20])
    mn = TEAM(model, norm="l2", mode="min-norm")(x[:20], y[:20])
    assert float(mn.l2.median()) < float(paper.l2.median())


def test_gauss_newton_reaches_every_target(digits):
    model, x, y = digits
    x, y = x[:10], y[:10]
    for t in range(10):
        keep = y != t
        target = torch.full((int(keep.sum()),), t)
        res = GaussNewton(model, targeted=True, steps=100)(x[keep], y[keep], target)
        assert res.asr == 1.0, f"target {t}"


def test_counters_and_radius(digits):
    model, x, y = digits
    res = TEAM(model, norm="l2", hessian="exact")(x[:8], y[:8])
    assert res.counters.gradients > 0 and res.counters.forwards > 0 and res.counters.seconds > 0
    assert bool(torch.isfinite(res.radius).all())


def test_paper_schedule_starts_at_half(digits):
    model, x, y = digits
    res = TEAM(model, norm="l2", mode="paper", search="paper")(x[:8], y[:8])
    assert res.asr == 1.0
    r = res.radius
    assert bool((r >= 0.5 - 1e-6).all())
    assert torch.allclose((r - 0.5) / 0.1, ((r - 0.5) / 0.1).round(), atol=1e-4)


def test_bad_inputs_raise_clear_errors(digits):
    model, x, y = digits
    attack = TEAM(model)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        attack(x * 2, y)
    with pytest.raises(InputError, match="NaN"):
        attack(x.clone().fill_(float("nan")), y)
    with pytest.raises(InputError, match="labels outside"):
        attack(x, y + 10)
    with pytest.raises(InputError, match="batch"):
        attack(x, y[:-1])
    model.train()
    try:
        with pytest.raises(InputError, match="training mode"):
            attack(x, y)
    finally:
        model.eval()
    with pytest.raises(ValueError, match="norm"):
        TEAM(model, norm="l3")


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 0.8)])
def test_fixed_budget_stays_inside_and_iterating_helps(digits, norm, eps):
    model, x, y = digits
    one_shot = TEAM(model, norm=norm, mode="paper", hessian="none", eps=eps)(x, y)
    iterated = TEAM(model, norm=norm, mode="iterated", eps=eps)(x, y)
    for res in (one_shot, iterated):
        dist = res.linf if norm == "linf" else res.l2
        assert bool((dist <= eps + 1e-5).all())
        assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert iterated.asr >= one_shot.asr


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_min_norm_walk_reaches_the_exact_optimum_with_an_active_box(norm):
    """Two-class linear model: the minimal adversarial point under the [0, 1] box (L2 or Linf) is
    the box-constrained projection onto the decision hyperplane (subproblems.min_norm_box, exact);
    many pixels sit at 0 so the box is active. The walk must reach it and count its gradients."""
    from teamattack.subproblems import min_norm_box

    model = _linear(n=32, m=2, seed=5, scale=2.0)
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(10, 32, generator=gen, dtype=torch.float64)
    x[x < 0.5] = 0.0
    with torch.no_grad():
        y = model(x).argmax(1)
        W, b = model[1].weight, model[1].bias
        w = W[y] - W[1 - y]                                   # margin Z_y - Z_other = w.x + b_y - b_o
        m = (w * x).sum(1) + b[y] - b[1 - y]
    d_opt, feasible = min_norm_box(w, m, -x, 1 - x, norm)
    assert bool(feasible.all())
    opt = d_opt.norm(dim=1) if norm == "l2" else d_opt.abs().amax(1)
    res = TEAM(model, norm=norm, mode="min-norm", hessian="none", steps=30)(x, y)
    assert bool(res.success.all())
    got = (res.l2 if norm == "l2" else res.linf).double()
    assert bool((got >= opt * (1 - 1e-6)).all()), "below the proven optimum"
    torch.testing.assert_close(got, opt, rtol=2e-3, atol=0)
    assert res.counters.gradients == 10 * 1 * 30                # one start (two classes) x 30 steps


def test_min_norm_screening_budget_and_gain(digits):
    """The screened walk costs exactly walk_budget gradients per image, and per image it is no
    worse than its own first phase alone (the same starts walking `screen` steps): phase one is
    that run, and its verified points are kept (up to the final bisection of a different point)."""
    from teamattack.attacks.boundary_walk import walk_budget

    model, x, y = digits
    x, y = x[:16], y[:16]
    res = TEAM(model, norm="l2", mode="min-norm", hessian="none", steps=20, starts=4, screen=5)(x, y)
    assert res.counters.gradients == 16 * walk_budget(20, 4, 5) == 16 * (4 * 5 + 15)
    short = TEAM(model, norm="l2", mode="min-norm", hessian="none", steps=5, starts=4, screen=0)(x, y)
    assert bool(res.success.all())
    assert bool((res.l2 <= short.l2 + 1e-5).all())


def test_targeted_walk_reaches_a_corner_optimum_and_the_annealing_is_why():
    """Five-class linear model, targeted: success is an intersection of half-spaces, so the minimal
    L2 point (box included; scipy's SLSQP as reference) is often a corner where two competitors tie
    with the target. The walks' smooth max is annealed to the plain max; kept at a fixed temperature
    it stops on logsumexp's zero set, inside the target's region and measurably farther."""
    import functools

    import numpy as np
    from scipy.optimize import minimize

    from teamattack.attacks.boundary_walk import TARGETED_WALKS, SmoothMaxWalk, boundary_walk
    from teamattack.counting import CountingModel
    from teamattack.curvature import expand

    m, n, B = 5, 16, 12
    model = _linear(n=n, m=m, seed=3, scale=6.0)
    x = 0.5 + 0.05 * torch.rand(B, n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    t = (y + 1 + torch.arange(B) % (m - 1)) % m
    W = model[1].weight.detach().numpy()
    opt, corners = [], 0
    for i in range(B):
        others = [j for j in range(m) if j != int(t[i])]
        A = np.stack([W[j] - W[int(t[i])] for j in others])
        c = np.array([float(z[i, j] - z[i, t[i]]) for j in others])
        xi = x[i].numpy()
        r = minimize(lambda d: d @ d, np.zeros(n), jac=lambda d: 2 * d, method="SLSQP",
                     bounds=list(zip(-xi, 1 - xi)), options={"ftol": 1e-14, "maxiter": 500},
                     constraints=[{"type": "ineq", "fun": lambda d: -(A @ d + c), "jac": lambda d: -A}])
        assert float((A @ r.x + c).max()) < 1e-8, "the reference must be feasible"
        opt.append(float(np.sqrt(r.fun)))
        corners += int((np.abs(A @ r.x + c) < 1e-6).sum() >= 2)
    opt = torch.tensor(opt, dtype=torch.float64)
    assert corners >= B // 2, "the case needs corner optima"

    first_order = functools.partial(expand, source="none")
    fixed_walks = tuple(SmoothMaxWalk((w.temperature[0],) * 2, w.alpha) for w in TARGETED_WALKS)
    ratio = {}
    for name, walks in (("annealed", TARGETED_WALKS), ("fixed", fixed_walks)):
        adv, dist = boundary_walk(CountingModel(model), first_order, x, y, t, steps=80, targeted_walks=walks)
        with torch.no_grad():
            assert bool((model(adv).argmax(1) == t).all())
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        ratio[name] = dist.double() / opt
    annealed, fixed = ratio["annealed"], ratio["fixed"]
    assert bool((annealed >= 1 - 1e-4).all()), "below the optimum"
    assert float(annealed.max()) < 1.01
    assert float(fixed.max()) > 1.05 and bool((annealed <= fixed + 1e-6).all())


def test_pixel_pruning_is_exact_on_a_linear_model():
    """Linear two-class margin m(x) = w.x + b: resetting pixel i changes it by exactly -w_i d_i, so
    the most pixels that can go back with m < 0 kept is the longest prefix of the sorted costs
    whose sum stays below -m(x_adv): the clean-up must find exactly that count."""
    from teamattack.attacks.pixel_pruning import prune_pixels

    model = _linear(n=40, m=2, seed=7, scale=3.0)
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(16, 40, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
        W, b = model[1].weight, model[1].bias
        w = W[y] - W[1 - y]
        # every pixel moved against the margin, far enough to flip the class
        x_adv = (x - 0.6 * torch.sign(w)).clamp(0, 1)
        m_adv = (w * x_adv).sum(1) + b[y] - b[1 - y]
    assert bool((m_adv < 0).all())
    out = prune_pixels(model, x, x_adv, y)
    with torch.no_grad():
        assert bool((model(out).argmax(1) != y).all())
    kept = (out != x).sum(1)
    for i in range(16):
        cost = (-(w[i] * (x_adv[i] - x[i])))[x_adv[i] != x[i]].sort().values
        can_reset = int(((m_adv[i] + cost.cumsum(0)) < 0).sum())   # prefix sums: valid k form [0, K*]
        assert int(kept[i]) == int((x_adv[i] != x[i]).sum()) - can_reset
    # the pixels kept are the adversarial example's own values
    assert bool(((out == x) | (out == x_adv)).all())


def test_pixel_pruning_resets_whole_colour_pixels_and_is_teams_last_step():
    """Colour input: L0 counts pixel positions, so a position goes back to x in every channel or
    keeps its adversarial value in every channel; TEAM-L0 (iterated) is its search plus this step."""
    from teamattack.attacks.pixel_pruning import prune_pixels
    from teamattack.attacks.team import _pixel_groups
    from teamattack.counting import CountingModel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double().eval()
    x = torch.rand(6, 3, 8, 8, dtype=torch.float64)
    y = model(x).argmax(1)
    attack = TEAM(model, norm="l0", hessian="none", steps=2)
    res = attack(x, y)
    assert bool(res.success.all())
    searched = attack._smallest_budget(CountingModel(model), attack._expander("none"), x, Goal(y))[0]
    out = prune_pixels(model, x, searched, y, groups=_pixel_groups(x))
    whole = (out == x).all(1) | (out == searched).all(1)
    assert bool(whole.all())
    torch.testing.assert_close(res.x_adv, out)
    assert bool((ta.metrics.l0(x, out) <= ta.metrics.l0(x, searched)).all())
    torch.testing.assert_close(res.radius.double(), ta.metrics.l0(x, out).double())


@pytest.mark.parametrize("eps", [1, 2, 4, 20])
def test_l0_fixed_budget_breaks_whatever_its_minimum_norm_search_breaks_within_eps(digits, eps):
    """TEAM(model, "l0", eps=k): at least every image the minimum-norm L0 search breaks with <= k
    changed pixels, each output within k pixels of x and in the box (the trust region inside the
    budget alone broke 42% of 40 cifar10-table1 images at 112 pixels where the search broke all)."""
    model, x, y = digits
    x, y = x[:40], y[:40]
    searched = TEAM(model, norm="l0")(x, y)
    within = searched.success & (searched.l0 <= eps)
    res = TEAM(model, norm="l0", eps=eps)(x, y)
    assert bool((res.success | ~within).all())
    assert bool((ta.metrics.l0(x, res.x_adv) <= eps).all())
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert int(res.success.sum()) >= int(within.sum()) and (eps < 20 or bool(res.success.all()))


class _Wave(nn.Module):
    """Two classes on 4 inputs at x = 0.5: Z_0 = 0, Z_1 = -0.3 + sin(12 s), s = sum_i (x_i - 0.5).

    Class 1 wins for s in (0.026, 0.236). The quadratic model at x is linear in s (sin'' = 0 there),
    so every L0 candidate pushes its pixels to the box (s = 0.5 k for k pixels: sin(6 k) < 0 for
    k = 1..4) and every one fails on the network."""

    def forward(self, x):
        s = (x.flatten(1) - 0.5).sum(1)
        return torch.stack([torch.zeros_like(s), -0.3 + torch.sin(12 * s)], 1)


def test_l0_search_shortens_its_steps_where_the_model_overshoots():
    """TEAM-L0's trust-region steps bound each coordinate's change, halved after a step that found
    nothing better on the network: without it the next expansion is the same point's and every
    later step repeats the failed one (this model: no success in 10 steps)."""
    x = torch.full((2, 4), 0.5, dtype=torch.float64)
    y, t = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    model = _Wave().double().eval()
    res = TEAM(model, norm="l0", targeted=True)(x, y, target=t)
    assert bool(res.success.all()) and bool((model(res.x_adv).argmax(1) == 1).all())   # a fresh pass
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1 and bool((res.l0 <= 4).all())
