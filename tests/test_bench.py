"""The benchmark harness: records, tables, targeted cases, per-image best, resume, fixed-budget mode."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import train_digits_mlp

from teamattack.paper import FGSM, IFGSM
from teamattack.bench import harness
from teamattack.bench import records as R
from teamattack.bench.suites import BUDGET, AttackSpec, SuiteError, get_suite
from teamattack.result import AttackResult, Counters


# ---------------------------------------------------------------------------------------------
# a tiny digits MLP trained in the fixture (sklearn's bundled 8x8 digits, no files)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return train_digits_mlp((16,), steps=60)


def _strip_timings(obj):  # wall time and peak memory vary between runs
    if isinstance(obj, dict):
        return {k: _strip_timings(v) for k, v in obj.items() if "seconds" not in k and "peak_memory" not in k}
    if isinstance(obj, list):
        return [_strip_timings(v) for v in obj]
    return obj


def _specs(calls=None):
    def fgsm(model, targeted, eps, seed):
        if calls is not None:
            calls.append("fgsm")
        return FGSM(model, eps=eps, targeted=targeted)

    def ifgsm(model, targeted, eps, seed):
        if calls is not None:
            calls.append("ifgsm")
        return IFGSM(model, step=0.02, steps=8, targeted=targeted)

    return [
        AttackSpec("fgsm", fgsm, "linf", library="teamattack", kind=BUDGET, eps=0.1),
        AttackSpec("ifgsm", ifgsm, "linf", library="teamattack"),
    ]


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
def _result(x, x_adv, success, gradients=8, seconds=2.0):
    from teamattack.metrics import l0, l2, linf

    return AttackResult(x_adv=x_adv, success=torch.tensor(success), l0=l0(x, x_adv), l2=l2(x, x_adv),
                        linf=linf(x, x_adv), raw=x_adv, radius=torch.full((len(x),), float("nan")),
                        counters=Counters(forwards=12, gradients=gradients, hvps=4, seconds=seconds))


def test_run_record_success_only_stats():
    x = torch.zeros(4, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.3   # success: l2 0.3, l0 1
    x_adv[1] = 0.5            # failure: must not count (l2 1.0)
    x_adv[2, 0, 0, :] = 0.4   # success: l2 0.4*sqrt2, l0 2
    # image 3 unchanged, failure
    rec = R.run_record(x, _result(x, x_adv, [True, False, True, False]), "a", "lib", "l2", False, "untargeted")
    assert rec["n"] == 4 and rec["asr"] == 0.5
    assert rec["l2"]["mean"] == pytest.approx((0.3 + 0.4 * math.sqrt(2)) / 2, rel=1e-6)
    assert rec["l2"]["median"] == pytest.approx((0.3 + 0.4 * math.sqrt(2)) / 2, rel=1e-6)
    assert rec["l0"] == {"mean": 1.5, "median": 1.5}
    assert rec["linf"]["median"] == pytest.approx(0.35, rel=1e-6)
    assert rec["psnr"]["mean"] == pytest.approx((10 * math.log10(4 / 0.09) + 10 * math.log10(4 / 0.32)) / 2, rel=1e-5)
    assert rec["seconds_per_image"] == 0.5 and rec["grad_evals_per_image"] == 2.0
    assert rec["hvps_per_image"] == 1.0 and rec["forwards_per_image"] == 3.0
    for k in ("attack", "library", "norm", "targeted", "case"):
        assert k in rec
    assert "ratio_to_optimum" not in rec
    rec = R.run_record(x, _result(x, x_adv, [True, False, True, False]), "a", "lib", "l2", False,
                       optimum=torch.tensor([0.15, 0.1, 0.4 * math.sqrt(2) / 4, float("nan")]))
    assert rec["ratio_to_optimum"]["median"] == pytest.approx(3.0) and rec["ratio_to_optimum"]["n"] == 2


def test_no_success_gives_none_stats():
    x = torch.zeros(2, 3)
    rec = R.run_record(x, _result(x, x + 0.1, [False, False]), "a", "lib", "linf", False)
    assert rec["asr"] == 0.0 and rec["l2"] == {"mean": None, "median": None}
    assert "| a |" in R.markdown_table([rec])


def test_markdown_table():
    x = torch.zeros(2, 4)
    recs = [R.run_record(x, _result(x, x + 0.1, [True, True]), "alpha", "torchattacks", "l2", False),
            R.run_record(x, _result(x, x + 0.2, [True, False]), "beta", "foolbox", "l2", False)]
    recs[1]["ratio_to_optimum"] = {"median": 1.25, "mean": 1.3, "n": 1}
    md = R.markdown_table(recs, title="T")
    lines = md.strip().splitlines()
    assert lines[0] == "### T"
    assert lines[2].startswith("| attack | library | case | norm | n | ASR |") and "ratio to opt." in lines[2]
    assert len(lines) == 6 and all(ln.count("|") == lines[2].count("|") for ln in lines[2:])
    assert "100.0%" in lines[4] and "50.0%" in lines[5] and "1.25 (n=1)" in lines[5] and "| - |" in lines[4]
    assert "0.2 / 0.2" in lines[4]  # L2 of 4 x 0.1: median / mean


# ---------------------------------------------------------------------------------------------
# targeted cases and the per-image best
# ---------------------------------------------------------------------------------------------
def _arr(success, l2, linf=None, grads=10):
    linf = linf or [v / 2 for v in l2]
    return {"success": success, "l0": [1.0] * len(l2), "l2": l2, "linf": linf, "psnr": [50.0] * len(l2),
            "forwards": grads, "gradients": grads, "hvps": 0, "seconds": 1.0, "units": 1}


def test_targeted_best_worst_average():
    # 3 images x 3 targets
    runs = [
        _arr([True, True, False], [1.0, 5.0, 9.0]),
        _arr([True, False, False], [3.0, 1.0, 8.0]),
        _arr([True, True, True], [2.0, 4.0, 7.0]),
    ]
    random_choice = [1, 0, 2]
    c = R.targeted_cases(runs, random_choice, "l2")
    assert c["average"]["success"] == [True, True, True] and c["average"]["l2"] == [3.0, 5.0, 7.0]
    # best: least L2 among successes (image 1: target 1 failed even though its l2 is least)
    assert c["best"]["success"] == [True, True, True] and c["best"]["l2"] == [1.0, 4.0, 7.0]
    # worst: most L2; fails where any target failed
    assert c["worst"]["success"] == [True, False, False] and c["worst"]["l2"][0] == 3.0
    assert c["average"]["gradients"] == 30  # counters of all target runs
    runs[1]["peak_memory_mb"] = 12.5                     # peak memory: the largest of the runs
    assert R.targeted_cases(runs, random_choice, "l2")["worst"]["peak_memory_mb"] == 12.5
    rec = R.record_from_arrays(c["worst"], "a", "l", "l2", True, "worst")
    assert rec["asr"] == pytest.approx(1 / 3) and rec["l2"]["median"] == 3.0


def test_per_image_best():
    a = _arr([True, False, True], [1.0, 0.5, 3.0])
    b = _arr([True, True, False], [2.0, 2.0, 1.0])
    best, won = R.per_image_best([a, b], "l2")
    assert best["success"] == [True, True, True] and best["l2"] == [1.0, 2.0, 3.0] and won == [0, 1, 0]
    none = R.per_image_best([_arr([False], [1.0]), _arr([False], [2.0])], "l2")
    assert none[0]["success"] == [False] and none[1] == [-1]


def test_robust_accuracy_from_distances():
    a = _arr([True, True, False, True], [0.1, 0.3, 0.0, 0.5])
    ra = R.robust_accuracy_min_norm(a, "l2", [0.2, 0.3, 1.0])
    assert ra == {"0.2": 0.75, "0.3": 0.5, "1": 0.25}


# ---------------------------------------------------------------------------------------------
# the harness: determinism, resume, targeted, fixed-budget mode
# ---------------------------------------------------------------------------------------------
class _Stop(Exception):
    pass


def test_select_images_seeded(digits):
    model, x, y = digits
    a = harness.select_images(model, x, y, 40, seed=3)
    b = harness.select_images(model, x, y, 40, seed=3)
    c = harness.select_images(model, x, y, 40, seed=4)
    assert a[2] == b[2] and a[2] != c[2] and len(a[2]) == 40 and a[2] == sorted(a[2])
    assert (model(a[0]).argmax(1) == a[1]).all()


def test_resume_gives_the_same_json(digits, tmp_path):
    model, x, y = digits
    x, y, idx = harness.select_images(model, x, y, 30, seed=0)
    header = {"n": 30, "images": idx}

    def doc(res):
        return _strip_timings(harness.bench_document({"n": 30}, res))

    full = harness.run_bench(model, x, y, _specs(), seed=0, batch_size=8, progress=False,
                             sidecar=harness.Sidecar(tmp_path / "full.jsonl", header))
    # interrupted after 5 units (fgsm: 4 batches, then 1 batch of ifgsm)
    side = tmp_path / "int.jsonl"
    seen = []

    def stop(key):
        seen.append(key)
        if len(seen) == 5:
            raise _Stop

    with pytest.raises(_Stop):
        harness.run_bench(model, x, y, _specs(), seed=0, batch_size=8, progress=False,
                          sidecar=harness.Sidecar(side, header), on_unit=stop)
    assert len(side.read_text().splitlines()) == 6  # header + 5 units
    calls: list[str] = []
    resumed = harness.run_bench(model, x, y, _specs(calls), seed=0, batch_size=8, progress=False,
                                sidecar=harness.Sidecar(side, header))
    # one build each to check the attack, then only the 3 missing ifgsm batches
    assert calls.count("fgsm") == 1 and calls.count("ifgsm") == 1 + 3
    assert json.dumps(doc(resumed), sort_keys=True) == json.dumps(doc(full), sort_keys=True)
    # a third run does no attack work at all
    calls.clear()
    again = harness.run_bench(model, x, y, _specs(calls), seed=0, batch_size=8, progress=False,
                              sidecar=harness.Sidecar(side, header))
    assert calls == ["fgsm", "ifgsm"] and doc(again) == doc(full)
    rows = {r["attack"]: r for r in full["runs"]}
    assert set(rows) == {"fgsm", "ifgsm", "per-image-best"}
    assert rows["fgsm"]["eps"] == 0.1 and rows["fgsm"]["n"] == 30
    assert rows["per-image-best"]["asr"] >= max(rows["fgsm"]["asr"], rows["ifgsm"]["asr"])


def test_sidecar_cut_line_and_mismatch(tmp_path):
    p = tmp_path / "s.jsonl"
    s = harness.Sidecar(p, {"n": 3})
    s.put("a", {"v": 1})
    with open(p, "a") as f:
        f.write('{"key": "b", "val')  # interrupted mid-write
    s2 = harness.Sidecar(p, {"n": 3})
    assert s2.units == {"a": {"v": 1}}
    s2.put("c", {"v": 2})
    assert harness.Sidecar(p, {"n": 3}).units == {"a": {"v": 1}, "c": {"v": 2}}
    with pytest.raises(harness.ResumeMismatch):
        harness.Sidecar(p, {"n": 4})
    assert harness.Sidecar(p, {"n": 4}, fresh=True).units == {}


def test_targeted_suite_cases(digits):
    model, x, y = digits
    x, y, _ = harness.select_images(model, x, y, 12, seed=1)
    specs = [AttackSpec("ifgsm", lambda m, t, e, s: IFGSM(m, step=0.05, steps=10, targeted=t), "linf")]
    out = harness.run_bench(model, x, y, specs, targeted=True, seed=0, batch_size=5, progress=False)
    rows = {r["case"]: r for r in out["runs"]}
    assert set(rows) == {"average", "best", "worst"}
    assert rows["worst"]["asr"] <= rows["average"]["asr"] <= rows["best"]["asr"]
    assert all(r["targeted"] for r in out["runs"])
    # per image cost: the average case is one target's run, best/worst all nine
    assert rows["best"]["grad_evals_per_image"] == pytest.approx(9 * rows["average"]["grad_evals_per_image"])
    # the seeded random targets differ from y and are reproducible
    k = harness.random_targets(y, 10, 0)
    assert ((k >= 1) & (k <= 9)).all() and torch.equal(k, harness.random_targets(y, 10, 0))
    rnd = harness.run_bench(model, x, y, specs, targeted=True, targets="random", seed=0, batch_size=5,
                            progress=False)
    assert [r["case"] for r in rnd["runs"]] == ["average"]
    assert _strip_timings(rnd["runs"][0])["asr"] == rows["average"]["asr"]


def test_fixed_budget_mode(digits):
    model, x, y = digits
    x, y, _ = harness.select_images(model, x, y, 16, seed=2)
    out = harness.run_bench(model, x, y, _specs(), seed=0, batch_size=16, progress=False,
                            eps_list=[0.05, 0.1, 0.3])
    fg = [r for r in out["runs"] if r["attack"] == "fgsm"]
    assert [r["eps"] for r in fg] == [0.05, 0.1, 0.3]
    ra = {r["attack"]: r["accuracy"] for r in out["robust_accuracy"]}
    assert set(ra) == {"fgsm", "ifgsm", "any attack"}
    assert ra["fgsm"]["0.1"] == pytest.approx(1 - fg[1]["asr"])
    it = next(r for r in out["runs"] if r["attack"] == "ifgsm")
    assert it["robust_accuracy"] == ra["ifgsm"]
    for e in ("0.05", "0.1", "0.3"):
        assert ra["any attack"][e] <= min(ra["fgsm"][e], ra["ifgsm"][e]) + 1e-12
    # IFGSM (min-norm style here: radius 0.16): nothing is broken below its least distance
    assert ra["ifgsm"]["0.05"] >= ra["ifgsm"]["0.3"]


def test_skipped_attack_is_reported(digits):
    model, x, y = digits

    def broken(m, t, e, s):
        raise ImportError("library missing")

    specs = _specs()[:1] + [AttackSpec("nope", broken, "l2")]
    out = harness.run_bench(model, x[:4], y[:4], specs, seed=0, progress=False, log=lambda s: None)
    assert out["skipped"][0]["attack"] == "nope" and "library missing" in out["skipped"][0]["reason"]
    assert "skipped nope" in harness.render(harness.bench_document({}, out))


def test_suites_defined():
    for name in ("untargeted-l2", "targeted-l2", "linf", "l0", "paper-table4", "paper-table5"):
        specs, targeted = get_suite(name)
        assert specs and targeted == (name in ("targeted-l2", "paper-table4"))
        assert any(s.team for s in specs)
    names = [s.name for s in get_suite("untargeted-l2")[0]]
    for n in ("cw-9x1000", "ddn-100", "ddn-1000", "fmn-l2-100", "fmn-l2-1000", "alma-1000", "sdf", "deepfool"):
        assert n in names
    assert [s.name for s in get_suite("untargeted-l2", ["ddn-100", "team-l2"])[0]] == ["ddn-100", "team-l2"]
    with pytest.raises(SuiteError):
        get_suite("no-such-suite")
    with pytest.raises(SuiteError):
        get_suite("linf", ["not-an-attack"])


def test_team_settings_in_the_attack_name(digits):
    """`team-l2:starts=3:steps=12` is the suite's team-l2 with those TEAM settings: it really runs
    with them (its gradient count is the walk budget of those settings), and bad settings fail early."""
    from teamattack.attacks.boundary_walk import walk_budget

    model, x, y = digits
    (spec,), _ = get_suite("untargeted-l2", ["team-l2:starts=3:steps=12:screen=4:hessian=none"])
    assert spec.team and spec.settings == {"mode": "min-norm", "starts": 3, "steps": 12, "screen": 4,
                                           "hessian": "none"}
    res = spec.build(model, targeted=False)(x[:8], y[:8])
    assert res.counters.gradients == 8 * walk_budget(12, 3, 4) and bool(res.success.all())
    for bad in ("team-l2:no_such_setting=1", "team-l2:starts", "team-l2:norm=l3", "ddn-100:steps=3"):
        with pytest.raises(SuiteError):
            get_suite("untargeted-l2", [bad])


def test_cli_bench(digits, tmp_path, monkeypatch, capsys):
    import teamattack.bench.suites as S
    from teamattack import data, zoo
    from teamattack.cli import main

    model, x, y = digits
    monkeypatch.setattr(zoo, "load", lambda name: model, raising=False)
    monkeypatch.setattr(data, "load", lambda name, split, n=None, seed=0, root=None: (x, y), raising=False)
    monkeypatch.setitem(S.SUITES, "tiny", (lambda: _specs(), False))
    out = tmp_path / "b.json"
    md = tmp_path / "b.md"
    rc = main(["bench", "--dataset", "digits", "--model", "digits-mlp", "--suite", "tiny", "-n", "20",
               "--batch-size", "10", "--json", str(out), "--markdown", str(md), "--no-progress"])
    assert rc == 0
    doc = json.loads(out.read_text())
    for k in ("dataset", "model", "seed", "command", "runs"):
        assert k in doc
    assert doc["n"] == 20 and len(doc["images"]) == 20
    assert "| fgsm |" in capsys.readouterr().out and "| ifgsm |" in md.read_text()
    assert (tmp_path / "b.json.partial.jsonl").exists()
    rc = main(["bench", "--dataset", "digits", "--model", "digits-mlp", "--suite", "tiny", "-n", "20",
               "--batch-size", "10", "--json", str(out), "--no-progress"])
    assert rc == 0 and "resuming" in capsys.readouterr().err
    assert _strip_timings(json.loads(out.read_text()))["runs"] == _strip_timings(doc)["runs"]
