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
    for bad in ("team-l2:no_such_setting=1", "team-l2:starts", "team-l2:norm=l3", "ddn-100:no_such_setting=3"):
        with pytest.raises(SuiteError):
            get_suite("untargeted-l2", [bad])


def test_cli_bench(digits, tmp_path, monkeypatch, capsys):
    import teamattack.bench.suites as S
    from teamattack import data, zoo
    from teamattack.cli import main

    model, x, y = digits
    monkeypatch.setattr(zoo, "load", lambda name: model, raising=False)
    monkeypatch.setattr(data, "load", lambda name, split, n=None, seed=0, root=None: (x, y), raising=False)
    monkeypatch.setitem(S.SUITES, "tiny", S.Suite("tiny", _specs))
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


# ---------------------------------------------------------------------------------------------
# the stages, the attack kind, peer settings
# ---------------------------------------------------------------------------------------------
def test_plan_units_and_keys(digits):
    """plan: one unit per (attack, eps, target, batch), keyed as the sidecar always was; assemble of
    execute equals run_bench."""
    from teamattack.bench import stages

    model, x, y = digits
    x, y, _ = harness.select_images(model, x, y, 12, seed=0)
    cfg = stages.BenchConfig(targeted=True, seed=0, batch_size=5)
    p = stages.plan(model, x, y, _specs(), cfg, log=lambda s: None)
    assert p.batches == ((0, 5), (5, 10), (10, 12)) and p.num_classes == 10
    assert [len(r.units) for r in p.runs] == [9 * 3, 9 * 3]
    assert len({u.key for u in p.units}) == len(p.units)
    assert p.runs[0].units[0].key == "fgsm|T|eps=0.1|k=1|b=0"
    u = p.runs[1].units[-1]
    assert (u.offset, u.batch) == (9, 2) and torch.equal(p.targets_of(u, y), (y[10:12] + 9) % 10)
    values = stages.execute(p, model, x, y, progress=False)
    assert set(values) == {u.key for u in p.units}
    a = stages.assemble(p, values)
    b = harness.run_bench(model, x, y, _specs(), targeted=True, seed=0, batch_size=5, progress=False)
    assert _strip_timings(a.runs) == _strip_timings(b.runs) and b["runs"] == b.runs
    # only the units a shard owns
    from teamattack.bench.distributed import Shard

    half = stages.execute(p, model, x, y, owns=Shard(1, 2).owns, progress=False)
    assert {k.rsplit("=", 1)[1] for k in half} == {"1"}


def test_attack_kind_is_shared():
    from teamattack.baselines import PRESETS
    from teamattack.bench.suites import peer_spec
    from teamattack.kinds import AttackKind

    assert PRESETS["pgd"].kind is AttackKind.BUDGET and PRESETS["ddn-100"].kind is AttackKind.MIN_NORM
    assert peer_spec("pgd").kind is AttackKind.BUDGET and BUDGET is AttackKind.BUDGET
    assert AttackSpec("a", lambda *a: None, "l2", kind="budget").kind is AttackKind.BUDGET
    assert AttackKind.parse("fixed-eps") is AttackKind.BUDGET and json.dumps(AttackKind.BUDGET) == '"budget"'
    with pytest.raises(ValueError):
        AttackKind.parse("maximal")


def test_peer_settings_in_the_attack_name():
    (spec,), _ = get_suite("untargeted-l2", ["ddn-100:levels=None:steps=50"])
    assert spec.name == "ddn-100:levels=None:steps=50" and spec.settings == {"levels": None, "steps": 50}
    assert not spec.team and spec.library == "adv_lib"
    with pytest.raises(SuiteError):
        get_suite("untargeted-l2", ["no-such-preset:steps=3"])


# ---------------------------------------------------------------------------------------------
# sharding (torch.distributed): resume from shard files, two gloo processes vs one
# ---------------------------------------------------------------------------------------------
def test_resume_from_a_shard_file(digits, tmp_path):
    """An interrupted sharded run leaves SIDECAR.rank<r>; any later run folds it into the sidecar
    and runs only the rest, with the same records."""
    from teamattack.bench import distributed, stages

    model, x, y = digits
    x, y, idx = harness.select_images(model, x, y, 20, seed=0)
    header = {"n": 20, "images": idx}
    full = harness.run_bench(model, x, y, _specs(), seed=0, batch_size=5, progress=False)
    side = tmp_path / "s.jsonl"
    p = stages.plan(model, x, y, _specs(), stages.BenchConfig(seed=0, batch_size=5), log=lambda s: None)
    stages.execute(p, model, x, y, harness.Sidecar(f"{side}.rank1", header), owns=distributed.Shard(1, 2).owns,
                   progress=False)
    store = distributed.open_store(side, header, distributed.Shard())
    assert len(store.units) == 4 and not distributed.shard_files(side)  # batches 1 and 3 of both attacks
    calls: list[str] = []
    again = harness.run_bench(model, x, y, _specs(calls), seed=0, batch_size=5, progress=False, sidecar=store)
    assert calls.count("ifgsm") == 1 + 2 and _strip_timings(again.runs) == _strip_timings(full.runs)


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    """`torchrun --nproc-per-node 2 -m teamattack.cli bench ...` (gloo, CPU) writes the JSON of one
    process (timings aside), and a one-process rerun resumes all of it from the merged sidecar."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import teamattack

    src = str(Path(teamattack.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    args = ["bench", "--dataset", "digits", "--model", "digits-mlp", "--suite", "paper-table5",
            "--attacks", "team-T1-paper,team-T4-paper", "-n", "24", "--batch-size", "6", "--no-progress"]
    cli = [sys.executable, "-m", "teamattack.cli"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run(cli + args + ["--json", str(one)], env=env, check=True, capture_output=True, timeout=120)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "teamattack.cli"] + args + ["--json", str(two)],
                         env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    a.pop("command"), b.pop("command")
    assert _strip_timings(a) == _strip_timings(b) and len(a["runs"]) == 3  # + per-image-best+team
    assert not list(tmp_path.glob("two.json.partial.jsonl.rank*"))
    side = [json.loads(line) for line in (tmp_path / "two.json.partial.jsonl").read_text().splitlines()]
    assert len(side) == 1 + 2 * 4  # header + 2 attacks x 4 batches, from both ranks
    rerun = subprocess.run(cli + args + ["--json", str(two)], env=env, capture_output=True, text=True, timeout=120)
    assert "resuming: 8 finished units" in rerun.stderr
    assert _strip_timings(json.loads(two.read_text()))["runs"] == _strip_timings(a)["runs"]
