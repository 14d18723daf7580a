"""The engine's internals: the expansion cache, work counting, the curvature choice per call."""
import pytest
import torch
from torch import nn

from teamattack.attacks import TEAM
from teamattack.attacks.boundary_walk import model_projection
from teamattack.counting import CountingModel
from teamattack.curvature import expand
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
def smooth():
    torch.manual_seed(0)
    model = SmoothTop().double().eval()
    x = 0.3 + 0.4 * torch.rand(5, 1, 3, 4, dtype=torch.float64)
    y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("source", ["exact", "krylov", "ggn"])
def test_recentred_expansion_solves_its_own_model_not_the_stale_one(smooth, source):
    """After the decomposition was used (cached), a re-centred expansion must solve the re-centred
    model: the min-norm point satisfies ITS constraint c + g'.d + 1/2 d.H d <= 0 (the walk's d_x)."""
    model, x, y = smooth
    obj = OBJECTIVES["T4"]
    e = expand(model, obj, x, y, source=source, k=6)
    assert e.rank > 0
    big = torch.full_like(e.g, 1e3)
    c = e.f - 0.2
    model_projection(e, c, -big, big)                        # fills the cache from e's gradient
    delta = 0.3 * torch.randn_like(e.g)
    ex = e.recentred(delta)
    fresh = type(e)(ex.f, ex.g, ex.H, ex.Q, ex.Hs, ex.source)  # same model, nothing cached
    for r in (ex, fresh):
        d = model_projection(r, c, -big, big)
        value = c + (r.g * d).sum(1) + 0.5 * (d * r.matvec(d)).sum(1)
        assert float(value.max()) <= 1e-6 * float(c.abs().max()) + 1e-9
    torch.testing.assert_close(ex.small_eig()[1], fresh.small_eig()[1])
    # and the re-centred model is the same function of the total perturbation
    d = 0.1 * torch.randn_like(e.g)
    torch.testing.assert_close(ex.phi(delta + d), e.phi(d))


def test_expansion_is_frozen(smooth):
    model, x, y = smooth
    e = expand(model, OBJECTIVES["T1"], x, y, source="none")
    with pytest.raises(Exception):
        e.f = e.f + 1


@pytest.mark.parametrize("source", ["none", "exact", "krylov", "ggn"])
def test_margin_expansion_counts_its_runner_up_forward(smooth, source):
    """Every forward pass of a margin expansion goes through the counting model, and first order
    takes the runner-up from its own forward pass (B forwards, B gradients)."""
    model, x, y = smooth
    B = x.shape[0]
    counted = CountingModel(model)
    raw = [0]
    handle = model.register_forward_hook(lambda m, i, o: raw.__setitem__(0, raw[0] + i[0].shape[0]))
    try:
        expand(counted, OBJECTIVES["margin"], x, y, source=source, k=4)
    finally:
        handle.remove()
    if source == "none":
        assert counted.forwards == B and counted.gradients == B and raw[0] == B
    else:
        # forwards of the full model through the counting wrapper: all of them counted
        assert counted.forwards >= 2 * B
        assert raw[0] <= counted.forwards


def test_hessian_is_validated_at_construction():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="hessian"):
        TEAM(model, norm="l2", hessian="exactt")


def test_auto_is_resolved_per_call_and_recorded():
    """'auto' looks at each batch: zero curvature (a ReLU net's logits) -> none; a smooth net in
    paper mode -> exact. The choice is in result.info, not frozen by the first batch."""
    torch.manual_seed(0)
    relu = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    x = torch.rand(4, 6, dtype=torch.float64)
    attack = TEAM(relu, norm="l2", mode="paper", objective="T1")
    first = attack(x, relu(x).argmax(1))
    assert first.info["hessian"] == "none" and first.info["hessian_reason"]
    # the same attack object on a smooth model next: the per-call choice follows the model
    smooth = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    attack.model = smooth
    second = attack(x, smooth(x).argmax(1))
    assert second.info["hessian"] == "exact"
    assert not hasattr(attack, "hessian_used")


def _linear(n=16, m=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, m)).double().eval()


def test_default_is_the_strongest_mode_per_norm():
    model = _linear()
    assert TEAM(model, norm="l2").mode == "min-norm"
    assert TEAM(model, norm="linf").mode == "min-norm"
    assert TEAM(model, norm="l0").mode == "iterated"
    assert TEAM(model, norm="l2", mode="paper").mode == "paper"
    x = 0.5 + 0.05 * torch.rand(3, 16, dtype=torch.float64)
    y = model(x).argmax(1)
    torch.testing.assert_close(TEAM(model, norm="l2")(x, y).x_adv, TEAM(model, norm="l2", mode="min-norm")(x, y).x_adv)


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="paper", starts=3), "starts"),
    (dict(mode="paper", steps=3), "steps"),
    (dict(mode="min-norm", search="paper"), "search"),
    (dict(mode="min-norm", objective="T4"), "objective"),
    (dict(mode="iterated", overshoot=0.1), "overshoot"),
    (dict(eps=0.5, search="paper"), "search"),
    (dict(eps=0.5, mode="paper", steps=4), "steps"),
    (dict(hessian="none", krylov_k=5), "krylov_k"),
])
def test_arguments_of_other_modes_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TEAM(_linear(), norm="l2", **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), "steps"), (dict(starts=1.5), "starts"), (dict(eps=-1.0), "eps"),
    (dict(eps=float("nan")), "eps"), (dict(max_batch=0), "max_batch"), (dict(screen=-1), "screen"),
])
def test_budget_and_count_arguments_are_checked(kwargs, match):
    from teamattack.validation import InputError

    with pytest.raises(InputError, match=match):
        TEAM(_linear(), norm="l2", **kwargs)


def test_cli_attack_defaults_to_the_strongest_mode():
    import argparse

    from teamattack.cli import attack as cli_attack

    parser = argparse.ArgumentParser()
    cli_attack.register(parser.add_subparsers())
    for norm, mode in (("l2", "min-norm"), ("linf", "min-norm"), ("l0", "iterated")):
        spec = cli_attack.spec_from_args(parser.parse_args(["attack", "--norm", norm]))
        assert spec.name == f"team-{norm}" and spec.settings["mode"] == mode  # the bench's name
    spec = cli_attack.spec_from_args(parser.parse_args(["attack", "--mode", "paper"]))
    assert spec.settings["mode"] == "paper"


# ----------------------------------------------------------------------------- batch independence
def _models():
    torch.manual_seed(1)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4)).double().eval()
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).double().eval()
    return [(conv, (2, 5, 5)), (mlp, (12,)), (mlp, (3, 4))]


@pytest.mark.parametrize("kwargs", [
    dict(norm="l2"), dict(norm="linf"), dict(norm="l2", targeted=True),
    dict(norm="l2", mode="paper"), dict(norm="l2", mode="iterated", steps=3), dict(norm="l0", steps=2),
    dict(norm="linf", eps=0.05), dict(norm="l2", eps=0.3, targets=2), dict(norm="l0", eps=2, steps=2),
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_batch_independence(kwargs):
    """attack(x)[i] == attack(x[i:i+1]) for batches of 1, 3 and 8, across the max_batch split and
    input ranks 2, 3 and 4 (every mode is deterministic)."""
    kw = dict(kwargs)
    if kw.get("mode") is None and kw["norm"] in ("l2", "linf") and "eps" not in kw:
        kw.update(steps=6, starts=2, screen=2)
    for model, shape in _models():
        gen = torch.Generator().manual_seed(2)
        x = 0.2 + 0.6 * torch.rand(8, *shape, generator=gen, dtype=torch.float64)
        y = model(x).argmax(1)
        target = (y + 1) % 4 if kw.get("targeted") else None
        whole = TEAM(model, hessian="none", **kw)(x, y, target).x_adv
        split = TEAM(model, hessian="none", max_batch=3, **kw)(x, y, target).x_adv
        torch.testing.assert_close(split, whole, rtol=0, atol=1e-9)
        for sl in (slice(0, 1), slice(2, 5), slice(5, 6)):
            part = TEAM(model, hessian="none", **kw)(x[sl], y[sl], None if target is None else target[sl]).x_adv
            torch.testing.assert_close(part, whole[sl], rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- exact work counts
def _analytic(m=4, n=10, seed=3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n, m)).double().eval()
    x = 0.4 + 0.2 * torch.rand(6, n, dtype=torch.float64)
    return model, x, model(x).argmax(1)


def test_walk_counts_are_exact():
    """Untargeted: B (classes at x) + one forward per expansion + one verdict per walk and phase
    + 10 bisection steps; a gradient per expansion (walk_budget). Targeted: one forward at x (the
    logit gap), then len(TARGETED_WALKS) walks of that length, each with its verdict."""
    from teamattack.attacks.boundary_walk import TARGETED_WALKS, walk_budget

    model, x, y = _analytic()
    B, T, S, s = x.shape[0], 9, 3, 2
    res = TEAM(model, norm="l2", hessian="none", steps=T, starts=S, screen=s)(x, y)
    assert bool(res.success.all())
    budget = walk_budget(T, S, s)
    assert res.counters.gradients == B * budget == B * (S * s + T - s)
    assert res.counters.forwards == B * (1 + budget + S + 1 + 10)
    assert res.counters.hvps == 0
    t = (y + 1) % 4
    res = TEAM(model, norm="l2", hessian="none", targeted=True, steps=T, starts=S, screen=s)(x, y, t)
    assert bool(res.success.all())
    K = len(TARGETED_WALKS)
    assert res.counters.gradients == B * K * budget
    assert res.counters.forwards == B * (1 + K * (budget + 1) + 10)


def test_paper_and_iterated_counts_are_exact():
    """Paper: one expansion (1 forward, 1 gradient), then 8 radii x (1 + 3 rounds) judged in batched
    forwards. Iterated: each later step re-expands at the boundary (6 bisection forwards, 1 forward
    and 1 gradient) and searches again (8 x 4 forwards)."""
    model, x, y = _analytic()
    B = x.shape[0]
    res = TEAM(model, norm="l2", mode="paper", hessian="none")(x, y)
    assert bool(res.success.all())
    assert (res.counters.forwards, res.counters.gradients) == (B * (1 + 32), B)
    T = 3
    res = TEAM(model, norm="l2", mode="iterated", hessian="none", steps=T)(x, y)
    assert bool(res.success.all())
    assert (res.counters.forwards, res.counters.gradients) == (B * (33 + (T - 1) * (6 + 1 + 32)), B * T)


def test_auto_probe_is_counted():
    """hessian='auto' decides with one Hessian-vector product on (up to) 4 examples: counted."""
    model, x, y = _analytic()
    auto = TEAM(model, norm="l2", mode="paper")(x, y)
    none = TEAM(model, norm="l2", mode="paper", hessian="none")(x, y)
    assert auto.info["hessian"] == "none"
    assert auto.counters.hvps - none.counters.hvps == 4
    assert auto.counters.forwards - none.counters.forwards == 4


def test_batch_rows_default_by_curvature_and_device():
    """max_batch=None: large first-order batches on CPU, MAX_BATCH where per-example curvature is
    held or on an accelerator; an explicit max_batch always wins."""
    from teamattack.attacks import team as tm

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    attack = TEAM(model, "l2")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert attack.batch_rows("none", cpu) == tm.FIRST_ORDER_CPU_BATCH > tm.MAX_BATCH
    assert attack.batch_rows("exact", cpu) == attack.batch_rows("none", cuda) == tm.MAX_BATCH
    assert TEAM(model, "l2", max_batch=7).batch_rows("none", cpu) == 7
