"""`torchrun --nproc-per-node 2 -m teamattack.cli train ...` (gloo, CPU): the ranks share each batch
and their summed gradients make the step of one process on the whole batch.

Tolerance: the two runs differ only in the order of float32 additions (the batch's gradient as
one sum or as two halves' sums added by all_reduce); after one epoch of SGD (27 steps, lr 0.05)
the weights agreed to 1.2e-7 (measured, both runs). atol 1e-5 leaves 100x room for that and is
still 5000x smaller than how far the epoch moved the weights (> 5e-2, checked below), so a missing,
doubled or mis-weighted slice (the slices are 23 and 22 rows: a plain average of the ranks' mean
gradients would be wrong) fails it. SGD, not Adam: Adam is blind to a wrong gradient scale.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import teamattack

SRC = str(Path(teamattack.__file__).resolve().parents[1])
COMMON = ["train", "--arch", "digits-linear", "--epochs", "1", "--batch-size", "45", "--optimizer", "sgd",
          "--lr", "0.05", "--schedule", "constant", "--no-progress"]
ADV = ["--adversarial", "bim", "--eps", "0.2", "--adv-steps", "3"]  # PGD-3 without random start


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _one_process(args: list[str], out: Path) -> dict[str, torch.Tensor]:
    subprocess.run([sys.executable, "-m", "teamattack.cli"] + args + ["--out", str(out)], env=_env(), check=True,
                   capture_output=True, timeout=120)
    return load_file(str(out))


def _two_processes(args: list[str], out: Path) -> tuple[dict[str, torch.Tensor], str]:
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "teamattack.cli"] + args + ["--out", str(out)],
                         env=_env(), capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    return load_file(str(out)), run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("adversarial", [False, True], ids=["plain", "online-adversarial"])
def test_two_gloo_processes_train_like_one(tmp_path, adversarial):
    from teamattack.zoo.architectures import build

    args = COMMON + (ADV if adversarial else [])
    a = _one_process(args, tmp_path / "one.safetensors")
    b, stdout = _two_processes(args, tmp_path / "two.safetensors")
    torch.manual_seed(0)
    init = build("digits-linear").state_dict()
    assert a.keys() == b.keys() == init.keys()
    for k in a:
        moved = (a[k] - init[k]).abs().max()
        assert moved > 5e-2  # training moved the weights far more than the tolerance
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5)
    card_one = json.loads((tmp_path / "one.json").read_text())
    card = json.loads((tmp_path / "two.json").read_text())
    assert card["world_size"] == 2 and card["runs"][-1]["world_size"] == 2 and card_one["world_size"] == 1
    # the epoch's numbers are over both ranks' rows: the same as one process's
    h1, h2 = card_one["history"][0], card["history"][0]
    assert h2["train_accuracy"] == pytest.approx(h1["train_accuracy"], abs=2 / 1198)
    assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-3)
    assert sum(line.startswith("test accuracy") for line in stdout.splitlines()) == 1  # only rank 0 prints
    assert not list(tmp_path.glob("*.ckpt.*"))  # rank 0 cleaned up its checkpoint


@pytest.mark.slow
def test_two_processes_resume_to_the_uninterrupted_weights(tmp_path):
    """Stopped after epoch 1 (the checkpoint kept) and resumed with --epochs 2: every rank loads rank
    0's checkpoint and the weights are bit-identical to an uninterrupted two-process run."""
    args = COMMON[:COMMON.index("--epochs")] + COMMON[COMMON.index("--epochs") + 2:]
    whole, _ = _two_processes(args + ["--epochs", "2"], tmp_path / "whole.safetensors")
    _two_processes(args + ["--epochs", "1", "--keep-checkpoint"], tmp_path / "part.safetensors")
    assert (tmp_path / "part.ckpt.safetensors").is_file()
    resumed, stdout = _two_processes(args + ["--epochs", "2", "--resume"], tmp_path / "part.safetensors")
    assert "resuming digits-linear after epoch 1" in stdout
    for k in whole:
        assert torch.equal(resumed[k], whole[k]), k
    card = json.loads((tmp_path / "part.json").read_text())
    assert [(r["from_epoch"], r["world_size"]) for r in card["runs"]] == [(0, 2), (1, 2)]
