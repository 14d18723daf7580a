"""E8 plumbing (math paper Figs 1-4), the paper's CW-L2 variant, and `teamattack reproduce`, on tiny models."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from teamattack.paper import CWL2, FGSM, IFGSM, cw_hinge
from teamattack.cli import build_parser, main
from teamattack.experiments import REGISTRY, load_all, math_paper
from teamattack.experiments.common import fgsm_at, fgsm_direction

NAMES = ("math-fig1", "math-fig2", "math-fig3", "math-fig4", "math-theorems")


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _pixel_model() -> nn.Module:
    """Linear model on 3x32x32 inputs: class c's logit is 20 x (flattened pixel c) + small dense weights; CIFAR-shaped and fast."""
    lin = nn.Linear(3 * 32 * 32, 10)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        for c in range(10):
            lin.weight[c, c] = 20.0
        lin.weight.add_(0.1 * torch.randn(lin.weight.shape, generator=torch.Generator().manual_seed(0)))
    return nn.Sequential(nn.Flatten(), lin).eval()


def _fake_cifar(total: int = 60):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(total) % 10
    x = 0.5 * torch.rand(total, 3, 32, 32, generator=g)
    x.view(total, -1)[torch.arange(total), y] = 1.0        # class c's pixel lit: classified correctly

    def load(name, split="test", n=None, seed=0, root=None, return_indices=False):
        assert name == "cifar10"
        if n is None:
            return x.clone(), y.clone()
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
        return x[idx], y[idx]

    return load


@pytest.fixture
def fake_cifar(monkeypatch):
    model = _pixel_model()
    monkeypatch.setattr(math_paper, "zoo_model", lambda name, device: model.to(device))
    monkeypatch.setattr(math_paper.data, "load", _fake_cifar())
    return model


# ------------------------------------------------------------------------------------------ registry
def test_registry_and_help_list_the_experiments(capsys):
    reg = load_all()
    for name in NAMES:
        assert name in reg and reg[name].help
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "--help"])
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    for opt in ("-n", "--out", "--json", "--seed", "--device", "--data-root"):
        assert opt in out


# ------------------------------------------------------------------------------------------ attacks
def test_fgsm_direction_reproduces_fgsm_at_every_eps():
    model = _pixel_model()
    x, y = _fake_cifar()("cifar10", n=8)
    x[:, :, :2] = 0.0                                      # pixels on the bounds
    x[:, :, 2:4] = 1.0
    d, _ = fgsm_direction(model, x, y, eps_max=0.1)
    for eps in (0.0, 0.003, 0.02, 0.1):
        expect = FGSM(model, eps=eps)(x, y).x_adv if eps > 0 else x
        assert torch.equal(fgsm_at(x, d, eps), expect)


def test_ifgsm_callback_records_every_iteration():
    model = _pixel_model()
    x, y = _fake_cifar()("cifar10", n=4)
    seen = []
    res = IFGSM(model, step=0.02, steps=5, eps=0.05, callback=lambda m, xa: seen.append((m, xa.clone())))(x, y)
    assert [m for m, _ in seen] == [1, 2, 3, 4, 5]
    assert torch.equal(seen[-1][1], res.x_adv)
    assert all(float((xa - x).abs().max()) <= 0.05 + 1e-6 for _, xa in seen)


def test_cw_hinge():
    z = torch.tensor([[1.0, 3.0, 2.0]])
    assert cw_hinge(z, torch.tensor([2]), targeted=True).item() == pytest.approx(1.0)      # max_{i!=t} - Z_t
    assert cw_hinge(z, torch.tensor([1]), targeted=True, kappa=0.5).item() == pytest.approx(-0.5)
    assert cw_hinge(z, torch.tensor([1]), targeted=False).item() == pytest.approx(1.0)     # Z_y - max_{i!=y}


def test_cwl2_paper_variant_and_eq_2_10_scaling():
    model = _pixel_model()
    x, y = _fake_cifar()("cifar10", n=6)
    t = (y + 1) % 10
    full = CWL2(model, c=10, steps=10, lr=0.01)(x, y, t)
    assert full.success.float().mean() >= 0.5                  # most fall to 10 Adam steps
    scaled = CWL2(model, c=10, steps=10, lr=0.01, scale=0.25)(x, y, t)
    assert torch.allclose(scaled.raw, x + 0.25 * (full.x_adv - x), atol=1e-6)
    none = CWL2(model, steps=0)(x, y, t)
    assert float((none.x_adv - x).abs().max()) < 1e-5
    with pytest.raises(ValueError):
        CWL2(model)(x, y)                                      # targeted by default: needs target=
    assert CWL2(model, targeted=False, steps=10)(x, y).success.float().mean() >= 0.5


# ----------------------------------------------------------------------------------- the commands
@pytest.mark.parametrize("name,n", [("math-fig2", 12), ("math-fig3", 4), ("math-fig4", 6), ("math-fig1", 3)])
def test_reproduce_commands_write_json_and_png(fake_cifar, tmp_path, name, n, capsys):
    js = tmp_path / "r.json"
    assert main(["reproduce", name, "-n", str(n), "--out", str(tmp_path), "--json", str(js),
                 "--no-progress", "--device", "cpu"]) == 0
    res = json.loads(js.read_text())
    assert res["experiment"] == name and res["n_images"] == n
    assert (tmp_path / res["png"].split("/")[-1]).is_file()
    out = capsys.readouterr().out
    assert f"{n} " in out                                       # says how many images it used
    if name == "math-fig2":
        assert len(res["panel_a"]["accuracy"]) == len(math_paper.FIG2_EPS)
        assert len(res["panel_b"]["accuracy"]) == 21 and res["clean_accuracy"] == 1.0
        assert res["panel_b"]["accuracy"][-1] <= res["panel_b"]["accuracy"][0]
    if name == "math-fig3":
        assert len(res["panel_a"]["success_rate"]) == len(math_paper.FIG3_EPS)
        assert res["panel_b"]["success_rate"][0] == 0.0
    if name == "math-fig4":
        assert sum(res["mean_probability_before"]) == pytest.approx(1.0)
        assert res["mean_probability_after"][5] > res["mean_probability_before"][5]
    if name == "math-fig1":
        assert len(res["panels"]) == 2 and res["true_classes"] == ["horse", "automobile", "airplane"]


def test_reproduce_rejects_unknown_experiment():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "no-such-experiment"])
    assert set(NAMES) <= set(REGISTRY)
