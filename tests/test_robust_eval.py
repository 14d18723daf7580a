"""teamattack.evaluate / robustness_curve, the AutoAttack presets, evaluate --plot and bench --plot (digits)."""
from __future__ import annotations

import json

import pytest
import torch

import teamattack as ta
from teamattack import metrics
from teamattack.cli import main
from teamattack.evaluation import RobustAccuracy, robustness_curve
from teamattack.evaluation.attacks import resolve
from teamattack.validation import InputError

N = 40


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=N, seed=1)
    y = y.clone()
    y[:3] = (y[:3] + 1) % 10  # three clean errors for sure
    return model, x, y


@pytest.fixture(scope="module")
def independent(digits):
    model, x, y = digits
    return ta.evaluate(model, x, y, "linf", eps=[0.0, 0.05, 0.1], attacks=["team", "fgsm"], cascade=False)


def test_clean_errors_count_as_broken(digits, independent):
    model, x, y = digits
    r = independent
    correct = (ta.data.predict(model, x) == y).tolist()
    assert r.n == N and r.clean_correct == correct and not any(correct[:3])
    assert r.clean == pytest.approx(sum(correct) / N) and r.clean < 1
    for run in r.runs:
        assert len(run.robust) == N                                    # over ALL n images
        assert not any(f for f, c in zip(run.robust, correct) if not c)  # a clean error is never robust
        assert run.accuracy == pytest.approx(sum(run.robust) / N) and run.accuracy <= r.clean
        assert run.attacked == (sum(correct) if run.eps > 0 else 0)      # attacks only the clean-correct ones


def test_eps_zero_is_clean_accuracy(digits, independent):
    r = independent
    assert r.per_attack["team"][0] == r.per_attack["fgsm"][0] == r.worst[0] == pytest.approx(r.clean)
    model, x, y = digits
    c = robustness_curve(model, x, y, "linf")
    assert c.accuracy(0.0) == pytest.approx(r.clean)


def test_worst_case_is_every_attack_failing(independent):
    r = independent
    for i, e in enumerate(r.eps):
        flags = [a and b for a, b in zip(r.run("team", e).robust, r.run("fgsm", e).robust)]
        assert r.worst_flags(e) == flags
        assert r.worst[i] == pytest.approx(sum(flags) / r.n)
        assert all(r.worst[i] <= r.per_attack[a][i] for a in r.attacks)
    assert r.per_attack["team"][2] < r.clean                          # TEAM does break images at 0.1
    d = r.to_dict()
    assert d["worst_case"]["0.1"] == r.worst[2] and json.loads(json.dumps(d)) == d
    assert "| worst case |" in r.markdown()


def test_cascade_runs_later_attacks_on_survivors_only(digits, independent):
    model, x, y = digits
    r = ta.evaluate(model, x, y, "linf", eps=[0.05, 0.1], attacks=["fgsm", "team"])
    assert r.cascade
    for e in r.eps:
        first, second = r.run("fgsm", e), r.run("team", e)
        assert second.attacked == sum(first.robust)                    # only the images FGSM left
        assert all(b <= a for a, b in zip(first.robust, second.robust))
        assert r.worst_flags(e) == second.robust
    # the cascade's final accuracy equals the independent worst case (both attacks deterministic here)
    assert r.worst == pytest.approx(independent.worst[1:])


def test_curve_is_thresholded_distances_and_non_increasing(digits):
    model, x, y = digits
    c = robustness_curve(model, x, y, "linf")
    correct = ta.data.predict(model, x) == y
    res = ta.TEAM(model, "linf")(x[correct], y[correct])                # the same run, by hand
    d = metrics.linf(x[correct], res.x_adv)
    dist = torch.full((N,), float("nan"))
    dist[correct] = torch.where(res.success, d, torch.full_like(d, float("nan")))
    grid = c.grid(41)
    acc = c.curve(grid)
    for e, a in zip(grid, acc):
        robust = correct & ~(dist <= e)                                   # NaN (failed) never <= e
        assert a == pytest.approx(float(robust.float().mean()))
    assert all(b <= a for a, b in zip(acc, acc[1:])) and acc[-1] <= acc[0]
    assert acc[-1] == pytest.approx((int(correct.sum()) - sum(v is not None for v in c.distances)) / N)
    # evaluate with the same min-norm Attack object gives the curve's values at its eps
    r = ta.evaluate(model, x, y, "linf", eps=[0.05, 0.1], attacks=[ta.TEAM(model, "linf")])
    assert r.per_attack[r.attacks[0]] == pytest.approx(c.curve([0.05, 0.1]))


def test_plot_methods_write_pngs(digits, independent, tmp_path):
    model, x, y = digits
    c = robustness_curve(model, x, y, "l2")
    for path in (independent.plot(tmp_path / "a.png", curve=c), c.plot(tmp_path / "b.png")):
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000


def test_success_outside_the_ball_does_not_count(digits):
    model, x, y = digits
    big = ta.TEAM(model, "linf", eps=0.3)                               # one run at 0.3, judged at 0.05
    r = ta.evaluate(model, x, y, "linf", eps=[0.05], attacks=[big])
    run = r.runs[0]
    correct = ta.data.predict(model, x) == y
    res = big(x[correct], y[correct])                                   # the same run, by hand
    d = metrics.linf(x[correct], res.x_adv)
    assert run.broken == int((res.success & (d <= 0.05 + 1e-6)).sum())
    assert run.outside == int((res.success & (d > 0.05 + 1e-6)).sum()) > 0
    assert run.accuracy == pytest.approx((int(correct.sum()) - run.broken) / N)


def test_names_follow_the_norm_and_errors(digits):
    model = digits[0]
    assert [a.label for a in resolve(model, "l2", ["team", "apgd-ce", "autoattack"])] == \
        ["team", "apgd-ce-l2", "autoattack-l2"]
    assert [a.per_eps for a in resolve(model, "linf", ["pgd", "fmn-linf-100"])] == [True, False]
    with pytest.raises(InputError, match="unknown attack"):
        resolve(model, "linf", ["nope"])
    with pytest.raises(InputError, match="l2 attack"):
        resolve(model, "linf", ["ddn-100"])
    with pytest.raises(InputError, match="unique"):
        resolve(model, "linf", ["team", "team"])
    x, y = ta.data.load("digits", "test", n=4, seed=0)
    with pytest.raises(InputError):
        ta.evaluate(model, x, y, "linf", eps=[-0.1])


def test_evaluate_cli_writes_json_and_png(tmp_path, capsys):
    js, png = tmp_path / "ev.json", tmp_path / "curve.png"
    assert main(["evaluate", "--model", "digits-cnn", "--norm", "linf", "--eps", "0.05", "0.1", "--attacks", "team",
                 "fgsm", "-n", "30", "--curve", "--json", str(js), "--plot", str(png)]) == 0
    doc = json.loads(js.read_text())
    assert doc["kind"] == "robust-accuracy" and doc["n"] == 30 and doc["attacks"] == ["team", "fgsm"]
    assert set(doc["robust_accuracy"]["team"]) == {"0.05", "0.1"} and doc["curve"]["attack"].startswith("team")
    assert doc["accuracy"] == doc["clean_accuracy"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "| worst case |" in capsys.readouterr().out
    # the report shows it: the accuracy table and the curve
    html = tmp_path / "r.html"
    assert main(["report", str(js), "--html", str(html)]) == 0
    page = html.read_text()
    assert "robust accuracy (linf) over all 30 images" in page and "<td>worst case</td>" in page
    assert page.count("data:image/png") >= 1
    # without --eps: the clean accuracy, as before
    assert main(["evaluate", "--model", "digits-cnn", "-n", "30", "--json", str(js)]) == 0
    assert set(json.loads(js.read_text())) >= {"accuracy", "correct", "n"}


def test_bench_plot_writes_pngs_from_per_image_distances(tmp_path):
    js, out = tmp_path / "b.json", tmp_path / "plots"
    assert main(["bench", "--model", "digits-cnn", "--suite", "linf", "--attacks", "team-linf,fgsm", "-n", "8",
                 "--json", str(js), "--plot", str(out), "--no-progress"]) == 0
    doc = json.loads(js.read_text())
    team = next(r for r in doc["runs"] if r["attack"] == "team-linf")
    assert len(team["per_image"]["success"]) == len(team["per_image"]["linf"]) == 8   # per-image distances kept
    names = sorted(p.name for p in out.iterdir())
    assert names == ["distances-linf.png", "robustness-curve-linf.png"]
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    assert sorted(doc["plots"]) == sorted(str(out / n) for n in names)
    # the report draws the same curves from the per-image distances when the document names no plots
    del doc["plots"]
    js.write_text(json.dumps(doc))
    html = tmp_path / "r.html"
    assert main(["report", str(js), "--html", str(html)]) == 0
    page = html.read_text()
    assert "robustness-curve-linf (from the per-image distances)" in page and "per_image success" not in page


@pytest.mark.slow
@pytest.mark.peers
def test_autoattack_preset_on_four_digits_images():
    pytest.importorskip("torchattacks")
    from teamattack import baselines

    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=4, seed=0)
    atk = baselines.make("autoattack", model, eps=0.1)
    res = atk(x, y)
    assert (res.linf <= 0.1 + 1e-5).all() and res.counters.gradients > 0
    assert atk.params["version"] == "standard" and atk.params["seed"] == 0
    r = ta.evaluate(model, x, y, "linf", eps=[0.1], attacks=["apgd-ce", "autoattack"])
    assert isinstance(r, RobustAccuracy) and r.worst[0] <= r.per_attack["apgd-ce"][0]
    assert r.run("autoattack", 0.1).attacked == sum(r.run("apgd-ce", 0.1).robust)


def test_groups_team_modes_and_peers(digits):
    model, x, y = digits
    r = ta.evaluate(model, x, y, "linf", eps=[0.05, 0.1], attacks=["team", "team-min-norm", "fgsm", "pgd"],
                    cascade=False)
    assert r.groups == {"team, every mode": ["team", "team-min-norm"], "peers, worst case": ["fgsm", "pgd"]}
    for members in r.groups.values():
        both = r.worst_of(members)
        assert all(b <= min(r.per_attack[a][i] for a in members) for i, b in enumerate(both))
    assert "| team, every mode |" in r.markdown()
    assert r.to_dict()["groups"]["peers, worst case"]["attacks"] == ["fgsm", "pgd"]


def test_team_settings_in_the_attack_name(digits):
    """'team:key=value' builds TEAM with those settings (the bench's vocabulary); bad ones fail at once."""
    model, x, y = digits
    specs = resolve(model, "linf", ["team", "team:starts=1:screen=0:steps=5"])
    assert [s.label for s in specs] == ["team", "team:starts=1:screen=0:steps=5"]
    small = specs[1].build(0.1)
    assert (small.walk_config.starts, small.walk_config.screen, small.budget_config.steps) == (1, 0, 5)
    assert small.eps == 0.1
    with pytest.raises(InputError, match="starts"):
        resolve(model, "linf", ["team:starts=0"])
    with pytest.raises(InputError, match="box_iters"):
        resolve(model, "linf", ["team:box_iters=3"])


def test_reuse_carries_the_earlier_runs_over_and_runs_the_rest(digits, independent, monkeypatch):
    """evaluate(..., reuse=): the attacks the earlier independent evaluation ran at every eps are
    copied (not built, not run), the others run; another image set or a cascade is refused."""
    model, x, y = digits
    doc = json.loads(json.dumps(independent.to_dict()))
    old = RobustAccuracy.from_dict(doc)
    assert old.runs == independent.runs
    from teamattack.evaluation import attacks as A

    real = A.resolve

    def no_fgsm(model_, norm, attacks):
        specs = real(model_, norm, attacks)
        for s in specs:
            if s.label == "fgsm":
                object.__setattr__(s, "build", lambda e: pytest.fail("a reused attack was built"))
        return specs

    monkeypatch.setattr("teamattack.evaluation.robust.resolve", no_fgsm)
    new = ta.evaluate(model, x, y, "linf", eps=[0.05, 0.1], attacks=["team"], cascade=False, reuse=old)
    assert new.attacks == ["team", "fgsm"]
    for e in (0.05, 0.1):
        carried, fresh = new.run("fgsm", e), new.run("team", e)
        assert carried.reused and carried.robust == independent.run("fgsm", e).robust
        assert not fresh.reused and fresh.attacked == sum(independent.clean_correct)
        assert fresh.robust == independent.run("team", e).robust   # TEAM is deterministic: the same flags
    assert "Carried over from an earlier run on the same images: fgsm." in new.markdown()
    with pytest.raises(InputError, match="independent"):
        ta.evaluate(model, x, y, "linf", eps=[0.05], attacks=["team"], cascade=True, reuse=old)
    with pytest.raises(InputError, match="other images"):
        ta.evaluate(model, x[:-1], y[:-1], "linf", eps=[0.05], attacks=["team"], cascade=False, reuse=old)
    # an eps the earlier evaluation did not run: nothing to carry, only what was asked for runs
    more = ta.evaluate(model, x, y, "linf", eps=[0.2], attacks=["team"], cascade=False, reuse=old)
    assert more.attacks == ["team"] and not more.run("team", 0.2).reused


def test_evaluate_cli_reuse(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    args = ["evaluate", "--model", "digits-cnn", "--norm", "linf", "--eps", "0.1", "-n", "20", "--independent"]
    assert main(args + ["--attacks", "team", "fgsm", "--json", str(first)]) == 0
    assert main(args + ["--attacks", "team", "--reuse", str(first), "--json", str(second)]) == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert b["reused_from"] == str(first) and b["robust_accuracy"] == a["robust_accuracy"]
    assert b["attacks"] == ["team", "fgsm"] and [r["reused"] for r in b["runs"]] == [False, True]
    # another seed is other images: refused, exit code 2
    assert main(args + ["--attacks", "team", "--seed", "1", "--reuse", str(first), "--json", str(second)]) == 2
