"""The speed suite (teamattack.bench.speed): wall time against TEAM's gradient floor, tiny N."""
from __future__ import annotations

import json
import math

import pytest
import torch

import teamattack as ta
from teamattack.attacks import boundary_walk as bw
from teamattack.bench import speed
from teamattack.bench.suites import get_suite
from teamattack.cli import main


@pytest.fixture(scope="module")
def digits():
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=40, seed=0)
    x, y = ta.data.correctly_classified(model, x, y)
    return model, x[:6], y[:6]


def test_suite_lists_team_and_the_peers():
    specs, targeted = get_suite("speed")
    names = [s.name for s in specs]
    assert not targeted
    assert names[:2] == ["team-l2", "team-linf"] and all(s.team for s in specs[:2])
    assert {"ddn-100-foolbox", "ddn-100", "fmn-l2-100", "fmn-linf-100"} <= set(names)
    assert {s.library for s in specs} == {"teamattack", "foolbox", "adv_lib"}


def test_measure_rows_floor_and_ratio(digits):
    """One row per attack and thread count; an attack's floor is its gradients x the forward +
    backward cost of the batch, the ratio is wall / floor (TEAM and the peers alike)."""
    model, x, y = digits
    specs = [s for s in get_suite("speed")[0] if s.name in ("team-l2", "team-linf", "ddn-100")]
    table = speed.measure(model, x, y, specs, model_name="digits-cnn", threads=(1,), repeats=2, log=lambda s: None)
    ran = {r.attack for r in table.rows}
    assert ran | set(table.skipped) == {"team-l2", "team-linf", "ddn-100"}
    cost, cpu_cost = table.fwd_bwd_seconds_per_image[1], table.fwd_bwd_cpu_seconds_per_image[1]
    assert cost > 0 and cpu_cost > 0
    for r in table.rows:
        assert r.threads == 1 and r.images == len(x) and r.runs == 2
        assert 0 < r.seconds_per_image <= r.median_seconds_per_image
        assert math.isclose(r.floor_seconds_per_image, r.gradients_per_image * cost)
        assert math.isclose(r.wall_over_floor, r.seconds_per_image / r.floor_seconds_per_image)
        assert math.isclose(r.cpu_over_floor, r.cpu_seconds_per_image / (r.gradients_per_image * cpu_cost))
        if r.attack.startswith("team-"):
            # the walk's gradients: walk_budget expansions per image (6 starts x 8 + 32), and
            # hessian="auto" probes the curvature on a few examples (less than one per image)
            assert 0 <= r.gradients_per_image - bw.walk_budget(40, 6, 8) < 1
            assert r.success == 1.0 and r.median_distance > 0
        else:
            assert r.gradients_per_image == 100
    text = speed.markdown(table)
    assert "## 1 torch thread" in text and text.count("| team-") == 2


def test_fwd_bwd_cost_is_wall_and_cpu(digits):
    model, x, y = digits
    wall, cpu = speed.fwd_bwd_seconds(model, x[:1], y[:1], repeats=3)
    assert 0 < wall < 1.0 and 0 < cpu < 1.0


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "speed"
    rc = main(["bench", "--suite", "speed", "--model", "digits-cnn", "-n", "4", "--thread-counts", "1", "--repeats", "1",
               "--attacks", "team-l2,team-linf", "--no-progress",
               "--json", f"{out}.json", "--markdown", f"{out}.md"])
    assert rc == 0
    doc = json.loads((tmp_path / "speed.json").read_text())
    assert doc["suite"] == "speed" and doc["n"] == 4 and [r["attack"] for r in doc["rows"]] == ["team-l2", "team-linf"]
    assert all(r["wall_over_floor"] > 0 for r in doc["rows"])
    md = (tmp_path / "speed.md").read_text()
    assert md in capsys.readouterr().out and "wall / floor" in md


def test_walk_chunks_give_the_same_result(digits, monkeypatch):
    """The walk processes its rows in chunks on CPU with one torch thread (cheaper per row), all at
    once with several threads: the result is the same."""
    model, x, y = digits
    attack = ta.TEAM(model, norm="l2", steps=6, starts=3, screen=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(bw, "CHUNK_BYTES", float("inf"))
        whole = attack(x, y)
        monkeypatch.setattr(bw, "CHUNK_BYTES", 1.0)  # 8 rows at a time
        assert bw.chunk_rows(model, x[:1]) == 8
        parts = attack(x, y)
        torch.set_num_threads(2)
        assert bw.chunk_rows(model, x[:1]) > len(x) * 6   # every row of the walk in one pass
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(parts.x_adv, whole.x_adv, atol=1e-5, rtol=0)
    assert parts.counters.gradients == whole.counters.gradients
