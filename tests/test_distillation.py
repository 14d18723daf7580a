"""Defensive distillation (teamattack.defenses.distill) and what it does to the attacks, on digits."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import teamattack as ta
import teamattack.checks
from teamattack.defenses import distill, soft_labels
from teamattack.experiments.distillation import gradient_health, logit_stats

EPOCHS, LR, HIGH_G = 30, 0.03, 50.0
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A G = 1 and a high-G distillation of digits-cnn, same recipe (a few seconds each)."""
    d = tmp_path_factory.mktemp("distill")
    return {g: distill("digits-cnn", "digits", temperature=g, epochs=EPOCHS, lr=LR, out=d / f"g{g:g}.safetensors",
                       progress=False, log=lambda m: None) for g in (1.0, HIGH_G)}


@pytest.fixture(scope="module")
def test_set():
    return ta.data.load("digits", "test")


def test_student_learns_and_card(runs):
    for g, r in runs.items():
        card = r.student_card
        assert card["test_accuracy"] >= 0.9, (g, card["test_accuracy"])
        assert card["temperature"] == g and card["teacher"] == r.teacher.name
        assert card["epochs"] == EPOCHS and card["seed"] == 1 and card["distillation_role"] == "student"
        assert r.teacher_card["temperature"] == g and r.teacher_card["distillation_role"] == "teacher"
        assert json.loads(r.student.with_suffix(".json").read_text())["test_accuracy"] == card["test_accuracy"]


def test_soft_labels_are_the_teachers_softmax_at_G(runs):
    r = runs[HIGH_G]
    teacher = ta.zoo.load(r.teacher)
    p = soft_labels(teacher, "digits", HIGH_G)
    x, _ = ta.data.load("digits", "train")
    with torch.no_grad():
        ref = torch.softmax(teacher(x[:50]) / HIGH_G, 1)
    assert p.shape == (len(ta.data.load_arrays("digits", "train")[1]), 10)
    assert torch.allclose(p[:50], ref, atol=1e-6)
    assert torch.allclose(p.sum(1), torch.ones(len(p)), atol=1e-5)


def test_logit_scale_grows_with_G(runs, test_set):
    x, y = test_set
    lo = logit_stats(ta.zoo.load(runs[1.0].student), x, y)
    hi = logit_stats(ta.zoo.load(runs[HIGH_G].student), x, y)
    assert hi["logit_std"] > 4 * lo["logit_std"], (lo, hi)
    assert hi["median_top_gap"] > 4 * lo["median_top_gap"]


def test_softmax_objective_underflows_logit_objective_does_not(runs, test_set):
    x, y = test_set
    model = ta.zoo.load(runs[HIGH_G].student)
    t4, t1 = gradient_health(model, x, y, "T4"), gradient_health(model, x, y, "T1")
    assert t4["zero_gradient"] > 0.1, t4  # p_y == 1 and the other probabilities underflow to 0
    assert t1["zero_gradient"] == 0.0 and t1["non_finite_gradient"] == 0.0, t1
    low = gradient_health(ta.zoo.load(runs[1.0].student), x, y, "T4")
    assert low["zero_gradient"] < 0.05, low


def test_saturation_warning_on_softmax_objective(runs, test_set):
    """Contract with teamattack.checks (reliability engineer): TEAM warns on a saturated softmax."""
    model = ta.zoo.load(runs[HIGH_G].student)
    x, y = ta.data.correctly_classified(model, *test_set)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg).softmax(1).gather(1, y[:, None]).sum(), xg)
    dead = g.flatten(1).abs().amax(1) == 0           # the images whose T4 gradient is exactly zero
    assert dead.sum() >= 10
    with pytest.warns(teamattack.checks.SaturationWarning, match="saturated"):
        ta.TEAM(model, norm="l2", objective="T4", mode="paper")(x[dead][:20], y[dead][:20])


def test_logit_objective_attack_still_succeeds_within_budget(runs, test_set):
    model = ta.zoo.load(runs[HIGH_G].student)
    x, y = ta.data.correctly_classified(model, *test_set)
    x, y = x[:30], y[:30]
    res = ta.TEAM(model, norm="l2", mode="min-norm")(x, y)
    budget = 3.0 * 8 / 28  # the paper's MNIST L2 budget scaled to 8x8 (experiments.distillation.BUDGETS)
    within = res.success & (res.l2 <= budget + 1e-6)
    assert within.float().mean() >= 0.95, (res.success.float().mean(), res.l2)


KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from teamattack.defenses import distill
    stage = ["teacher"]
    def log(m):
        if "training the student" in m:
            stage[0] = "student"
        # killed after epoch 2's (teacher) / epoch 3's (student) checkpoint, before the next one
        if stage[0] == sys.argv[2] and ("epoch 3/" if stage[0] == "teacher" else "epoch 4/") in m:
            os.kill(os.getpid(), signal.SIGKILL)
    distill("digits-cnn", "digits", temperature=10, epochs=6, lr=float(sys.argv[3]), out=sys.argv[1], progress=False,
            resume=True, log=log)
""")


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_weights(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC)
    ref = distill("digits-cnn", "digits", temperature=10, epochs=6, lr=LR, out=tmp_path / "ref.safetensors",
                  progress=False, resume=False, log=lambda m: None)
    out = tmp_path / "killed.safetensors"
    for where in ("teacher", "student"):
        p = subprocess.run([sys.executable, "-c", KILLER, str(out), where, str(LR)], env=env, capture_output=True, text=True)
        assert p.returncode == -signal.SIGKILL, p.stderr
    assert out.with_name("killed.ckpt.json").is_file() and not out.is_file()
    lines = []
    d = distill("digits-cnn", "digits", temperature=10, epochs=6, lr=LR, out=out, progress=False, resume=True,
                log=lines.append)
    assert any("reusing the teacher" in m for m in lines) and any("resuming" in m for m in lines), lines
    for a, b in ((ref.teacher, d.teacher), (ref.student, d.student)):
        wa, wb = load_file(str(a)), load_file(str(b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not out.with_name("killed.ckpt.json").exists()


def test_cli_distill(tmp_path, capsys, monkeypatch):
    from teamattack.cli import main

    out = tmp_path / "s.safetensors"
    argv = ["distill", "--arch", "digits-linear", "-G", "5", "--epochs", "2", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["teamattack", *argv])
    rc = main(argv)
    assert rc == 0 and out.is_file() and (tmp_path / "s-teacher.safetensors").is_file()
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["temperature"] == 5.0 and card["command"].startswith("teamattack distill")
    assert main(["distill", "-G", "5", "--out", str(out)]) == 2
    assert "exactly one of --arch" in capsys.readouterr().err


@pytest.mark.slow
def test_sgd_at_high_temperature_learns_because_its_loss_is_scaled_by_G(tmp_path, monkeypatch):
    """softmax(Z / G) has logit gradients G times smaller: SGD's loss is multiplied by G (Adam's is not)."""
    import teamattack.zoo.train as zt

    assert zt.temperature_loss_scale("sgd", HIGH_G) == HIGH_G and zt.temperature_loss_scale("adam", HIGH_G) == 1.0
    kw = dict(epochs=30, temperature=HIGH_G, optimizer="sgd", lr=0.1, progress=False, log=lambda m: None)
    card = zt.train("digits-cnn", tmp_path / "scaled.safetensors", **kw)
    assert card["loss_scale"] == HIGH_G and card["test_accuracy"] >= 0.9, card["test_accuracy"]
    assert card["history"][-1]["train_loss"] < 1.0  # reported unscaled (a cross-entropy at G)
    monkeypatch.setattr(zt, "temperature_loss_scale", lambda optimizer, g: 1.0)
    plain = zt.train("digits-cnn", tmp_path / "plain.safetensors", **kw)
    assert "loss_scale" not in plain and plain["test_accuracy"] < 0.3, plain["test_accuracy"]
