"""The scripts in scripts/ that publish tables: each runs end to end on a few images."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_HAVE_PEERS = all(importlib.util.find_spec(m) is not None for m in ("torchattacks", "foolbox", "adv_lib"))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.peers
@pytest.mark.skipif(not _HAVE_PEERS, reason="the peers are not installed (./run.sh peers)")
def test_targeted_walk_ab_compares_every_schedule_with_the_reference(tmp_path):
    """Every variant reaches every target (each point checked by the script with a fresh forward
    pass), costs its walks' gradients exactly, and lands near DDN-1000 image by image."""
    from teamattack.attacks.boundary_walk import TARGETED_WALKS, walk_budget

    ab = _script("targeted_walk_ab")
    out = tmp_path / "ab.md"
    assert ab.main(["--model", "digits-mlp", "--dataset", "digits", "-n", "6", "--seed", "1",
                    "--refs", "ddn-1000", "--out", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert set(rows) == set(ab.VARIANTS)
    one = walk_budget(40, 6, 8)
    for name, (walks, steps) in ab.VARIANTS.items():
        r = rows[name]
        assert r["n"] == 6 and r["failures"] == 0
        assert r["gradients_per_image"] == len(walks) * steps
        assert 0.8 < r["median"] < 1.2
    assert rows["cold + hot (the default)"]["gradients_per_image"] == len(TARGETED_WALKS) * one
    assert "| cold + hot (the default) | 160 |" in out.read_text()


@pytest.mark.slow
def test_walk_chunks_prints_a_row_per_model_and_thread_count(capsys):
    """Every chunk setting gives the same adversarial examples (up to float rounding); one row per
    model and thread count, the rule's chunk beside the times."""
    import torch

    before = torch.get_num_threads()
    assert _script("walk_chunks").main(["--threads", "1,2", "--repeats", "1", "-n", "4"]) == 0
    assert torch.get_num_threads() == before
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| digits-cnn") or line.startswith("| mnist-table1")]
    assert [r.split(" | ")[:2] for r in rows] == [["| digits-cnn", "1"], ["| digits-cnn", "2"], ["| mnist-table1", "1"], ["| mnist-table1", "2"]]
    assert all(float(r.rstrip(" |").rsplit("| ", 1)[1]) < 1e-5 for r in rows)


def test_exact_misses_finds_nothing_below_the_optimum(tmp_path):
    """On the published digits-mlp L2 document: the images past 1% are read from it, a ball smaller
    than the proven optimum holds no adversarial point (the ascents find none), and a ball 1%
    beyond TEAM's own distance does (every point the script counts is checked inside its ball and
    adversarial by a fresh forward pass)."""
    doc = ROOT / "docs" / "results" / "exact" / "untargeted-l2-digits-mlp.json"
    script = _script("exact_misses")
    data = json.loads(doc.read_text())
    first = script.misses(data, script.distances(data, "team-l2"))[0]
    below = 0.99 * first.optimum / first.distance          # a radius 1% under the optimum
    out = tmp_path / "misses.md"
    assert script.main([str(doc), "--only", "1", "--starts", "1", "--steps", "100",
                        "--fractions", f"1.01,{below}", "--out", str(out)]) == 0
    row = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["position"] for r in row] == [first.position] and first.ratio > 1.01
    assert row[0]["found"][1] == 0 and row[0]["found"][0] > 0
    assert f"| {first.position} | {first.ratio:.4f} |" in out.read_text()


def test_sweep_wins_counts_what_the_sweep_adds(tmp_path, capsys):
    """The images the script says the sweep broke are exactly those TEAM with targets=3 breaks
    beyond the plain fixed-budget attack, each with a walk within SWEEP_RANGE x eps; the wrapper
    is removed afterwards."""
    import torch

    import teamattack as ta
    from teamattack import data, zoo
    from teamattack.attacks import team as T

    doc = {"model": "digits-cnn", "dataset": "digits", "norm": "linf", "eps": [0.15], "n": 60, "seed": 0}
    (tmp_path / "ra.json").write_text(json.dumps(doc))
    before, threads = T.TEAM.target_sweep, torch.get_num_threads()
    assert _script("sweep_wins").main([str(tmp_path / "ra.json")]) == 0
    assert T.TEAM.target_sweep is before and torch.get_num_threads() == threads
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("| digits-cnn linf | 0.15 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    looked, bins, broke = int(cells[2]), [int(c) for c in cells[3:8]], int(cells[8])
    assert 0 < sum(bins) <= looked
    ratios = [] if cells[9] == "-" else [float(v) for v in cells[9].split(",")]
    assert len(ratios) == broke and all(1.0 < r <= T.SWEEP_RANGE for r in ratios)
    m = zoo.load("digits-cnn")
    x, y = data.load("digits", "test", n=60, seed=0)
    ok = data.predict(m, x) == y
    plain = ta.TEAM(m, "linf", eps=0.15)(x[ok], y[ok]).success
    sweep = ta.TEAM(m, "linf", eps=0.15, targets=3)(x[ok], y[ok]).success
    assert bool(sweep[plain].all()) and int(sweep.sum() - plain.sum()) == broke


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.skipif(not _HAVE_PEERS, reason="the peers are not installed (./run.sh peers)")
def test_distilled_unbroken_lists_exactly_the_images_team_leaves(tmp_path):
    """On the zoo's digits-cnn at a small budget: the rows are the images TEAM's fixed-budget attack
    with the sweep leaves, every distance in them is of a verified adversarial point (re-checked
    here), and the summary counts agree with the table."""
    import torch

    import teamattack as ta
    from teamattack.bench.harness import load_images

    script, eps = _script("distilled_unbroken"), 0.3
    out = tmp_path / "unbroken.md"
    assert script.main(["--model", "digits-cnn", "-n", "3", "--eps", str(eps), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in lines if r.startswith("| ") and r[2].isdigit()]
    m = ta.zoo.load("digits-cnn")
    x, y, _ = load_images("digits", m, 3, seed=0)
    fixed = ta.TEAM(m, "l2", eps=eps, targets=3)(x, y)
    assert [int(r[0]) for r in rows] == torch.nonzero(~fixed.success).flatten().tolist()
    assert rows, "the budget is small enough that TEAM leaves some image"
    for r in rows:
        values = [float("inf") if c == "-" else float(c) for c in r[2:-1]]
        assert min(values) == (float("inf") if r[-1] == "-" else float(r[-1]))
    # the distance helper: a point the model does not move to another class counts as no point
    far = script._distance(m, x, y, x.clone())
    assert torch.isinf(far).all()
    broken = sum(r[-1] != "-" and float(r[-1]) <= eps for r in rows)
    assert lines[-1].endswith(f"any attack {broken} of {len(rows)}.")
