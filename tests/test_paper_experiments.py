"""The papers' experiments e1-e5 at tiny N on the digits (fast): JSON, Markdown, PNGs, resume, the Taylor
model's order, Gauss-Newton's synthetic digits, the index of `reproduce all`, the grid helper."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from teamattack.cli import main
from teamattack.experiments import get, load_all
from teamattack.experiments.index import Entry, files_in, write_index
from teamattack.experiments.paper_figures import taylor_error_order
from teamattack.experiments.plotting import GridCell, image_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# the slow rows left out at tiny N (each is still built, run and checked on MNIST by the published runs)
SKIP = {
    "e1-objectives": "team-T3-paper,team-T5-paper,team-T6-paper,team-T3-default,team-T5-default,team-T6-default",
    "e2-table4": "cw-paper,cw-9x1000,team-l0-paper,team-l0",
    "e2-table5": "",
}


def _reproduce(tmp_path: Path, name: str, n: int | None, *extra: str) -> dict:
    args = ["reproduce", name, "--dataset", "digits", "--out", str(tmp_path), "--no-progress", *extra]
    if n is not None:
        args += ["-n", str(n)]
    assert main(args) == 0
    doc = json.loads((tmp_path / f"{name}-digits.json").read_text())
    assert doc["experiment"] == name and doc["dataset"] == "digits"
    md = tmp_path / f"{name}-digits.md"
    assert md.exists() and md.read_text().startswith("## ")
    for png in files_in(doc, ".png"):
        assert Path(png).read_bytes()[:8] == PNG_MAGIC
    return doc


def test_registered_with_datasets():
    exps = load_all()
    for name in ("e1-objectives", "e2-table4", "e2-table5", "e3-taylor", "e4-grids", "e5-synthetic",
                 "e6-distillation", "e7-adversarial-training"):  # e6 was refused "--dataset" by the CLI while documenting it
        assert exps[name].datasets == ("digits", "mnist", "cifar10")
    assert get("e2-table4").json_name("cifar10") == "e2-table4-cifar10.json"


@pytest.mark.slow
@pytest.mark.parametrize("name,n", [("e1-objectives", 1), ("e2-table4", 1), ("e2-table5", 2)])
def test_tables_write_every_record_with_the_papers_beside(tmp_path, name, n):
    extra = ("--skip", SKIP[name]) if SKIP[name] else ()
    doc = _reproduce(tmp_path, name, n, *extra)
    assert doc["n"] == n and len(doc["images"]) == n
    runs = doc["runs"]
    cases = {r["case"] for r in runs}
    assert cases == ({"untargeted", "best", "average", "worst"} if name == "e1-objectives" else
                     {"best", "average", "worst"} if name == "e2-table4" else {"untargeted"})
    assert {r["settings"] for r in runs} == {"paper", "strong"}
    for r in runs:
        assert r["paper_row"] and 0.0 <= r["asr"] <= 1.0 and r["n"] == n
        if r["asr"] > 0:  # distances over successes, median beside mean
            assert r["l2"]["median"] is not None and r["psnr"]["mean"] > 0
        if r["attack"].startswith("team"):
            assert r["team_mode"] in ("paper", "iterated", "min-norm")
            if r["settings"] == "paper":
                assert r["team_mode"] == "paper" and r["attack_settings"]["search"] == "paper"
    assert set(doc["paper"]) == {"001", "000"}  # the published numbers travel with ours (none for digits)
    assert "standard definition" in doc["psnr"]
    skipped = {s["attack"] for s in doc["skipped"]}
    assert skipped >= {a for a in SKIP[name].split(",") if a}


def test_tables_resume_after_an_interruption(tmp_path):
    first = _reproduce(tmp_path, "e2-table5", 2)
    side = tmp_path / "e2-table5-digits.partial.jsonl"
    lines = side.read_text().splitlines()
    side.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][: len(lines[-2]) // 2])  # lost unit + cut line
    again = _reproduce(tmp_path, "e2-table5", 2)
    strip = lambda doc: [{k: v for k, v in r.items() if "seconds" not in k and k != "peak_memory_mb"}
                         for r in doc["runs"]]
    assert strip(first) == strip(again)


def test_e3_taylor_model_is_second_order_and_writes_the_figures(tmp_path):
    doc = _reproduce(tmp_path, "e3-taylor", 2)
    lines = doc["fig1"]["lines"]
    assert len(lines) == 2 and len(doc["pngs"]) == 2
    for ln in lines:
        assert ln["network"][0] == pytest.approx(ln["taylor"][0])
        assert ln["order"]["order"] > 2.7  # O(t^3) (4 where the third derivative along v vanishes)
    curve = doc["fig3"]["curve"]
    assert [c["C"] for c in curve][:3] == [0.0, 0.1, 0.2] and curve[-1]["C"] == 3.0
    assert curve[0]["T1_network_mean"] == pytest.approx(curve[0]["T1_model_mean"], rel=1e-4)
    assert curve[-1]["cross_entropy_change"] > 0 and curve[-1]["misclassified"] > curve[0]["misclassified"]


def test_taylor_error_shrinks_like_t_cubed():
    from teamattack import data, zoo

    model = zoo.load("digits-cnn").eval()
    x, y = data.load("digits", "test", n=3, seed=1)
    for i in range(3):
        r = taylor_error_order(model, x[i], int(y[i]))
        err = r["error"]
        assert all(e2 < e1 for e1, e2 in zip(err, err[1:]))
        assert 6.0 < err[0] / err[1] < 10.0  # halving t divides the error by ~2^3
        assert 2.7 < r["order"] < 3.3


@pytest.mark.slow
def test_e4_grids_every_target_per_norm(tmp_path):
    doc = _reproduce(tmp_path, "e4-grids", 2)
    assert doc["team_modes"] == {"l0": "iterated", "l2": "min-norm", "linf": "min-norm"}
    assert len(doc["pngs"]) == 4  # L0, L2, Linf grids and Fig 2
    for norm in ("l0", "l2", "linf"):
        rows = doc["per_image"][norm]
        assert [r["true"] for r in rows] == [0, 1]
        for r in rows:
            assert len(r["pred"]) == 10 and r[norm][r["true"]] == 0.0
            assert all(p == t for t, (p, ok) in enumerate(zip(r["pred"], r["success"])) if ok)
    assert {r["attack"] for r in doc["runs"]} == {"team-l0", "team-l2", "team-linf"}


@pytest.mark.slow
def test_e5_gauss_newton_reaches_every_class_from_black_and_white(tmp_path):
    doc = _reproduce(tmp_path, "e5-synthetic", None)
    for start in ("black", "white"):
        gn = doc["per_attack"][f"gauss-newton|{start}"]
        assert gn["classes_reached"] == 10 and gn["pred"] == list(range(10))
        assert gn["l2"][doc["start_class"][start]] == 0.0
    assert doc["team_mode"] == "min-norm" and "team-l2|black" in doc["per_attack"]
    # a rerun resumes every unit from the file
    again = _reproduce(tmp_path, "e5-synthetic", None)
    assert again["per_attack"] == doc["per_attack"]


def test_index_links_every_table_and_figure(tmp_path):
    result = {"markdown": str(tmp_path / "a.md"), "fig": {"png": str(tmp_path / "f.png")}, "pngs": [str(tmp_path / "f.png")]}
    assert list(files_in(result, ".png")) == [str(tmp_path / "f.png")]
    path = write_index(tmp_path / "index.md",
                       [Entry("e3-taylor", "Fig 1", json=str(tmp_path / "e3.json"), markdown=result["markdown"],
                              pngs=list(files_in(result, ".png")), seconds=2.0),
                        Entry("e4-grids", "grids", error="RuntimeError: boom")], "teamattack reproduce all")
    text = path.read_text()
    assert "[f.png](f.png)" in text and "[a.md](a.md)" in text and "failed: RuntimeError: boom" in text
    assert "teamattack report" in text


def test_grid_cell_labels_and_png(tmp_path):
    cell = GridCell(torch.zeros(8, 8, 1).numpy(), true=3, pred=5, success=True, distance=1.2345, norm="l2")
    assert cell.label() == "3 -> 5 ok\nL2 1.23"
    assert GridCell(None, true=3, pred=3, success=False, distance=12.0, norm="l0").label() == "3 -> 3 FAIL\nL0 12"
    pert = GridCell(torch.randn(8, 8, 3).numpy(), perturbation=True, title="x' - x")
    png = image_grid(tmp_path / "g.png", [[cell, None], [pert, cell]], ["a", "b"], suptitle="t")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_dataset_only_for_experiments_that_take_one(tmp_path, capsys):
    assert main(["reproduce", "math-theorems", "--dataset", "digits", "--out", str(tmp_path)]) == 2
    assert "takes no --dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_all_runs_each_experiment_and_writes_the_index(tmp_path, monkeypatch):
    import teamattack.experiments as ex

    def fails(ctx):
        raise RuntimeError("no data")

    keep = {"e5-synthetic": ex.get("e5-synthetic"), "broken": ex.Experiment("broken", fails, "h", None)}
    monkeypatch.setattr(ex, "load_all", lambda: keep)
    assert main(["reproduce", "all", "--dataset", "digits", "--out", str(tmp_path), "--no-progress"]) == 1
    index = (tmp_path / "index.md").read_text()
    assert "[e5-synthetic-digits.json](e5-synthetic-digits.json)" in index
    assert "[e5-synthetic-digits.png](e5-synthetic-digits.png)" in index
    assert "failed: RuntimeError: no data" in index


# ---------------------------------------------------------------------------------------------
# torchrun: the experiments that shard split their images over the ranks (bench/distributed.py)
# ---------------------------------------------------------------------------------------------
def _no_timings(obj):  # wall time, peak memory and the tables that print them vary between runs
    if isinstance(obj, dict):
        return {k: _no_timings(v) for k, v in obj.items()
                if "seconds" not in k and "peak_memory" not in k and k not in ("command", "markdown")}
    if isinstance(obj, list):
        return [_no_timings(v) for v in obj]
    return obj


@pytest.mark.slow
def test_sharded_reproduce_writes_what_one_process_writes(tmp_path):
    """`torchrun --nproc-per-node 2 -m teamattack.cli reproduce e2-table5 ...` (gloo, CPU) with three
    units per attack: the same records as one process, one resume file holding every rank's units
    and no shard file left; an experiment that does not shard is refused under torchrun."""
    import os
    import subprocess
    import sys

    import teamattack

    src = str(Path(teamattack.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    args = ["reproduce", "e2-table5", "--dataset", "digits", "-n", "12", "--batch-size", "4", "--no-progress",
            "--threads", "1"]
    cli = [sys.executable, "-m", "teamattack.cli"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "teamattack.cli"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(cli + args + ["--out", str(one)], env=env, check=True, capture_output=True, timeout=120)
    run = subprocess.run(torchrun + args + ["--out", str(two)], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    a, b = (json.loads((d / "e2-table5-digits.json").read_text()) for d in (one, two))
    assert _no_timings(a) == _no_timings(b) and len(a["runs"]) >= 9
    side = [(d / "e2-table5-digits.partial.jsonl").read_text().splitlines() for d in (one, two)]
    assert len(side[1]) == len(side[0]) > 1 + 3 and not list(two.glob("*.rank*"))
    assert sorted(json.loads(s)["key"] for s in side[1][1:]) == sorted(json.loads(s)["key"] for s in side[0][1:])
    refused = subprocess.run(torchrun + ["reproduce", "e3-taylor", "--dataset", "digits", "-n", "2", "--out",
                                         str(tmp_path / "e3")], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "does not split its work over processes" in refused.stderr
