"""TEAM's fixed-budget mode: the walk, then an APGD-style ascent inside the ball (attacks/fixed_budget.py)."""
import copy

import pytest
import torch
from torch import nn

import teamattack as ta
from teamattack.attacks.fixed_budget import CE_SPREAD, _checkpoints, ascent, ce_temperature, fixed_budget, margin_loss, project
from teamattack.counting import CountingModel


@pytest.fixture(scope="module")
def digits():
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=80, seed=1)
    x, y = ta.data.correctly_classified(model, x, y)
    return model, x[:32], y[:32]


def _size(d, norm):
    d = d.flatten(1)
    return d.norm(dim=1) if norm == "l2" else d.abs().amax(1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_lands_in_ball_and_box(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 4, 4, generator=g)
    far = x + 3 * torch.randn(16, 1, 4, 4, generator=g)
    p = project(x, far, 0.3, norm)
    assert bool((_size(p - x, norm) <= 0.3 + 1e-6).all())
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    inside = x + 0.01 * torch.randn(16, 1, 4, 4, generator=g).clamp(-1, 1)
    torch.testing.assert_close(project(x, inside.clamp(0, 1), 0.3, norm), inside.clamp(0, 1))


def test_margin_loss_is_positive_exactly_when_adversarial():
    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.5, 2.0]])
    y = torch.tensor([0, 0, 2])
    assert (margin_loss(logits, y, None) > 0).tolist() == [False, True, False]
    t = torch.tensor([1, 1, 1])
    assert (margin_loss(logits, y, t) > 0).tolist() == [False, True, False]


def test_checkpoints_follow_apgd():
    """APGD's schedule for 100 iterations: 22, 41, 57, 70, 80, 87, 93, 99 (Croce & Hein 2020, Sec. 3.2)."""
    assert _checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("loss,stall", [("ce", False), ("margin", True)])
def test_ascent_with_steps_per_example_equals_each_example_run_alone(digits, loss, stall):
    """One batch where every example has its own number of steps (`fixed_budget`'s cross-entropy
    ascent: each image's leftover budget) gives each example what a run with its steps alone
    gives: its points, verdicts and gradients (its own checkpoint schedule, `_checkpoints`)."""
    model, x, y = digits
    model, x, y = copy.deepcopy(model).double(), x[:12].double(), y[:12]   # float64: no rounding that a batch size changes
    steps = torch.tensor([0, 3, 7, 12, 30, 7, 12, 30, 3, 45, 1, 20])
    eps = 0.08
    start = project(x, x + 0.5 * eps * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(3))), eps, "linf")
    together = ascent(CountingModel(model), x, start, y, None, eps=eps, norm="linf", steps=steps, loss=loss, stall=stall)
    assert int(together.gradients[0]) == 0 and torch.equal(together.points[0], start[0])
    for i in range(1, len(x)):
        alone = ascent(CountingModel(model), x[i:i + 1], start[i:i + 1], y[i:i + 1], None, eps=eps, norm="linf",
                       steps=int(steps[i]), loss=loss, stall=stall)
        torch.testing.assert_close(together.points[i:i + 1], alone.points, rtol=0, atol=1e-9)
        assert bool(together.adversarial[i] == alone.adversarial[0])
        assert int(together.gradients[i]) == int(alone.gradients[0]) <= 1 + int(steps[i])
    assert 0 < int(together.adversarial.sum()) < len(x)   # the case exercises both outcomes


@pytest.mark.parametrize("norm,eps", [("l2", 0.3), ("linf", 0.05)])
def test_ascent_on_a_linear_model_breaks_exactly_the_images_within_reach(norm, eps):
    """Two classes, w.x + b, small eps (box inactive): the minimal distance is |m| / ||w||_dual,
    so the ascent breaks an image exactly when that distance is below eps."""
    torch.manual_seed(0)
    n = 16
    w = torch.randn(n, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n, 2)).double().eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([w / 2, -w / 2]))
        model[1].bias.zero_()
    x = (0.5 + 0.05 * torch.randn(64, 1, 4, 4, dtype=torch.float64)).clamp(0.3, 0.7)
    with torch.no_grad():
        y = model(x).argmax(1)
    margin = (x.flatten(1) @ w).abs()
    dual = w.norm() if norm == "l2" else w.abs().sum()
    reach = margin / dual <= eps
    clear = (margin / dual - eps).abs() > 0.02 * eps  # leave out the images at the edge
    out, adv, _ = ascent(CountingModel(model), x, x.clone(), y, None, eps=eps, norm=norm, steps=30)
    assert bool((adv[clear] == reach[clear]).all())
    with torch.no_grad():
        assert bool((model(out).argmax(1) != y)[adv].all())
    assert bool((_size(out - x, norm) <= eps + 1e-9).all())


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_team_fixed_budget_inside_budget_and_at_least_the_walk(digits, norm, eps):
    """Every example inside the ball and the box, success by a fresh pass, at most 100
    gradients per image, and at least every image the min-norm walk breaks within eps."""
    model, x, y = digits
    res = ta.TEAM(model, norm=norm, eps=eps)(x, y)
    dist = res.linf if norm == "linf" else res.l2
    assert bool((dist <= eps + 1e-5).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    with torch.no_grad():
        assert bool((model(res.x_adv).argmax(1) != y).eq(res.success).all())
    assert res.counters.gradients / len(x) <= 100
    walk = ta.TEAM(model, norm=norm, mode="min-norm")(x, y)
    walk_dist = walk.linf if norm == "linf" else walk.l2
    walk_broken = walk.success & (walk_dist <= eps)
    assert bool(res.success[walk_broken].all())
    assert res.asr >= walk_broken.float().mean().item()


def test_fixed_budget_ascent_takes_over_where_the_walk_fails(digits):
    """A walk that finds nothing: the ascent alone, from x, still breaks images (the seam works)."""
    model, x, y = digits
    nothing = lambda xx, yy, tt: (xx.clone(), torch.full((len(xx),), float("nan")))
    out = fixed_budget(CountingModel(model), x, y, None, norm="linf", eps=0.15, walk=nothing, steps=40).points
    assert bool((_size(out - x, "linf") <= 0.15 + 1e-6).all())
    with torch.no_grad():
        assert float((model(out).argmax(1) != y).float().mean()) > 0.5


class _FlatRunnerUp(nn.Module):
    """Three classes at x near 0.5: Z_0 = 1 and Z_1 = 0.5 constant, Z_2 = -1 + 10 w.(x - 0.5).

    The margin's runner-up is class 1, whose margin Z_1 - Z_0 has zero gradient: an ascent of the
    margin cannot move. The cross-entropy also sees class 2 (softmax weight > 0) and climbs toward
    it; class 2 wins once w.(x - 0.5) > 0.2, inside Linf eps = 0.1 (||w||_1 = 4) and L2 eps = 0.25.
    """

    def __init__(self, n: int = 4):
        super().__init__()
        self.register_buffer("w", torch.ones(n, dtype=torch.float64))

    def forward(self, x):
        t = (x.flatten(1) - 0.5) @ self.w
        one = torch.ones_like(t)
        return torch.stack([one, 0.5 * one, -1 + 10 * t], 1)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.25)])
def test_cross_entropy_phase_breaks_what_the_margin_ascent_cannot(norm, eps):
    x = torch.full((3, 1, 2, 2), 0.5, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    model = _FlatRunnerUp().eval()
    counting = CountingModel(model)
    only_margin = ascent(counting, x, x.clone(), y, None, eps=eps, norm=norm, steps=10)
    assert not bool(only_margin.adversarial.any())                   # stuck
    assert bool((model(only_margin.points).argmax(1) == 0).all())
    assert counting.gradients == 3 * (1 + 10) and bool((only_margin.gradients == 11).all())
    stalled = ascent(CountingModel(model), x, x.clone(), y, None, eps=eps, norm=norm, steps=10, stall=True)
    assert bool((stalled.gradients == 1 + 3).all())                  # gave up at the first checkpoint (3)
    nothing = lambda xx, yy, tt: (xx.clone(), torch.full((len(xx),), float("nan"), dtype=xx.dtype))
    counting = CountingModel(model)
    res = fixed_budget(counting, x, y, None, norm=norm, eps=eps, walk=nothing, steps=10)
    out = res.points
    assert bool(res.adversarial.all()) and bool(res.walk_distance.isnan().all())   # the verdicts it returns
    assert bool((model(out).argmax(1) == 2).all())                   # broken, toward class 2
    assert bool((_size(out - x, norm) <= eps + 1e-9).all()) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert counting.gradients <= 3 * (10 + 2)                        # the two ascents share 12 per image


class _Saturated(_FlatRunnerUp):
    """_FlatRunnerUp in float32 with its logits x 100 (a distilled model's scale): at x the softmax
    of class 2 is exp(-200), 0 in float32, so the cross-entropy's gradient is exactly 0."""

    def forward(self, x):
        return 100 * super().forward(x)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.25)])
def test_cross_entropy_phase_works_on_a_saturated_softmax(norm, eps):
    x = torch.full((3, 1, 2, 2), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    model = _Saturated().float().eval()
    logits = model(x)
    p = torch.autograd.functional.jacobian(lambda v: torch.nn.functional.cross_entropy(model(v), y), x)
    assert float(p.abs().max()) == 0.0                                # APGD-CE's loss cannot move
    T = ce_temperature(logits)
    assert torch.allclose(T, torch.full((3,), 200 / CE_SPREAD))       # spread 100 - (-100)
    assert torch.equal(ce_temperature(logits / T[:, None]), torch.ones(3))
    res = ascent(CountingModel(model), x, x.clone(), y, None, eps=eps, norm=norm, steps=10, loss="ce")
    assert bool(res.adversarial.all()) and bool((model(res.points).argmax(1) == 2).all())
    assert bool((_size(res.points - x, norm) <= eps * (1 + 1e-6)).all())


class _Pocket(nn.Module):
    """Two classes on 4 inputs: Z_0 = 0, Z_1 = 1 - 625 ||x - c||^2. Class 1 holds only the ball of
    radius 0.04 around c = (0.6, 0.6, 0.55, 0.45): a narrow pocket of the kind a walk ends next to."""

    def forward(self, x):
        c = torch.tensor([0.6, 0.6, 0.55, 0.45], dtype=x.dtype)
        z1 = 1 - 625 * ((x.flatten(1) - c) ** 2).sum(1)
        return torch.stack([torch.zeros_like(z1), z1], 1)


def test_margin_ascent_from_the_walks_point_keeps_to_its_neighbourhood():
    """x = 0.5, Linf eps 0.2; the walk's point x + (0.25, 0.2, 0.1, 0) (outside the ball) pulled into
    it lies 0.1 from the pocket. APGD's first step of 2 eps, made for a start at x, jumps past the
    pocket and the ascent gives up at its first checkpoint; the warm start's step of WARM_STEP x eps
    walks in. fixed_budget breaks the image."""
    from teamattack.attacks import fixed_budget as fbm

    model, eps = _Pocket().eval(), 0.2
    x = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    y = torch.zeros(1, dtype=torch.long)
    walk_point = x + torch.tensor([0.25, 0.2, 0.1, 0.0], dtype=torch.float64).view(1, 1, 2, 2)
    start = project(x, walk_point, eps, "linf")
    cold = ascent(CountingModel(model), x, start, y, None, eps=eps, norm="linf", steps=50, stall=True, step=2.0)
    assert not bool(cold.adversarial.any())
    warm = ascent(CountingModel(model), x, start, y, None, eps=eps, norm="linf", steps=fbm.WARM_STEPS, stall=True,
                  step=fbm.WARM_STEP)
    assert bool(warm.adversarial.all()) and bool((model(warm.points).argmax(1) == 1).all())
    walk = lambda xx, yy, tt: (walk_point.clone(), torch.tensor([0.25], dtype=xx.dtype))
    out = fixed_budget(CountingModel(model), x, y, None, norm="linf", eps=eps, walk=walk, steps=50).points
    assert bool((model(out).argmax(1) == 1).all()) and float(_size(out - x, "linf").max()) <= eps + 1e-12


def test_default_split_stays_within_apgd_ce_100():
    """Every image costs at most the walk's expansions + the ascents' steps + 2 <= 100."""
    from teamattack.attacks import fixed_budget as fbm
    from teamattack.attacks.boundary_walk import walk_budget

    per_image = walk_budget(fbm.WALK_STEPS, fbm.WALK_STARTS, fbm.WALK_SCREEN) + fbm.ASCENT_STEPS + 2
    assert per_image <= 100


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_team_fixed_budget_gradients_per_image_as_claimed(digits, norm, eps):
    """The counted gradients never exceed the per-image bound on any image (one image at a time),
    untargeted and targeted (whose walk is the cold smooth-max walk alone)."""
    from teamattack.attacks import fixed_budget as fbm
    from teamattack.attacks.boundary_walk import walk_budget

    model, x, y = digits
    bound = walk_budget(fbm.WALK_STEPS, fbm.WALK_STARTS, fbm.WALK_SCREEN) + fbm.ASCENT_STEPS + 2
    attack = ta.TEAM(model, norm=norm, eps=eps, hessian="none")
    targeted = ta.TEAM(model, norm=norm, eps=eps, hessian="none", targeted=True)
    for i in range(4):
        for res in (attack(x[i:i + 1], y[i:i + 1]), targeted(x[i:i + 1], y[i:i + 1], (y[i:i + 1] + 1) % 10)):
            assert res.counters.gradients <= bound
            dist = res.linf if norm == "linf" else res.l2
            assert float(dist[0]) <= eps + 1e-6


def test_team_fixed_budget_batch_independent(digits):
    """The CE phase runs one call per distinct remaining budget and starts from the same offset for
    every image: an image's outcome does not depend on the batch it came in."""
    model, x, y = digits
    attack = ta.TEAM(model, norm="linf", eps=0.1, hessian="none")
    whole = attack(x[:6], y[:6])
    alone = torch.cat([attack(x[i:i + 1], y[i:i + 1]).success for i in range(6)])
    assert whole.success.tolist() == alone.tolist()
    assert 0 < int(whole.success.sum()) < 6  # a mix of broken and robust images


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 0.8)])
def test_target_sweep_breaks_a_superset_inside_the_budget(digits, norm, eps):
    """`targets=k`: every image the fixed-budget attack breaks stays broken, the sweep runs on the
    near misses (more gradients), and every output is inside the ball and the box, its success
    confirmed by a fresh pass."""
    model, x, y = digits
    plain = ta.TEAM(model, norm=norm, eps=eps)(x, y)
    swept = ta.TEAM(model, norm=norm, eps=eps, targets=3)(x, y)
    assert bool(swept.success[plain.success].all())
    assert swept.counters.gradients > plain.counters.gradients   # some images were looked at again
    assert bool(((swept.linf if norm == "linf" else swept.l2) <= eps + 1e-5).all())
    assert float(swept.x_adv.min()) >= 0.0 and float(swept.x_adv.max()) <= 1.0
    with torch.no_grad():
        assert (model(swept.x_adv).argmax(1) != y).tolist() == swept.success.tolist()


def test_target_sweep_targets_only_images_whose_full_walk_ended_near(digits, monkeypatch):
    """The sweep's targeted phase runs on the images whose full walk ended within TARGETED_RANGE x
    eps (or found nothing): at a range of 0 only those, at an infinite one all the walk leaves, the
    shipped range in between; every row is independent of the others in its batch, so the images
    broken grow with the range."""
    from teamattack.attacks import team as T

    model, x, y = digits
    runs = {}
    for r in (0.0, T.TARGETED_RANGE, float("inf")):
        monkeypatch.setattr(T, "TARGETED_RANGE", r)
        runs[r] = ta.TEAM(model, norm="linf", eps=0.15, targets=3)(x, y)
    none, shipped, every = runs.values()
    assert none.counters.gradients <= shipped.counters.gradients <= every.counters.gradients
    assert none.counters.gradients < every.counters.gradients   # some image was out of range
    assert bool(shipped.success[none.success].all()) and bool(every.success[shipped.success].all())


def test_target_sweep_takes_the_class_the_short_walk_misses():
    """A linear model whose nearest wrong class is the least likely one at x: the fixed-budget
    walk with one start heads for the strongest class and the ascents stay there; the sweep's
    full walk (six starts) reaches the near class within eps."""
    # z0 = 5; z1..z4 = 4 + 0.1 * x_j (their boundaries are out of reach); z5 = 100 (x_0 - 0.5) crosses
    # z0 at x_0 = 0.55
    W = torch.zeros(6, 5, dtype=torch.float64)
    b = torch.tensor([5.0, 4.0, 4.0, 4.0, 4.0, -50.0], dtype=torch.float64)
    for j in range(1, 5):
        W[j, j] = 0.1
    W[5, 0] = 100.0
    model = nn.Linear(5, 6).double()
    with torch.no_grad():
        model.weight.copy_(W)
        model.bias.copy_(b)
    model.eval()
    x = torch.full((1, 5), 0.5, dtype=torch.float64)
    y = torch.zeros(1, dtype=torch.long)
    plain = ta.TEAM(model, norm="linf", eps=0.06, starts=1, screen=0, steps=1)(x, y)
    swept = ta.TEAM(model, norm="linf", eps=0.06, starts=1, screen=0, steps=1, targets=1)(x, y)
    assert not bool(plain.success.any())
    assert bool(swept.success.all()) and float(swept.linf[0]) <= 0.06 + 1e-9
    with torch.no_grad():
        assert int(model(swept.x_adv).argmax(1)) == 5


def test_targets_only_in_the_untargeted_fixed_budget(digits):
    model, _, _ = digits
    with pytest.raises(ValueError, match="targets"):
        ta.TEAM(model, norm="l2", targets=3)                       # min-norm: no eps
    with pytest.raises(ValueError, match="targets"):
        ta.TEAM(model, norm="l2", eps=0.5, targeted=True, targets=3)
    with pytest.raises(ValueError, match="targets"):
        ta.TEAM(model, norm="l0", eps=3, targets=3)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_team_fixed_budget_honours_starts_screen_and_steps(digits, norm, eps):
    """starts / screen size the walk and steps the ascent: the per-image gradient bound follows them
    (they used to be accepted and ignored)."""
    from teamattack.attacks import fixed_budget as fbm
    from teamattack.attacks.boundary_walk import walk_budget

    model, x, y = digits
    attack = ta.TEAM(model, norm=norm, eps=eps, hessian="none", starts=1, screen=0, steps=5)
    bound = walk_budget(fbm.WALK_STEPS, 1, 0) + 5 + 2
    default_bound = walk_budget(fbm.WALK_STEPS, fbm.WALK_STARTS, fbm.WALK_SCREEN) + fbm.ASCENT_STEPS + 2
    assert bound < default_bound
    for i in range(3):
        res = attack(x[i:i + 1], y[i:i + 1])
        assert res.counters.gradients <= bound
        assert float((res.linf if norm == "linf" else res.l2)[0]) <= eps + 1e-6


@pytest.mark.parametrize("norm,bad", [("linf", "box_iters"), ("l2", "box_iters"), ("l0", "starts"),
                                      ("l0", "screen")])
def test_team_fixed_budget_rejects_what_its_norm_does_not_take(digits, norm, bad):
    model, _, _ = digits
    with pytest.raises(ValueError, match=bad):
        ta.TEAM(model, norm=norm, eps=0.1 if norm != "l0" else 3, **{bad: 2})


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_walk_stops_at_eps_without_changing_what_it_breaks(digits, norm):
    """`boundary_walk(..., stop_at=eps)` (the fixed-budget walk): an image leaves once a verified
    point within eps exists, so it breaks exactly the images the full walk breaks within eps, the
    others keep the full walk's distance, and it costs fewer gradients."""
    from functools import partial

    from teamattack.attacks.boundary_walk import boundary_walk
    from teamattack.curvature.sources import expand

    model, x, y = digits
    first_order = partial(expand, source="none")
    counts, dists = [], []
    for stop in (None, "median"):
        cm = CountingModel(model)
        eps = None if stop is None else float(dists[0].nanmedian())
        pts, d = boundary_walk(cm, first_order, x, y, None, norm=norm, steps=30, starts=3, screen=8, stop_at=eps)
        assert bool((_size(pts - x, norm)[torch.isfinite(d)] <= d[torch.isfinite(d)] + 1e-5).all())
        counts.append(cm.gradients)
        dists.append(d)
    full, stopped = dists
    inside = full <= eps
    assert (stopped <= eps).tolist() == inside.tolist() and 0 < int(inside.sum()) < len(full)
    torch.testing.assert_close(stopped[~inside], full[~inside])
    assert counts[1] < counts[0]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_walk_takes_screened_starts_over_with_the_same_result(digits, norm):
    """`boundary_walk(..., screened=...)`: a walk with 6 starts that takes over the 3 starts a
    walk of 3 screened (`on_screened`) ends where the walk with 6 starts ends alone, at 3 x 8 fewer
    gradients per image; a walk with another screen refuses them."""
    from functools import partial

    from teamattack.attacks.boundary_walk import boundary_walk
    from teamattack.curvature.sources import expand

    model, x, y = digits
    model, x, y = copy.deepcopy(model).double(), x[:12].double(), y[:12]   # float64: no rounding that a batch size changes
    first_order = partial(expand, source="none")
    log = []
    boundary_walk(CountingModel(model), first_order, x, y, None, norm=norm, steps=30, starts=3, screen=8,
                  on_screened=log.append)
    (screened,) = log
    assert screened.classes.shape == (12, 3) and screened.d.shape[:2] == (12, 3)
    runs = {}
    for given in (None, screened):
        cm = CountingModel(model)
        runs[given is None] = boundary_walk(cm, first_order, x, y, None, norm=norm, steps=40, starts=6, screen=8,
                                            screened=given), cm.gradients
    (alone, g_alone), (taken, g_taken) = runs[True], runs[False]
    torch.testing.assert_close(taken[0], alone[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(taken[1], alone[1], rtol=0, atol=1e-9, equal_nan=True)
    assert g_alone - g_taken == 3 * 8 * len(x)
    with pytest.raises(ValueError, match="screens them"):
        boundary_walk(CountingModel(model), first_order, x, y, None, norm=norm, steps=40, starts=6, screen=6,
                      screened=screened)


def test_target_sweep_takes_over_the_fixed_budget_walks_screening(digits, monkeypatch):
    """The sweep's full walk takes over the starts the fixed-budget walk screened: the same
    examples as a sweep that screens them again, at fewer gradients."""
    from teamattack.attacks import team as T

    model, x, y = digits
    plain_sweep = T.TEAM.target_sweep
    taken = ta.TEAM(model, norm="linf", eps=0.15, targets=3)(x, y)
    monkeypatch.setattr(T.TEAM, "target_sweep", lambda self, *a: plain_sweep(self, *a[:6]))   # no `screened`
    again = ta.TEAM(model, norm="linf", eps=0.15, targets=3)(x, y)
    torch.testing.assert_close(taken.x_adv, again.x_adv)
    assert taken.success.tolist() == again.success.tolist()
    assert taken.counters.gradients < again.counters.gradients


def test_fixed_budget_ascends_only_within_the_given_distance(digits):
    """`fixed_budget(..., ascend_within=r)`: the images whose walk ended beyond r keep x (no
    ascent, no gradient); those within r climb as without it."""
    from functools import partial

    from teamattack.attacks.boundary_walk import boundary_walk
    from teamattack.curvature.sources import expand

    model, x, y = digits
    eps = 0.05
    walk = partial(boundary_walk, CountingModel(model), partial(expand, source="none"), norm="linf", steps=10,
                   starts=1, stop_at=eps)
    _, dist = walk(x, y, None)
    r = float(dist[dist > eps].median())
    runs = []
    for within in (None, r):
        cm = CountingModel(model)
        runs.append((fixed_budget(cm, x, y, None, norm="linf", eps=eps, walk=walk, steps=20, ascend_within=within),
                     cm.gradients))
    (full, g_full), (cut, g_cut) = runs
    far = cut.walk_distance > r
    assert bool(far.any()) and g_cut < g_full
    torch.testing.assert_close(cut.points[far], x[far])
    assert not bool(cut.adversarial[far].any())
    torch.testing.assert_close(cut.points[~far], full.points[~far])


def test_targets_setting_is_checked_against_the_budget_mode():
    """`team-linf:targets=3` (bench / attack CLI names) is valid when the attack runs at an eps,
    and refused for the minimum-norm attack, before anything runs."""
    from teamattack.bench.suites import SuiteError, with_settings
    from teamattack.cli.attack import team_names

    spec = team_names()["team-linf"]
    assert with_settings(spec, "team-linf:targets=3", eps=0.1).settings["targets"] == 3
    with pytest.raises(SuiteError, match="targets"):
        with_settings(spec, "team-linf:targets=3")
