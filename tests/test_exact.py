"""Exact optima: breakpoint / dual solvers vs generic solvers, the MILP vs attacks, verification."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.optimize as so
import torch
from conftest import train_digits_mlp
from torch import nn

from teamattack.paper import FGSM
import teamattack.exact as X
from teamattack.bench import harness
from teamattack.bench.suites import BUDGET, AttackSpec


def _slsqp_l2(A, c, lo, hi, d0=None):
    """Reference: min ||d||^2 s.t. A d >= c, lo <= d <= hi by SLSQP from several starts."""
    n = A.shape[1]
    best = math.inf
    rng = np.random.default_rng(0)
    for s in range(4):
        start = np.clip(rng.normal(size=n) * 0.3, np.maximum(lo, -5), np.minimum(hi, 5)) if s else np.zeros(n)
        r = so.minimize(lambda d: d @ d, start, jac=lambda d: 2 * d, method="SLSQP",
                        bounds=[(None if np.isinf(a) else a, None if np.isinf(b) else b) for a, b in zip(lo, hi)],
                        constraints=[{"type": "ineq", "fun": lambda d: A @ d - c, "jac": lambda d: A}],
                        options={"ftol": 1e-14, "maxiter": 1000})
        if r.success and (A @ r.x >= c - 1e-7).all():
            best = min(best, float(np.linalg.norm(r.x)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_halfspace_l2_vs_slsqp(seed):
    rng = np.random.default_rng(seed)
    n = 8
    x = rng.uniform(size=n)
    a = rng.normal(size=n)
    c = float(abs(a) @ np.minimum(1 - x, x)) * rng.uniform(0.1, 0.9)  # reachable within the box
    lo, hi = -x, 1 - x
    v, d = X.halfspace_l2(a, c, lo, hi)
    assert (d >= lo - 1e-12).all() and (d <= hi + 1e-12).all() and a @ d >= c - 1e-9
    assert v == pytest.approx(_slsqp_l2(a[None], np.array([c]), lo, hi), rel=1e-5, abs=1e-8)
    # without the box: the closed form c / ||a||
    v_free, _ = X.halfspace_l2(a, c, np.full(n, -np.inf), np.full(n, np.inf))
    assert v_free == pytest.approx(c / np.linalg.norm(a), rel=1e-12)
    # out of reach of the box
    assert X.halfspace_l2(a, float(np.abs(a) @ np.where(a > 0, hi, -lo)) + 1.0, lo, hi)[1] is None


@pytest.mark.parametrize("seed", range(4))
def test_halfspace_linf_vs_lp(seed):
    rng = np.random.default_rng(seed)
    n = 10
    x = rng.uniform(size=n)
    a = rng.normal(size=n)
    c = float(abs(a) @ np.where(a > 0, 1 - x, x)) * rng.uniform(0.1, 0.9)
    v, d = X.halfspace_linf(a, c, -x, 1 - x)
    assert a @ d >= c - 1e-9 and np.abs(d).max() <= v + 1e-12
    A_ub = np.vstack([np.r_[-a, 0.0], np.c_[np.eye(n), -np.ones(n)], np.c_[-np.eye(n), -np.ones(n)]])
    r = so.linprog(np.r_[np.zeros(n), 1.0], A_ub=A_ub, b_ub=np.r_[-c, np.zeros(2 * n)],
                   bounds=[(lo, hi) for lo, hi in zip(-x, 1 - x)] + [(0, None)], method="highs")
    assert v == pytest.approx(r.fun, rel=1e-7, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_polyhedron_l2_vs_slsqp(seed):
    rng = np.random.default_rng(seed)
    n, k = 12, 4
    x = rng.uniform(size=n)
    A = rng.normal(size=(k, n))
    d_feas = rng.uniform(-x, 1 - x) * 0.8
    c = A @ d_feas - rng.uniform(0, 0.3, size=k)  # feasible (d_feas) and mostly binding
    for lo, hi in ((-x, 1 - x), (np.full(n, -np.inf), np.full(n, np.inf))):
        v, d, st = X.polyhedron_l2(A, c, lo, hi)
        assert st == "optimal" and (A @ d >= c - 1e-8).all()
        assert v == pytest.approx(_slsqp_l2(A, c, lo, hi), rel=1e-5, abs=1e-8)


def _linear_model(n_in=20, m=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, m)).eval()


def test_affine_model_optima_are_verified_and_consistent():
    model = _linear_model()
    x = torch.rand(8, 1, 4, 5)
    y = model(x).argmax(1)
    W, b = X.affine_form(model, (1, 4, 5))
    assert np.allclose(W, model[1].weight.detach().double().numpy()) and np.allclose(b, model[1].bias.detach().double().numpy())
    r2 = X.min_dist_affine(model, x, y, "l2")
    assert r2.status == ["optimal"] * 8 and bool(r2.verified.all())
    free = X.min_dist_affine(model, x, y, "l2", box=False)
    closed = [X.l2_nobox_closed_form(W, b, x[i].reshape(-1).double().numpy(), int(y[i])) for i in range(8)]
    assert np.allclose(free.eps, closed, rtol=1e-10)
    assert (r2.eps >= free.eps - 1e-12).all()  # the box can only make it larger
    # the verified points are within eps* + 1e-4 and adversarial
    d = (r2.x_adv - x).reshape(8, -1).norm(dim=1).double().numpy()
    assert (d <= r2.eps + 1e-4 + 1e-6).all() and (model(r2.x_adv).argmax(1) != y).all()
    # Linf: the breakpoint solution equals the MILP (an affine model is a ReLU net without hidden layers)
    rinf = X.min_dist_affine(model, x, y, "linf")
    milp = X.min_linf_relu(model, x, y)
    assert milp.status == ["optimal"] * 8 and np.allclose(rinf.eps, milp.eps, atol=1e-6)
    # targeted: best target = untargeted, and every target >= untargeted
    for t_off in (1, 2):
        t = (y + t_off) % 5
        rt = X.min_dist_affine(model, x, y, "l2", target=t)
        assert bool(rt.verified.all()) and (rt.eps >= r2.eps - 1e-9).all()
        assert (model(rt.x_adv).argmax(1) == t).all()
        mt = X.min_linf_relu(model, x, y, target=t)
        assert np.allclose(mt.eps, X.min_dist_affine(model, x, y, "linf", target=t).eps, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_mlp():
    """A 64-8-8-10 ReLU MLP trained briefly on sklearn's 8x8 digits."""
    model, x, y = train_digits_mlp((8, 8), steps=80)
    xs, ys, _ = harness.select_images(model, x, y, 6, seed=0)
    return model, xs, ys


def test_milp_optimum_below_every_attack(tiny_mlp):
    model, x, y = tiny_mlp
    layers = X.relu_layers(model, (1, 8, 8))
    assert [W.shape for W, _ in layers] == [(8, 64), (8, 8), (10, 8)]
    res = X.min_linf_relu(model, x, y, time_limit=30)  # no eps_max hint: the loosest MILP
    assert res.status == ["optimal"] * len(x)
    assert bool(res.verified.all())
    assert (res.lower <= res.eps + 1e-9).all()
    d = (res.x_adv - x).reshape(len(x), -1).abs().amax(dim=1).double().numpy()
    assert (d <= res.eps + 1e-4 + 1e-6).all() and (model(res.x_adv).argmax(1) != y).all()
    # PGD with bisection and FGSM never beat the optimum
    ub, _ = X.pgd_linf_bisection(model, x, y)
    ok = torch.isfinite(ub)
    assert ok.any() and (res.eps[ok.numpy()] <= ub[ok].double().numpy() + 1e-5).all()
    for eps in (0.05, 0.1, 0.2, 0.4):
        r = FGSM(model, eps=eps)(x, y)
        assert (res.eps[r.success.numpy()] <= r.linf[r.success].double().numpy() + 1e-5).all()
    # just below the optimum even a strong PGD finds nothing
    below = torch.tensor(res.eps * 0.99, dtype=torch.float32)
    xa = x.clone()
    view = (-1, 1, 1, 1)
    from teamattack.objectives import decision_margin
    for s in range(100):
        xa.requires_grad_(True)
        g, = torch.autograd.grad(decision_margin(model(xa), y).sum(), xa)
        xa = xa.detach() - below.reshape(view) * 0.05 * g.sign()
        xa = torch.min(torch.max(xa, x - below.reshape(view)), x + below.reshape(view)).clamp(0, 1)
    assert (model(xa).argmax(1) == y).all()
    # with the attack's distance as eps_max (the fast path): the same optimum
    hinted = X.min_linf_relu(model, x, y, eps_max=torch.where(ok, ub * 1.0001 + 1e-6, torch.ones_like(ub)))
    assert np.allclose(hinted.eps, res.eps, atol=1e-5)
    assert sum(hinted.info["per_image"][0]["unstable"]) <= sum(res.info["per_image"][0]["unstable"])


def test_milp_targeted_and_infeasible(tiny_mlp):
    model, x, y = tiny_mlp
    x, y = x[:2], y[:2]
    t = (y + 3) % 10
    un = X.min_linf_relu(model, x, y)
    tg = X.min_linf_relu(model, x, y, target=t)
    for i, st in enumerate(tg.status):
        if st == "optimal":
            assert tg.eps[i] >= un.eps[i] - 1e-6
            assert bool(tg.verified[i]) and model(tg.x_adv[i : i + 1]).argmax(1).item() == t[i].item()
    tiny = X.min_linf_relu(model, x, y, eps_max=un.eps * 0.5)
    assert tiny.status == ["infeasible", "infeasible"] and not tiny.verified.any()


def test_not_applicable():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)).eval()
    with pytest.raises(X.NotApplicable):
        X.affine_form(mlp, (4,))
    with pytest.raises(X.NotApplicable):
        X.relu_layers(mlp, (4,))
    with pytest.raises(X.NotApplicable):
        X.exact_optimum(mlp, torch.rand(2, 4), torch.zeros(2, dtype=torch.long), "linf")
    relu = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    assert X.applicable(relu, (4,), "linf") and X.applicable(relu, (4,), "l2") and not X.applicable(relu, (4,), "l0")
    assert X.applicable(_linear_model(4, 3), (4,), "l2")


def test_bench_ratio_to_optimum(tiny_mlp):
    model, x, y = tiny_mlp
    specs = [AttackSpec("fgsm", lambda m, t, e, s: FGSM(m, eps=e), "linf", kind=BUDGET, eps=0.3)]
    out = harness.run_bench(model, x, y, specs, seed=0, batch_size=6, progress=False, exact=True,
                            exact_time_limit=20)
    rec = out["runs"][0]
    assert out["exact"]["linf/untargeted"]["statuses"].get("optimal", 0) >= 1
    if rec["asr"] > 0:
        assert rec["ratio_to_optimum"]["n"] >= 1 and rec["ratio_to_optimum"]["median"] >= 1 - 1e-4


def test_points_roundtrip_exactly():
    from teamattack.bench import records as R

    t = torch.rand(3, 1, 8, 8)
    back = R.decode_points(json.loads(json.dumps(R.encode_points(t))))
    assert back.shape == t.shape and torch.equal(back, t)


@pytest.mark.parametrize("targeted", [False, True])
def test_bench_hands_the_best_attacks_point_to_the_solver(tiny_mlp, targeted):
    """bench --exact: every solved image's start is the best successful attack's point (distance
    and all), for the untargeted problem and for the seeded random target's."""
    from teamattack.attacks import TEAM
    from teamattack.bench import stages

    model, x, y = tiny_mlp
    x, y = x[:4], y[:4]
    specs = [AttackSpec("team-l2", lambda m, t, e, s: TEAM(m, norm="l2", targeted=t), "l2"),
             AttackSpec("fgm-l2", lambda m, t, e, s: TEAM(m, norm="l2", targeted=t, mode="paper"), "l2")]
    store = stages.MemoryStore()
    out = harness.run_bench(model, x, y, specs, seed=0, batch_size=3, progress=False, exact=True,
                            exact_time_limit=20, targeted=targeted, sidecar=store)
    assert all("points" in v for k, v in store.units.items() if not k.startswith("exact|"))
    problem = "random" if targeted else "untargeted"
    case = "average" if targeted else "untargeted"
    per = out["exact"][f"l2/{problem}"]["per_image"]
    best = [math.inf] * len(x)
    for rec in out["runs"]:
        if rec["attack"] in ("team-l2", "fgm-l2") and rec["case"] == case:
            pi = rec["per_image"]
            best = [min(b, d) if ok else b for b, ok, d in zip(best, pi["success"], pi["l2"])]
    assert any(math.isfinite(b) for b in best)
    for b, p in zip(best, per):
        if math.isfinite(b):
            assert p["incumbent"]["accepted"] and p["incumbent"]["eps"] == pytest.approx(b, rel=1e-6, abs=1e-7)
            assert p["eps"] <= b * (1 + 1e-6) + 1e-7
        else:
            assert "incumbent" not in p
    # units saved without their points (an older sidecar): no start, the same optima
    bare = {k: {f: v for f, v in val.items() if f != "points"} for k, val in store.units.items()
            if not k.startswith("exact|")}
    p_ = stages.plan(model, x, y, specs, stages.BenchConfig(targeted=targeted, seed=0, batch_size=3))
    inc = stages.incumbents(p_, bare, x, "l2", problem)
    assert np.isnan(inc.points).all() and inc.distance == pytest.approx(best)


def test_bench_keeps_no_points_where_no_exact_solver_applies():
    from teamattack.attacks import TEAM
    from teamattack.bench import stages

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 3)).eval()
    x = torch.rand(4, 1, 4, 4)
    y = model(x).argmax(1)
    store = stages.MemoryStore()
    out = harness.run_bench(model, x, y, [AttackSpec("team-l2", lambda m, t, e, s: TEAM(m, norm="l2"), "l2")],
                            seed=0, batch_size=4, progress=False, exact=True, sidecar=store, log=lambda s: None)
    assert store.units and not any("points" in v for v in store.units.values())
    assert not out["exact"]


# ------------------------------------------------------------------------------ L2 by MIQP (SCIP)
def test_miqp_equals_affine_closed_form_and_qp():
    """An affine model is a ReLU net without hidden layers: the MIQP must equal the exact forms."""
    model = _linear_model(12, 4, seed=1)
    x = torch.rand(5, 1, 3, 4)
    y = model(x).argmax(1)
    exact = X.min_dist_affine(model, x, y, "l2")
    miqp = X.min_l2_relu(model, x, y)
    assert miqp.status == ["optimal"] * 5 and bool(miqp.verified.all())
    assert np.allclose(miqp.eps, exact.eps, rtol=1e-4, atol=1e-6)
    t = (y + 1) % 4
    qp = X.min_dist_affine(model, x, y, "l2", target=t)
    mt = X.min_l2_relu(model, x, y, target=t)
    ok = np.array([s == "optimal" for s in qp.status])
    assert ok.any() and np.allclose(mt.eps[ok], qp.eps[ok], rtol=1e-4, atol=1e-6)
    assert (model(mt.x_adv[torch.from_numpy(ok)]).argmax(1) == t[torch.from_numpy(ok)]).all()


@pytest.mark.slow
def test_miqp_optimum_below_every_attack(tiny_mlp):
    from teamattack.attacks import TEAM

    model, x, y = tiny_mlp
    x, y = x[:2], y[:2]
    res = X.min_l2_relu(model, x, y, time_limit=30)  # no eps_max, no start: the loosest MIQP
    assert res.status == ["optimal"] * len(x) and bool(res.verified.all())
    assert (res.lower <= res.eps + 1e-9).all()
    # the verified point, just across the optimum, is adversarial and within eps* + 1e-4
    d = (res.x_adv - x).flatten(1).norm(dim=1).double().numpy()
    assert (d <= res.eps + 1e-4 + 1e-6).all() and (model(res.x_adv).argmax(1) != y).all()
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    # no attack beats it: TEAM's walk, and FGSM-L2 style steps along the gradient
    team = TEAM(model, norm="l2", mode="min-norm")(x, y)
    td = (team.x_adv - x).flatten(1).norm(dim=1).double().numpy()
    ok = team.success.numpy()
    assert ok.any() and (res.eps[ok] <= td[ok] * (1 + 1e-5) + 1e-7).all()
    # with TEAM's point as the start and its distance as eps_max (the fast path): the same optimum
    start = team.x_adv.clone()
    start[~team.success] = float("nan")
    hinted = X.min_l2_relu(model, x, y, eps_max=torch.where(team.success, torch.from_numpy(td).float() * 1.0001 + 1e-6,
                                                               torch.full((2,), float("inf"))), x_start=start)
    assert np.allclose(hinted.eps, res.eps, rtol=1e-4, atol=1e-6)
    assert any(p.get("incumbent", {}).get("accepted") for p in hinted.info["per_image"])
    # targeted: at least the untargeted optimum, and the target is what the model says
    t = (y + 2) % 10
    tg = X.min_l2_relu(model, x[:1], y[:1], target=t[:1], eps_max=4.0, time_limit=30)
    for i, st in enumerate(tg.status):
        if st == "optimal":
            assert tg.eps[i] >= res.eps[i] - 1e-6
            assert bool(tg.verified[i]) and model(tg.x_adv[i:i + 1]).argmax(1).item() == t[i].item()


def test_time_limited_solves_report_a_lower_bound():
    from teamattack import zoo

    model = zoo.load("digits-mlp").eval()
    xa, ya = harness.load_images("digits", model, 1, 0, None, torch.device("cpu"))[:2]
    for solve, dist in ((X.min_l2_relu, lambda d: d.flatten(1).norm(dim=1)),
                        (X.min_linf_relu, lambda d: d.flatten(1).abs().amax(dim=1))):
        ub, xb = X.pgd_linf_bisection(model, xa, ya)
        res = solve(model, xa, ya, time_limit=0.05, x_start=xb, lp_bounds=False)
        assert res.status[0] == "time-limit", res.status
        assert res.lower[0] <= res.eps[0] + 1e-9 and res.lower[0] >= 0
        # the incumbent (PGD's point) bounds the best found
        assert res.eps[0] <= float(dist(xb - xa)[0]) * (1 + 1e-6) + 1e-6


def test_linf_milp_takes_the_attack_point(tiny_mlp):
    model, x, y = tiny_mlp
    x, y = x[:3], y[:3]
    ub, xb = X.pgd_linf_bisection(model, x, y)
    plain = X.min_linf_relu(model, x, y, eps_max=ub * 1.0001 + 1e-6)
    started = X.min_linf_relu(model, x, y, eps_max=ub * 1.0001 + 1e-6, x_start=xb)
    assert np.allclose(plain.eps, started.eps, atol=1e-6) and bool(started.verified.all())
    assert all(p["incumbent"]["accepted"] for p in started.info["per_image"])


def test_ratio_stats_worst_and_share_within_one_percent():
    from teamattack.bench.records import ratio_stats

    r = ratio_stats([1.0, 2.2, 3.0, 5.0, 1.0], [True, True, True, False, True], [1.0, 2.0, 3.0, 4.0, math.nan])
    assert r["n"] == 3 and r["solved"] == 4 and r["worst"] == pytest.approx(1.1)
    assert r["within_1pct"] == pytest.approx(0.5) and r["off"] == {1: pytest.approx(1.1), 3: None}
    assert r["p90"] == pytest.approx(1.1) and r["median"] == pytest.approx(1.0)


def test_decomposition_is_shared_with_the_theorems():
    from teamattack.experiments import theorems

    assert theorems.decompose is X.decompose and theorems.NotSupported is X.NotApplicable
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    layers = X.decompose(net, (6,))
    dense = X.relu_layers(net, (6,))
    assert len(layers) == len(dense) == 2 and [L.relu for L in layers] == [True, False]
    from teamattack.exact.relu import unrolled
    for L, (W, b) in zip(layers, dense):
        assert np.allclose(unrolled(L).numpy(), W) and np.allclose(L.op.bias.detach().numpy(), b)


def test_exact_cli_l2(tmp_path, capsys):
    import json

    from teamattack.cli import main

    out = tmp_path / "e.json"
    rc = main(["exact", "--model", "digits-mlp", "--dataset", "digits", "--norm", "l2", "-n", "2",
               "--time-limit", "20", "--json", str(out)])
    assert rc in (0, None)
    doc = json.loads(out.read_text())
    assert doc["method"] == "relu-miqp" and not doc["targeted"] and doc["n"] == 2
    for r in doc["results"]:
        assert r["status"] in ("optimal", "time-limit") and r["lower"] <= r["eps"] + 1e-9
        assert r["eps"] <= r["attack_upper_bound"] * (1 + 1e-4) + 1e-6
        assert r["status"] != "optimal" or r["verified"]
    assert "l2 optimum" in capsys.readouterr().out


def test_explain_a_gap(tiny_mlp):
    from teamattack.exact.diagnose import explain

    model, x, y = tiny_mlp
    layers = X.relu_layers(model, (1, 8, 8))
    res = X.min_l2_relu(model, x[:1], y[:1], time_limit=30)
    x0, xo = x[0].reshape(-1).double().numpy(), res.x_adv[0].reshape(-1).double().numpy()
    same = explain(layers, x0, xo, xo, "l2")
    assert same.reason == "same region" and same.ratio == pytest.approx(1.0) and same.cosine == pytest.approx(1.0)
    far = explain(layers, x0, x0 + 2.0 * (xo - x0), xo, "l2")
    assert far.ratio == pytest.approx(2.0) and far.attack_class != int(y[0])


# ------------------------------------------- bounds over the L2 ball and the box; branch and bound
@pytest.mark.parametrize("seed", range(5))
def test_ball_box_support_is_the_maximum(seed):
    """The dual bound equals max c.d over the ball and the box (SLSQP from several starts)."""
    from teamattack.exact.relu import ball_box_support

    rng = np.random.default_rng(seed)
    n = 7
    x0 = rng.uniform(size=n)
    lo, hi = -x0, 1 - x0
    C = rng.normal(size=(3, n))
    for radius in (0.05, 0.4, 3.0):  # the ball inside the box, cutting it, containing it
        got = ball_box_support(C, lo, hi, radius)
        for c, g in zip(C, got):
            best = -math.inf
            for s in range(4):
                start = np.clip(rng.normal(size=n) * radius / 3, lo, hi) if s else np.zeros(n)
                r = so.minimize(lambda d: -c @ d, start, jac=lambda d: -c, method="SLSQP",
                                bounds=list(zip(lo, hi)), options={"ftol": 1e-14, "maxiter": 500},
                                constraints=[{"type": "ineq", "fun": lambda d: radius ** 2 - d @ d,
                                              "jac": lambda d: -2 * d}])
                if r.success and r.x @ r.x <= radius ** 2 * (1 + 1e-7):
                    best = max(best, float(c @ r.x))
            assert g >= best - 1e-9 and g == pytest.approx(best, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_ball_bounds_are_sound_and_tighter_than_the_box(seed):
    """Every point of the ball and the box lies within the bounds; the ball's bounds are tighter."""
    from teamattack.exact.relu import forward_np, layer_bounds

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(30, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).double()
    layers = X.relu_layers(net, (30,))
    rng = np.random.default_rng(seed)
    x0, radius = rng.uniform(size=30), 0.6
    lo, hi = np.maximum(0, x0 - radius), np.minimum(1, x0 + radius)
    box = layer_bounds(layers, lo, hi)
    ball = layer_bounds(layers, lo, hi, ball=(x0, radius))
    d = rng.normal(size=(4000, 30))
    d *= (radius * rng.uniform(size=(4000, 1)) ** (1 / 30)) / np.linalg.norm(d, axis=1, keepdims=True)
    pts = np.clip(x0 + d, lo, hi)
    for k, ((l, u), (lb, ub)) in enumerate(zip(ball, box)):
        z = np.stack([forward_np(layers, p)[k] for p in pts])
        assert (z >= l - 1e-9).all() and (z <= u + 1e-9).all()
        assert (l >= lb - 1e-9).all() and (u <= ub + 1e-9).all()
    assert sum(float((u - l).sum()) for l, u in ball) < sum(float((u - l).sum()) for l, u in box)


@pytest.mark.slow
def test_branch_and_bound_equals_scip_and_beats_every_attack(tiny_mlp):
    """Given the attack's distance as the radius, branch and bound and SCIP prove the same optimum."""
    from teamattack.attacks import TEAM

    model, x, y = tiny_mlp
    team = TEAM(model, norm="l2")(x, y)
    d = (team.x_adv - x).flatten(1).norm(dim=1)
    em = torch.where(team.success, d * 1.0001 + 1e-6, torch.full_like(d, math.inf))
    bnb = X.min_l2_relu(model, x, y, eps_max=em, x_start=team.x_adv, solver="bnb", time_limit=30)
    scip = X.min_l2_relu(model, x, y, eps_max=em, solver="scip", time_limit=30)
    both = np.array([a == b == "optimal" for a, b in zip(bnb.status, scip.status)])
    assert both.sum() >= 4, (bnb.status, scip.status)
    assert np.allclose(bnb.eps[both], scip.eps[both], rtol=1e-4, atol=1e-6)
    ok = team.success.numpy() & both
    assert (bnb.eps[ok] <= d.double().numpy()[ok] * (1 + 1e-5) + 1e-7).all()
    assert bool(bnb.verified[torch.from_numpy(both)].all())
    assert all(p["solver"] == "bnb" and p["nodes"] >= 1 for p in bnb.info["per_image"])
    # targeted, the same agreement
    t = (y + 3) % 10
    tb = X.min_l2_relu(model, x[:3], y[:3], target=t[:3], eps_max=3.0, solver="bnb", time_limit=30)
    ts = X.min_l2_relu(model, x[:3], y[:3], target=t[:3], eps_max=3.0, solver="scip", time_limit=30)
    same = np.array([a == b == "optimal" for a, b in zip(tb.status, ts.status)])
    assert same.any() and np.allclose(tb.eps[same], ts.eps[same], rtol=1e-4, atol=1e-6)
    assert (model(tb.x_adv[torch.from_numpy(same)]).argmax(1) == t[:3][torch.from_numpy(same)]).all()


def test_branch_and_bound_time_limit_reports_a_lower_bound(tiny_mlp):
    model, x, y = tiny_mlp
    res = X.min_l2_relu(model, x[:1], y[:1], eps_max=4.0, solver="bnb", time_limit=1e-3)
    assert res.status[0] == "time-limit" and 0 <= res.lower[0]
    assert math.isnan(res.eps[0]) or res.lower[0] <= res.eps[0] + 1e-12
    with pytest.raises(ValueError, match="solver"):
        X.min_l2_relu(model, x[:1], y[:1], solver="gurobi")
