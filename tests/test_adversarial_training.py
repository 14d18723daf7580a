"""Adversarial training (teamattack.defenses.adversarial_train), the robust zoo models and E7 (digits, fast)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from teamattack import data, zoo
from teamattack.defenses import AttackSpec, adversarial_train, robust_accuracy
from teamattack.defenses.adversarial import OnlinePerturb, within
from teamattack.zoo.train import train

pytest.importorskip("torchattacks")

EPS = 0.2


@pytest.fixture(scope="module")
def test_images():
    return data.load("digits", "test", n=150, seed=0)


@pytest.mark.slow
def test_online_adversarial_training_raises_pgd_robust_accuracy(tmp_path, test_images):
    x, y = test_images
    kw = dict(dataset="digits", epochs=6, seed=0, progress=False, log=lambda m: None, lr=3e-3)
    train("digits-cnn", tmp_path / "nat.safetensors", **kw)
    card = adversarial_train("digits-cnn", AttackSpec("pgd", eps=EPS, steps=3), out=tmp_path / "at.safetensors",
                             ramp_epochs=2, **kw)
    assert card["adversarial"]["mode"] == "online" and card["adversarial"]["eps"] == EPS
    h = card["history"]
    assert [e["eps"] for e in h][-1] == pytest.approx(EPS) and h[0]["eps"] < EPS  # the ramp
    assert all({"adv_loss", "clean_loss", "adv_success"} <= set(e) for e in h)
    assert all(e["adv_loss"] >= e["clean_loss"] for e in h[2:])  # PGD raises the loss over the clean one
    pgd = AttackSpec("pgd", eps=EPS, steps=10)
    nat = robust_accuracy(zoo.load(tmp_path / "nat.safetensors"), pgd, x, y)
    at = robust_accuracy(zoo.load(tmp_path / "at.safetensors"), pgd, x, y)
    assert at > nat + 0.15, (nat, at)


def test_committed_robust_digits_model_beats_the_natural_one(test_images):
    x, y = test_images
    pgd = AttackSpec("pgd", eps=EPS, steps=10)
    at = zoo.load("digits-cnn-at")
    assert at.card["adversarial"]["attack"]["name"] == "pgd"
    assert robust_accuracy(at, pgd, x, y) > robust_accuracy(zoo.load("digits-cnn"), pgd, x, y) + 0.3
    assert {r["eps"] for r in at.card["robust_accuracy"]} == {0.1, 0.2}


def test_mix_weights_and_parts():
    model = zoo.load("digits-cnn").train()
    x, y = data.load("digits", "test", n=16, seed=1)
    hook = OnlinePerturb(AttackSpec("fgsm", eps=0.1), 0.1, mix=0.25, ramp_epochs=0, seed=0)
    tb = hook(model, x, y, 0, 0, 10)
    assert model.training  # back in train mode after the attack
    assert tb.x.shape[0] == 32 and torch.equal(tb.x[:16], x)
    assert tb.weight[:16].sum().item() == pytest.approx(0.75) and tb.weight[16:].sum().item() == pytest.approx(0.25)
    assert (tb.x[16:] - x).abs().max() <= 0.1 + 1e-6
    assert hook.eps_at(0, 4, 10) == 0.1
    ramp = OnlinePerturb(AttackSpec("fgsm", eps=0.1), 0.1, mix=1.0, ramp_epochs=2, seed=0)
    assert ramp.eps_at(0, 9, 10) == pytest.approx(0.05) and ramp.eps_at(3, 0, 10) == pytest.approx(0.1)


def test_within_budget():
    x = torch.zeros(2, 1, 4, 4)
    xa = x.clone()
    xa[0, 0, 0, :3] = 1.0  # 3 pixels
    xa[1, 0, :2, :] = 0.5  # 8 pixels
    out = within(x, xa, 4, "l0")
    assert torch.equal(out[0], xa[0]) and torch.equal(out[1], x[1])
    assert within(x, xa, 0.3, "linf").max() == pytest.approx(0.3)
    assert torch.linalg.vector_norm(within(x, xa, 0.5, "l2")[1]) == pytest.approx(0.5, rel=1e-5)


def test_minimum_norm_examples_are_brought_into_the_budget():
    from teamattack.defenses.adversarial import craft
    from teamattack.metrics import l2

    model = zoo.load("digits-cnn")
    x, y = data.load("digits", "test", n=20, seed=2)
    spec = AttackSpec("deepfool")
    assert not spec.bounded() and AttackSpec("pgd", eps=0.1).bounded() and AttackSpec("team-l2", eps=1.0).bounded()
    x_adv, ok = craft(spec, model, x, y, seed=0, eps=0.3, norm="l2")
    assert (l2(x, x_adv) <= 0.3 + 1e-5).all()
    assert torch.equal(ok, data.predict(model, x_adv) != y)
    free, _ = craft(spec, model, x, y, seed=0)
    assert (l2(x, free) > 0.3 + 1e-5).any()  # without the budget DeepFool goes further


def test_offline_augmentation_runs(tmp_path):
    card = adversarial_train("digits-cnn", AttackSpec("fgsm", eps=0.1), "digits", epochs=2,
                             out=tmp_path / "off.safetensors", offline=True, offline_n=64, natural="digits-cnn",
                             progress=False, log=lambda m: None)
    adv = card["adversarial"]
    assert adv["mode"] == "offline" and adv["natural"] == "digits-cnn" and adv["n_subset"] == 64
    assert 0 < adv["n_adversarial"] <= adv["n_attacked"] <= 64
    cached = load_file(str(tmp_path / "off.offline.safetensors"))
    assert cached["x_adv"].shape[0] == adv["n_adversarial"]
    assert (cached["x_adv"] >= 0).all() and (cached["x_adv"] <= 1).all()
    nat = zoo.load("digits-cnn")
    assert (data.predict(nat, cached["x_adv"]) != cached["y"]).all()  # only successful examples are added
    assert all("adv_loss" in e and "clean_loss" in e for e in card["history"])


class _Stop(Exception):
    pass


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    spec = AttackSpec("pgd", eps=0.1, steps=2)  # random start: the attack's randomness is seeded per step
    kw = dict(dataset="digits", epochs=2, seed=3, progress=False, log=lambda m: None, ramp_epochs=1)
    full = tmp_path / "full.safetensors"
    adversarial_train("digits-cnn", spec, out=full, **kw)

    cut = tmp_path / "cut.safetensors"
    real = OnlinePerturb.__call__

    def dies_in_epoch_2(self, model, x, y, epoch, step, spe):
        if epoch == 1 and step == 5:
            raise _Stop  # a kill in the middle of epoch 2: the checkpoint of epoch 1 is on disk
        return real(self, model, x, y, epoch, step, spe)

    OnlinePerturb.__call__ = dies_in_epoch_2
    try:
        with pytest.raises(_Stop):
            adversarial_train("digits-cnn", spec, out=cut, **kw)
    finally:
        OnlinePerturb.__call__ = real
    assert json.loads((tmp_path / "cut.ckpt.json").read_text())["epoch"] == 1
    torch.manual_seed(12345)  # the global RNG state must not matter
    card = adversarial_train("digits-cnn", spec, out=cut, resume=True, **kw)
    a, b = load_file(str(full)), load_file(str(cut))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["adv_loss"] for e in card["history"]] == [e["adv_loss"] for e in
                                                       json.loads(full.with_suffix(".json").read_text())["history"]]


def test_cli_train_adversarial(tmp_path, capsys):
    from teamattack.cli import main

    out = tmp_path / "cli.safetensors"
    rc = main(["train", "--arch", "digits-cnn", "--epochs", "1", "--out", str(out), "--no-progress",
               "--adversarial", "team-linf", "--eps", "0.1", "--offline", "--offline-n", "16"])
    assert rc == 0
    card = json.loads(out.with_suffix(".json").read_text())
    adv = card["adversarial"]
    assert adv["attack"] == {"name": "team-linf", "eps": 0.1} and adv["mode"] == "offline" and adv["n_subset"] == 16
    x_adv = load_file(str(tmp_path / "cli.offline.safetensors"))["x_adv"]
    assert len(x_adv) == adv["n_adversarial"] > 0
    capsys.readouterr()
    assert main(["train", "--arch", "digits-cnn", "--out", str(out), "--eps", "0.1"]) == 2
    assert capsys.readouterr().err.strip() == "teamattack train: error: --eps need(s) --adversarial ATTACK"


@pytest.mark.slow
def test_e7_tiny_writes_json_pngs_and_consistent_transfer(tmp_path):
    from teamattack.experiments import Context, run
    from teamattack.experiments.adversarial_training import ATTACKS

    args = SimpleNamespace(epochs=1, train_n=24, cache=None, dataset="digits")
    ctx = Context(n=12, out=tmp_path, progress=False, dataset="digits", args=args,
                  skip=("cw", "jsma", "deepfool", "mdi2fgsm", "pgd"))
    res = run("e7-adversarial-training", ctx)
    kept = [a for a in ATTACKS if a.key not in ctx.skip]
    assert res["model_order"] == ["natural"] + [a.key for a in kept]
    white = res["white_box"]
    assert len(white) == len(kept) + 1 and all(len(r) == len(kept) + 1 for r in white)
    for j, a in enumerate(kept, start=1):  # the transfer matrix's diagonal is the white-box accuracy
        t = res["transfer"][a.key]
        assert [t[i][i] for i in range(len(t))] == [row[j] for row in white]
        assert [r[j] for r in res["natural_examples_on_models"]] == t[0]
    for png in res["png"]:
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    json.dumps(res)
    assert "## White-box" in open(res["md"]).read()
    again = run("e7-adversarial-training", ctx)  # resumed: every unit from the sidecar
    assert again["white_box"] == white and again["attack_seconds"] == res["attack_seconds"]


def test_e7_finetune_starts_every_model_from_the_natural_zoo_model(tmp_path):
    """--finetune: the natural control and each attack's model train from the zoo model's weights,
    at a tenth of its learning rate, so one epoch keeps them near its accuracy."""
    from teamattack.experiments import Context, run
    from teamattack.experiments.adversarial_training import RECIPES, finetuning

    assert RECIPES["cifar10"].finetune and not RECIPES["digits"].finetune  # the recipes' defaults

    natural = zoo.load("digits-cnn")
    ft = finetuning(natural)
    assert ft["lr"] == pytest.approx(natural.card["lr"] / 10) and ft["optimizer"] == natural.card["optimizer"]
    with pytest.raises(ValueError, match="--finetune"):
        finetuning(torch.nn.Linear(2, 2))
    args = SimpleNamespace(epochs=1, train_n=16, cache=None, dataset="digits", finetune=True)
    ctx = Context(n=20, out=tmp_path, progress=False, dataset="digits", args=args,
                  skip=("cw", "jsma", "deepfool", "mdi2fgsm", "pgd", "fgsm"))
    res = run("e7-adversarial-training", ctx)
    assert res["finetune"] and res["model_order"] == ["natural", "team"]
    assert "fine-tuned 1 epoch(s) from the natural zoo model" in open(res["md"]).read()
    for key in res["model_order"]:
        card = json.loads(zoo.registry.card_path(tmp_path / "e7-cache" / res["models"][key]["weights"]).read_text())
        assert card["init"] == "digits-cnn" and card["lr"] == ft["lr"]
        # from a trained point, at a tenth of the rate: within 3 points of the zoo model
        assert card["test_accuracy"] >= natural.card["test_accuracy"] - 0.03
