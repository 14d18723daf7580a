"""Reliability of the Python API (issue 13): bad inputs get a clear error before any forward pass,
budgets and counts are checked in the constructors, a NaN is never a success, the caller's model
leaves every attack call as it came, and suspicious models get a warning.

Digits data and the digits-cnn zoo model, plus tiny analytic models; every attack runs on a few
images with small budgets (the whole file: well under 30 s on one thread).
"""
from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import teamattack as ta
from teamattack import baselines, checks
from teamattack.attacks.base import Attack
from teamattack.attacks.team import BudgetConfig, SearchConfig, WalkConfig
from teamattack.goal import Goal
from teamattack.metrics import is_adversarial
from teamattack.paper import CWL2, FGSM, IFGSM
from teamattack.validation import InputError, ModelGuard, check_number

torch.set_num_threads(1)
N = 4


# ---- models -------------------------------------------------------------------------------------

class _Wrap(nn.Module):
    """A linear digits classifier whose output is post-processed by `post` (tuple, dict, NaN...)."""

    def __init__(self, post=lambda z: z) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.post = post
        self.eval()

    def forward(self, x):
        return self.post(self.net(x))


def _nan_class(z):
    z = z.clone()
    z[:, 3] = float("nan")
    return z


class _Noisy(_Wrap):
    def forward(self, x):
        return self.net(x) + 0.5 * torch.randn(x.shape[0], 10)


class _Step(_Wrap):
    """Quantised input: a gradient of zero everywhere (gradient masking)."""

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


def _nan_weight() -> nn.Module:
    m = _Wrap()
    with torch.no_grad():
        m.net[1].weight[0, 0] = float("nan")
    return m


def _bn_child_training() -> nn.Module:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10)).eval()
    m[2].train()
    return m


def _small_bn_cnn() -> nn.Module:
    """Conv + BatchNorm + Dropout (eval), one parameter frozen: modes, buffers and flags to keep."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                      nn.Flatten(), nn.Linear(4 * 64, 10))
    with torch.no_grad():  # non-trivial running statistics
        m[1].running_mean.uniform_(-0.1, 0.1)
        m[1].running_var.uniform_(0.5, 1.5)
    m[5].bias.requires_grad_(False)
    return m.eval()


@pytest.fixture(scope="module")
def digits():
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=64, seed=0)
    x, y = ta.data.correctly_classified(model, x, y)
    return model, x[:N], y[:N]


@pytest.fixture(scope="module")
def lin_batch():
    x, y = ta.data.load("digits", "test", n=N, seed=1)
    return x, y


def _other(y: torch.Tensor) -> torch.Tensor:
    return (y + 1) % 10


_HAVE_PEERS = all(importlib.util.find_spec(m) is not None for m in ("torchattacks", "foolbox", "adv_lib"))
peers = [pytest.mark.peers, pytest.mark.skipif(not _HAVE_PEERS, reason="the peers are not installed (./run.sh peers)")]


def peer_test(f):
    """Decorator form of `peers` (marks of a pytest.param)."""
    for mark in peers:
        f = mark(f)
    return f


# ---- 1. bad calls: (attack factory, model, inputs) -> error class and a word of its message ------

def _x(): return ta.data.load("digits", "test", n=N, seed=1)[0]
def _y(): return ta.data.load("digits", "test", n=N, seed=1)[1]


TEAM_ = lambda m: ta.TEAM(m)                                  # noqa: E731
TEAM_T = lambda m: ta.TEAM(m, targeted=True)                  # noqa: E731
GN = lambda m: ta.GaussNewton(m, targeted=False, steps=3)     # noqa: E731
FG = lambda m: FGSM(m, eps=0.1)                               # noqa: E731
IFG = lambda m: IFGSM(m, step=0.02, steps=3)                  # noqa: E731
CW = lambda m: CWL2(m, targeted=False, steps=2)               # noqa: E731
PGD = lambda m: baselines.make("pgd", m, steps=2)          # noqa: E731
DDN = lambda m: baselines.make("ddn-100", m, steps=3)      # noqa: E731

CALLS = [
    # id, attack, model, (x, y, target) thunk, error, word
    ("nan-weight", TEAM_, _nan_weight, lambda: (_x(), _y(), None), InputError, "NaN"),
    ("nan-one-class", TEAM_, lambda: _Wrap(_nan_class), lambda: (_x(), _y(), None), InputError, "examples"),
    ("inf-logits", FG, lambda: _Wrap(lambda z: z * float("inf")), lambda: (_x(), _y(), None), InputError, "infinite"),
    ("float16-model", TEAM_, lambda: _Wrap().half(), lambda: (_x(), _y(), None), InputError, "float16"),
    ("float64-x", FG, _Wrap, lambda: (_x().double(), _y(), None), InputError, "float64"),
    ("meta-device", FG, lambda: nn.Linear(64, 10, device="meta").eval(), lambda: (_x().flatten(1), _y(), None),
     InputError, "meta"),
    ("numpy-x", TEAM_, _Wrap, lambda: (_x().numpy(), _y(), None), InputError, "from_numpy"),
    ("list-x", TEAM_, _Wrap, lambda: (_x().tolist(), _y(), None), InputError, "torch.tensor"),
    ("int-x", TEAM_, _Wrap, lambda: ((_x() * 255).to(torch.uint8), _y(), None), InputError, "floating"),
    ("1d-x", TEAM_, _Wrap, lambda: (_x()[0].flatten(), _y()[:1], None), InputError, "batch dimension"),
    ("x-above-1", TEAM_, _Wrap, lambda: (_x() * 2 + 0.1, _y(), None), InputError, "[0, 1]"),
    ("x-nan", GN, _Wrap, lambda: (_x().index_fill(0, torch.tensor([2]), float("nan")), _y(), None),
     InputError, "[2]"),
    ("wrong-shape-x", FG, _Wrap, lambda: (_x()[:, :, :4], _y(), None), InputError, "cannot take x"),
    ("float-labels", TEAM_, _Wrap, lambda: (_x(), _y().float(), None), InputError, "integer"),
    ("bool-labels", TEAM_, _Wrap, lambda: (_x(), _y() > 4, None), InputError, "integer"),
    ("2d-labels", TEAM_, _Wrap, lambda: (_x(), _y()[:, None], None), InputError, "1-D"),
    ("numpy-labels", TEAM_, _Wrap, lambda: (_x(), _y().numpy(), None), InputError, "torch.Tensor"),
    ("labels-out-of-range", TEAM_, _Wrap, lambda: (_x(), _y() + 10, None), InputError, "outside"),
    ("negative-labels", IFG, _Wrap, lambda: (_x(), _y().to(torch.int8) - 20, None), InputError, "outside"),
    ("labels-wrong-length", TEAM_, _Wrap, lambda: (_x(), _y()[:-1], None), InputError, "entries"),
    ("target-equals-y", TEAM_T, _Wrap, lambda: (_x(), _y(), _y()), InputError, "equals"),
    ("target-out-of-range", TEAM_T, _Wrap, lambda: (_x(), _y(), _y() * 0 + 12), InputError, "outside"),
    ("target-on-untargeted", TEAM_, _Wrap, lambda: (_x(), _y(), _other(_y())), InputError, "untargeted"),
    ("missing-target", TEAM_T, _Wrap, lambda: (_x(), _y(), None), InputError, "pass target"),
    ("tuple-output", TEAM_, lambda: _Wrap(lambda z: (z, z)), lambda: (_x(), _y(), None), InputError, "tuple"),
    ("dict-output", TEAM_, lambda: _Wrap(lambda z: {"logits": z}), lambda: (_x(), _y(), None), InputError, "dict"),
    ("1d-output", TEAM_, lambda: _Wrap(lambda z: z[:, 0]), lambda: (_x(), _y(), None), InputError, "shape"),
    ("one-class-output", FG, lambda: _Wrap(lambda z: z[:, :1]), lambda: (_x(), _y() * 0, None), InputError, "class"),
    ("int-output", FG, lambda: _Wrap(lambda z: z.long()), lambda: (_x(), _y(), None), InputError, "floating"),
    ("bn-child-training", TEAM_, _bn_child_training, lambda: (_x(), _y(), None), InputError, "training mode"),
    ("model-training", FG, lambda: _Wrap().train(), lambda: (_x(), _y(), None), InputError, "training mode"),
    ("not-a-module", FG, lambda: (lambda x: x), lambda: (_x(), _y(), None), InputError, "nn.Module"),
    # every attack class refuses the NaN model, numpy input and a BN child in training mode
    *[(f"{name}-{case}", atk, model, inputs, InputError, word)
      for name, atk in (("gauss-newton", GN), ("fgsm", FG), ("ifgsm", IFG), ("cwl2", CW))
      for case, model, inputs, word in (
          ("nan", lambda: _Wrap(_nan_class), lambda: (_x(), _y(), None), "NaN"),
          ("numpy", _Wrap, lambda: (_x().numpy(), _y(), None), "from_numpy"),
          ("bn-train", _bn_child_training, lambda: (_x(), _y(), None), "training mode"))],
    *[pytest.param(f"{name}-{case}", atk, model, inputs, InputError, word, marks=peers)
      for name, atk in (("pgd", PGD), ("ddn-100", DDN))
      for case, model, inputs, word in (
          ("nan", lambda: _Wrap(_nan_class), lambda: (_x(), _y(), None), "NaN"),
          ("float16", lambda: _Wrap().half(), lambda: (_x(), _y(), None), "float16"),
          ("tuple", lambda: _Wrap(lambda z: (z, z)), lambda: (_x(), _y(), None), "tuple"),
          ("bn-train", _bn_child_training, lambda: (_x(), _y(), None), "training mode"),
          ("labels", _Wrap, lambda: (_x(), _y() + 10, None), "outside"))],
]


@pytest.mark.parametrize("case,attack,model,inputs,error,word", CALLS, ids=[
    c.values[0] if hasattr(c, "values") else c[0] for c in CALLS])
def test_bad_call_raises_a_clear_error(case, attack, model, inputs, error, word):
    m = model()
    atk = attack(m)
    x, y, t = inputs()
    before = {k: v.clone() for k, v in m.state_dict().items()} if isinstance(m, nn.Module) else {}
    with pytest.raises(error) as info:
        atk(x, y, t)
    assert word in str(info.value), str(info.value)
    if before and not any(v.is_meta for v in before.values()):  # e.g. BatchNorm statistics: no probe ran
        torch.testing.assert_close(m.state_dict(), before, rtol=0, atol=0, equal_nan=True)


def test_bn_child_in_training_mode_is_named_and_not_updated():
    m = _bn_child_training()
    before = m[2].running_mean.clone()
    with pytest.raises(InputError, match=r"submodule \[2\]"):
        ta.TEAM(m)(_x(), _y())
    assert torch.equal(m[2].running_mean, before)
    assert m[2].training and not m.training  # modes as the caller left them


def test_nan_logits_name_the_examples():
    class HalfNaN(_Wrap):
        def forward(self, x):
            z = self.net(x)
            return torch.where((torch.arange(len(x)) % 2 == 1)[:, None], float("nan"), z)

    with pytest.raises(InputError, match=r"examples \[1, 3\]"):
        FGSM(HalfNaN(), eps=0.1)(_x(), _y())


# ---- 2. budgets and counts, in the constructors -------------------------------------------------

def _lin():
    return _Wrap()


CONSTRUCTORS = [
    *[(f"team-eps-{v}", lambda v=v: ta.TEAM(_lin(), norm="linf", eps=v), "eps") for v in (-0.1, math.nan, math.inf, 0.0)],
    *[(f"team-steps-{v}", lambda v=v: ta.TEAM(_lin(), steps=v), "steps") for v in (0, 2.5, -1)],
    ("team-iterated-steps-0", lambda: ta.TEAM(_lin(), mode="iterated", steps=0), "steps"),
    ("team-eps-steps-2.5", lambda: ta.TEAM(_lin(), eps=0.5, steps=2.5), "steps"),
    ("team-max-radius-0", lambda: ta.TEAM(_lin(), mode="paper", max_radius=0.0), "max_radius"),
    ("team-max-radius-nan", lambda: ta.TEAM(_lin(), mode="iterated", max_radius=math.nan), "max_radius"),
    ("team-starts-0", lambda: ta.TEAM(_lin(), starts=0), "starts"),
    ("team-screen--1", lambda: ta.TEAM(_lin(), screen=-1), "screen"),
    ("team-overshoot--0.1", lambda: ta.TEAM(_lin(), overshoot=-0.1), "overshoot"),
    ("team-per-pass-0", lambda: ta.TEAM(_lin(), mode="paper", per_pass=0), "per_pass"),
    ("team-rounds-1.5", lambda: ta.TEAM(_lin(), mode="paper", rounds=1.5), "rounds"),
    ("team-box-iters-0", lambda: ta.TEAM(_lin(), mode="paper", box_iters=0), "box_iters"),
    ("team-krylov-k-0", lambda: ta.TEAM(_lin(), hessian="krylov", mode="paper", krylov_k=0), "krylov_k"),
    ("team-max-batch-0", lambda: ta.TEAM(_lin(), max_batch=0), "max_batch"),
    ("team-eps-string", lambda: ta.TEAM(_lin(), eps="0.1"), "number"),
    ("team-eps-bool", lambda: ta.TEAM(_lin(), eps=True), "number"),
    ("walk-config-steps-0", lambda: WalkConfig(steps=0), "steps"),
    ("search-config-max-radius-inf", lambda: SearchConfig(max_radius=math.inf), "max_radius"),
    ("budget-config-eps-0", lambda: BudgetConfig(eps=0.0), "eps"),
    ("budget-config-steps-2.5", lambda: BudgetConfig(eps=0.1, steps=2.5), "steps"),
    *[(f"gn-steps-{v}", lambda v=v: ta.GaussNewton(_lin(), steps=v), "steps") for v in (0, 2.5, -1)],
    ("gn-mu-0", lambda: ta.GaussNewton(_lin(), mu=0.0), "mu"),
    ("gn-kappa-nan", lambda: ta.GaussNewton(_lin(), kappa=math.nan), "kappa"),
    *[(f"fgsm-eps-{v}", lambda v=v: FGSM(_lin(), eps=v), "eps") for v in (-0.1, math.nan, math.inf, 0.0)],
    ("ifgsm-step-0", lambda: IFGSM(_lin(), step=0.0), "step"),
    ("ifgsm-step--0.1", lambda: IFGSM(_lin(), step=-0.1), "step"),
    ("ifgsm-steps-2.5", lambda: IFGSM(_lin(), step=0.1, steps=2.5), "steps"),
    ("ifgsm-eps--0.1", lambda: IFGSM(_lin(), step=0.1, eps=-0.1), "eps"),
    ("ifgsm-eps-inf", lambda: IFGSM(_lin(), step=0.1, eps=math.inf), "eps"),
    ("cwl2-steps--1", lambda: CWL2(_lin(), steps=-1), "steps"),
    ("cwl2-steps-2.5", lambda: CWL2(_lin(), steps=2.5), "steps"),
    ("cwl2-lr-0", lambda: CWL2(_lin(), lr=0.0), "lr"),
    ("cwl2-c-nan", lambda: CWL2(_lin(), c=math.nan), "c"),
    *[pytest.param(f"pgd-eps-{v}", lambda v=v: baselines.make("pgd", _lin(), eps=v), "eps", marks=peers)
      for v in (-0.1, math.nan, math.inf, 0.0)],
    *[pytest.param(f"pgd-steps-{v}", lambda v=v: baselines.make("pgd", _lin(), steps=v), "steps", marks=peers)
      for v in (0, 2.5, -1)],
    pytest.param("pgd-alpha-0", lambda: baselines.make("pgd", _lin(), alpha=0.0), "alpha", marks=peers),
    pytest.param("pgd-seed--1", lambda: baselines.make("pgd", _lin(), seed=-1), "seed", marks=peers),
    pytest.param("ddn-steps-0", lambda: baselines.make("ddn-100", _lin(), steps=0), "steps", marks=peers),
    pytest.param("ddn-gamma-0", lambda: baselines.make("ddn-100", _lin(), gamma=0.0), "gamma", marks=peers),
    pytest.param("fmn-steps-2.5", lambda: baselines.make("fmn-l2-100", _lin(), steps=2.5), "steps", marks=peers),
    pytest.param("cw-bss-0", lambda: baselines.make("cw-9x100", _lin(), binary_search_steps=0),
                 "binary_search_steps", marks=peers),
    pytest.param("alma-num-steps-nan", lambda: baselines.make("alma-100", _lin(), steps=math.nan), "steps",
                 marks=peers),
    pytest.param("mdi2fgsm-prob-2", lambda: baselines.make("mdi2fgsm", _lin(), diversity_prob=2.0),
                 "diversity_prob", marks=peers),
]


@pytest.mark.parametrize("case,build,word", CONSTRUCTORS, ids=[
    c.values[0] if hasattr(c, "values") else c[0] for c in CONSTRUCTORS])
def test_bad_budget_or_count_is_refused_in_the_constructor(case, build, word):
    with pytest.raises(InputError) as info:
        build()
    assert word in str(info.value), str(info.value)


@peer_test
def test_peer_defaults_and_bim_automatic_steps_still_accepted():
    assert baselines.make("bim", _lin(), steps=0).params["steps"] == 0   # 0 = torchattacks' own choice
    assert baselines.make("mdi2fgsm", _lin(), alpha=None).params["alpha"] is None
    assert baselines.make("pgd", _lin(), steps=np.int64(3), eps=torch.tensor(0.1)).params["steps"] == 3
    for name, p in baselines.PRESETS.items():  # every preset's own defaults pass the checks
        baselines.make(name, _lin(), targeted=not p.untargeted, **dict(p.kwargs))


# ---- 2b. property-based: check_number and the constructors agree with their definitions ----------

_reals = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                   st.sampled_from([0, 1, -1, 0.0, -0.0, 1e-300, 2.5]))


@settings(max_examples=200, deadline=None)
@given(v=_reals, low=st.one_of(st.none(), st.floats(-5, 5)), strict=st.booleans(), integer=st.booleans())
def test_check_number_accepts_exactly_the_admissible_values(v, low, strict, integer):
    fv = float(v)
    ok = math.isfinite(fv) and (not integer or fv == int(fv)) and (
        low is None or fv > low or (fv == low and not strict))
    if ok:
        out = check_number("budget", v, low=low, strict=strict, integer=integer)
        assert isinstance(out, int if integer else float)
        assert out == (int(v) if integer and isinstance(v, int) else fv if not integer else int(fv))
    else:
        with pytest.raises(InputError, match="budget"):
            check_number("budget", v, low=low, strict=strict, integer=integer)


@settings(max_examples=50, deadline=None)
@given(v=st.one_of(st.text(max_size=3), st.booleans(), st.lists(st.floats(), max_size=2), st.just(object())))
def test_check_number_refuses_what_is_not_a_number(v):
    with pytest.raises(InputError, match="must be a number"):
        check_number("steps", v)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(eps=st.floats(allow_nan=True, allow_infinity=True))
def test_eps_accepted_iff_finite_and_positive(eps):
    m = _lin()
    ok = math.isfinite(eps) and eps > 0
    for build in (lambda: ta.TEAM(m, norm="linf", eps=eps), lambda: FGSM(m, eps=eps),
                  lambda: IFGSM(m, step=0.01, eps=eps), lambda: BudgetConfig(eps=eps)):
        if ok:
            assert float(build().eps) == eps
        else:
            with pytest.raises(InputError, match="eps"):
                build()


@settings(max_examples=60, deadline=None)
@given(steps=st.one_of(st.integers(-5, 50), st.floats(-5, 50), st.sampled_from([math.nan, math.inf, 2.0, 0.5])))
def test_counts_accepted_iff_integer_at_least_one(steps):
    m = _lin()
    ok = math.isfinite(steps) and steps == int(steps) and steps >= 1
    for build in (lambda: ta.TEAM(m, mode="iterated", steps=steps), lambda: ta.GaussNewton(m, steps=steps),
                  lambda: IFGSM(m, step=0.01, steps=steps), lambda: WalkConfig(steps=steps)):
        if ok:
            built = build()
            assert built.steps == int(steps) and isinstance(built.steps, int)
        else:
            with pytest.raises(InputError, match="steps"):
                build()


@peer_test
@settings(max_examples=40, deadline=None)
@given(eps=st.floats(allow_nan=True, allow_infinity=True), steps=st.integers(-3, 8))
def test_peer_preset_numbers_accepted_iff_admissible(eps, steps):
    m = _lin()
    ok = math.isfinite(eps) and eps > 0 and steps >= 1
    if ok:
        atk = baselines.make("pgd", m, eps=eps, steps=steps)
        assert atk.params["eps"] == eps and atk.params["steps"] == steps
    else:
        with pytest.raises(InputError, match="eps|steps"):
            baselines.make("pgd", m, eps=eps, steps=steps)


# ---- 3. never a silent wrong answer: NaN is not a success ---------------------------------------

def test_nan_logits_or_nan_x_adv_are_never_a_success():
    z = torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [0.0, float("inf")]])
    y = torch.zeros(3, dtype=torch.long)
    assert Goal(y).reached(z).tolist() == [True, False, False]   # argmax picks the NaN / inf
    assert Goal(y, torch.ones(3, dtype=torch.long)).reached(z).tolist() == [True, False, False]
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        model[1].bias.zero_()
    x_adv = torch.tensor([[0.0, 1.0, 0, 0], [0.0, 1.0, float("nan"), 0]])
    assert is_adversarial(model, x_adv, torch.zeros(2, dtype=torch.long)).tolist() == [True, False]


class _NaNAttack(Attack):
    """An attack whose output is NaN on odd rows (a broken solver)."""

    name = "nan-attack"

    def run(self, model, x, y, target):
        raw = (1 - x).clone()
        raw[1::2] = float("nan")
        return raw, None


def test_an_attack_returning_nan_does_not_succeed(digits):
    model, x, y = digits
    res = _NaNAttack(model)(x, y)
    assert not bool(res.success[1::2].any())
    assert res.summary().successes == int(res.success[0::2].sum())


def test_predict_and_accuracy_refuse_non_finite_outputs(digits):
    _, x, y = digits
    for model in (_nan_weight(), _Wrap(_nan_class)):
        with pytest.raises(InputError, match="NaN"):
            ta.data.predict(model, x)
        with pytest.raises(InputError, match="NaN"):
            ta.data.accuracy(model, x, y)
        with pytest.raises(InputError, match="NaN"):
            ta.data.correctly_classified(model, x, y)
    with pytest.raises(InputError, match="tuple"):
        ta.data.predict(_Wrap(lambda z: (z, z)), x)


def test_predict_names_the_example_across_batches(digits):
    _, x, _ = digits
    x = torch.cat([x] * 3)                         # 12 examples, batches of 5

    class NaNAt7(_Wrap):
        def forward(self, xx):
            z = self.net(xx)
            return torch.where((xx.flatten(1)[:, :1] == -1.0), float("nan"), z)

    xs = x.clone()
    xs[7].view(-1)[0] = -1.0                          # only the model sees it (predict does not range-check)
    with pytest.raises(InputError, match=r"examples \[7\]"):
        ta.data.predict(NaNAt7(), xs, batch_size=5)


# ---- 4. inputs of any integer label dtype, empty batches ----------------------------------------

@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16, torch.int8])
def test_labels_of_any_integer_dtype(digits, dtype):
    model, x, y = digits
    ref = FGSM(model, eps=0.1)(x, y)
    got = FGSM(model, eps=0.1)(x, y.to(dtype))
    assert torch.equal(ref.x_adv, got.x_adv) and torch.equal(ref.success, got.success)
    t = _other(y)
    ref_t = ta.TEAM(model, targeted=True, steps=5, starts=1, screen=2)(x, y, t)
    got_t = ta.TEAM(model, targeted=True, steps=5, starts=1, screen=2)(x, y.to(dtype), t.to(dtype))
    assert torch.equal(ref_t.x_adv, got_t.x_adv)


@pytest.mark.parametrize("make", [
    lambda m: ta.TEAM(m), lambda m: ta.TEAM(m, norm="l0"), lambda m: ta.GaussNewton(m, targeted=False),
    lambda m: FGSM(m, eps=0.1), lambda m: CWL2(m, targeted=False),
    pytest.param(lambda m: baselines.make("ddn-100", m), marks=peers)])
def test_empty_batch_gives_an_empty_result_without_work(digits, make):
    model, x, y = digits
    res = make(model)(x[:0], y[:0])
    assert len(res) == 0 and res.x_adv.shape == (0, *x.shape[1:]) and res.asr == 0.0
    assert res.counters.forwards == res.counters.gradients == 0
    assert res.summary().successes == 0 and res.to_dict()["n"] == 0


def test_checks_are_not_counted(digits):
    model, x, y = digits
    res = FGSM(model, eps=0.1)(x, y)                 # FGSM: one forward and one gradient per image
    assert (res.counters.forwards, res.counters.gradients) == (len(x), len(x))


# ---- 5. the caller's model leaves every attack call as it came -----------------------------------

ATTACKS = {
    "team-min-norm-l2": lambda m: ta.TEAM(m, norm="l2", steps=6, starts=2, screen=2),
    "team-min-norm-linf": lambda m: ta.TEAM(m, norm="linf", steps=6, starts=2, screen=2),
    "team-iterated-l2": lambda m: ta.TEAM(m, norm="l2", mode="iterated", steps=2, hessian="exact"),
    "team-iterated-l0": lambda m: ta.TEAM(m, norm="l0", steps=2, hessian="ggn"),
    "team-paper-l2": lambda m: ta.TEAM(m, norm="l2", mode="paper", hessian="krylov", krylov_k=4),
    "team-paper-linf": lambda m: ta.TEAM(m, norm="linf", mode="paper", hessian="none"),
    "team-paper-l0": lambda m: ta.TEAM(m, norm="l0", mode="paper", hessian="none"),
    "team-iterated-linf": lambda m: ta.TEAM(m, norm="linf", mode="iterated", steps=2, hessian="ggn"),
    "team-paper-eps": lambda m: ta.TEAM(m, norm="l2", mode="paper", eps=0.5, hessian="exact"),
    "team-budget-l2": lambda m: ta.TEAM(m, norm="l2", eps=0.5, steps=3),
    "team-budget-linf": lambda m: ta.TEAM(m, norm="linf", eps=0.05),
    "team-budget-l0": lambda m: ta.TEAM(m, norm="l0", eps=3, steps=2, hessian="none"),
    "team-targeted": lambda m: ta.TEAM(m, targeted=True, steps=4, starts=1, screen=2),
    "gauss-newton": lambda m: ta.GaussNewton(m, targeted=True, steps=4),
    "fgsm": lambda m: FGSM(m, eps=0.1),
    "ifgsm": lambda m: IFGSM(m, step=0.02, steps=3),
    "cwl2": lambda m: CWL2(m, steps=3),
    "team-bounds": lambda m: ta.TEAM(m, norm="l2", steps=4, starts=1, screen=2, bounds=(0, 255),
                                     preprocessing=([127.5], [127.5])),
}
PEER_ATTACKS = {"fgsm": {}, "pgd": {"steps": 3}, "ddn-100": {"steps": 5}, "fmn-l2-100": {"steps": 5},
                "deepfool-paper": {}, "cw-9x100": {"binary_search_steps": 1, "steps": 3}, "jsma": {}}


def _state(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, m.training) for n, m in model.named_modules()],
            [(n, p.requires_grad, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()])


def _assert_unchanged(model: nn.Module, before) -> None:
    sd, modes, params = before
    now = model.state_dict()
    assert sd.keys() == now.keys()
    for k in sd:
        assert torch.equal(sd[k], now[k]), f"{k} changed"
    assert [(n, m.training) for n, m in model.named_modules()] == modes
    for (n, rg, g), (_, p) in zip(params, model.named_parameters()):
        assert p.requires_grad == rg, f"{n}.requires_grad changed"
        assert (p.grad is None) if g is None else torch.equal(p.grad, g), f"{n}.grad changed"


def _run_and_check(build, targeted: bool | None = None):
    model = _small_bn_cnn()
    x, y = ta.data.load("digits", "test", n=N, seed=2)
    atk = build(model)
    before = _state(model)
    t = _other(y) if atk.targeted else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = atk(x * 255.0 if atk.input_space is not None else x, y, t)
    _assert_unchanged(model, before)
    return res


@pytest.mark.parametrize("name", list(ATTACKS))
def test_model_unchanged_by_every_attack(name):
    res = _run_and_check(ATTACKS[name])
    assert len(res) == N


@peer_test
@pytest.mark.parametrize("name", list(PEER_ATTACKS))
def test_model_unchanged_by_peers(name):
    targeted = not baselines.PRESETS[name].untargeted
    res = _run_and_check(lambda m: baselines.make(name, m, targeted=targeted, **PEER_ATTACKS[name]))
    assert len(res) == N


def test_existing_grads_survive_and_none_are_left():
    model = _small_bn_cnn()
    x, y = ta.data.load("digits", "test", n=N, seed=2)
    model(x).sum().backward()                       # the caller's own gradients, in .grad
    before = _state(model)
    CWL2(model, steps=2)(x, y, _other(y))
    ta.TEAM(model, steps=3, starts=1, screen=1)(x, y)
    _assert_unchanged(model, before)


def test_model_guard_restores_what_an_attack_changed():
    model = _small_bn_cnn()
    before = _state(model)
    with ModelGuard(model):
        model.train()
        model(torch.rand(8, 1, 8, 8)).sum().backward()     # BN stats and .grad change
        for p in model.parameters():
            p.requires_grad_(False)
    _assert_unchanged(model, before)


# ---- 6. warnings about the model, once per call --------------------------------------------------

def _calls_warnings(model, x, y) -> list[type]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        FGSM(model, eps=0.05)(x, y)
    return [w.category for w in rec if issubclass(w.category, checks.ModelWarning)]


def test_clean_model_gets_no_warning(digits):
    model, x, y = digits
    assert _calls_warnings(model, x, y) == []


def test_probability_and_log_probability_outputs_warn(lin_batch):
    x, y = lin_batch
    assert checks.ProbabilityOutputWarning in _calls_warnings(_Wrap(lambda z: z.softmax(1)), x, y)
    assert checks.ProbabilityOutputWarning in _calls_warnings(_Wrap(lambda z: z.log_softmax(1)), x, y)
    assert checks.ProbabilityOutputWarning not in _calls_warnings(_Wrap(), x, y)


def test_randomised_model_warns_and_the_rng_is_untouched(lin_batch):
    x, y = lin_batch
    assert _calls_warnings(_Noisy(), x, y).count(checks.RandomisedModelWarning) == 1
    model = _Noisy()
    logits = model(x)
    state = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks.warn_about_model(model, x, logits, Goal(y))
    assert torch.equal(torch.get_rng_state(), state)


def test_zero_gradient_model_warns(lin_batch):
    x, y = lin_batch
    assert checks.ZeroGradientWarning in _calls_warnings(_Step(), x, y)
    assert checks.ZeroGradientWarning not in _calls_warnings(_Wrap(), x, y)


def test_warnings_are_model_warnings():
    for w in (checks.ProbabilityOutputWarning, checks.RandomisedModelWarning, checks.ZeroGradientWarning,
              checks.SaturationWarning):
        assert issubclass(w, checks.ModelWarning) and issubclass(w, UserWarning)


# ------------------------------------------------------------------------------------------
# training arguments: refused before any data is read or any file is written
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [
    ({"epochs": -3}, "epochs"), ({"epochs": 0}, "epochs"), ({"epochs": 1.5}, "epochs"),
    ({"lr": -1.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"seed": -1}, "seed"), ({"weight_decay": -0.1}, "weight_decay"), ({"threads": 0}, "threads"),
    ({"temperature": 0.0}, "temperature"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"schedule": "step"}, "schedule"), ({"arch": "no-such-arch"}, "architecture"),
])
def test_train_refuses_bad_arguments_and_writes_nothing(tmp_path, kw, msg):
    from teamattack.zoo.train import train

    kw = {"arch": "digits-linear", **kw}
    out = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match=msg):
        train(out=out, root=tmp_path / "no-data", progress=False, log=lambda s: None, **kw)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kw, msg", [
    ({"eps": -0.1}, "eps"), ({"eps": float("nan")}, "eps"), ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"),
])
def test_adversarial_attack_spec_refuses_bad_budgets(kw, msg):
    from teamattack.defenses import AttackSpec

    with pytest.raises(ValueError, match=msg):
        AttackSpec("pgd", **kw)


@pytest.mark.parametrize("kw, msg", [
    ({"eps": 0.0}, "eps"), ({"offline": True, "offline_n": 0}, "offline_n"), ({"threads": 0}, "threads"),
    ({"mix": 1.5}, "mix"), ({"ramp_epochs": -1.0}, "ramp_epochs"), ({"epochs": 0}, "epochs"),
])
def test_adversarial_train_refuses_bad_arguments_and_writes_nothing(tmp_path, kw, msg):
    from teamattack.defenses import AttackSpec, adversarial_train

    with pytest.raises(ValueError, match=msg):
        adversarial_train("digits-cnn", AttackSpec("pgd", eps=0.1), "digits", out=tmp_path / "m.safetensors",
                          progress=False, log=lambda s: None, **kw)
    assert not any(tmp_path.iterdir())
