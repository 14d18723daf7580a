"""TEAM inside the peers' own pipelines: torchattacks (MultiAttack, normalisation, targeted modes,
save/load) and foolbox (bounds, preprocessing, criteria, epsilons)."""
import pytest
import torch

pytest.importorskip("torchattacks")
pytest.importorskip("foolbox")

import foolbox as fb  # noqa: E402
import torchattacks  # noqa: E402

import teamattack as ta  # noqa: E402
from teamattack.compat.foolbox import TEAM as FoolboxTEAM  # noqa: E402
from teamattack.compat.torchattacks import TEAM as TorchattacksTEAM  # noqa: E402

pytestmark = pytest.mark.peers
FAST = dict(steps=12, starts=2, screen=4)  # a short boundary walk: these tests check plumbing


@pytest.fixture(scope="module")
def digits():
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=12, seed=0)
    x, y = ta.data.correctly_classified(model, x, y)
    return model, x, y


class Normalised(torch.nn.Module):
    """The digits net behind a (x - mean) / std input layer convention: it takes normalised inputs."""

    def __init__(self, net, mean=0.3, std=0.2):
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, z):
        return self.net(z * self.std + self.mean)


def test_torchattacks_subclass_untargeted_and_multiattack(digits):
    model, x, y = digits
    atk = TorchattacksTEAM(model, norm="l2", **FAST)
    assert isinstance(atk, torchattacks.attack.Attack)
    adv = atk(x, y)
    assert (model(adv).argmax(1) != y).all()
    d = (adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(d, atk.last_result.l2, atol=1e-5) and (d > 0).all()
    # in MultiAttack next to a torchattacks attack: images TEAM-Linf at a tiny eps misses go to PGD
    weak = TorchattacksTEAM(model, norm="linf", eps=0.02)
    multi = torchattacks.MultiAttack([weak, torchattacks.PGD(model, eps=0.3, alpha=0.05, steps=10)])
    adv = multi(x, y)
    fooled_weak = model(weak(x, y)).argmax(1) != y
    fooled = model(adv).argmax(1) != y
    assert fooled.float().mean() > fooled_weak.float().mean()
    assert fooled[fooled_weak].all()


def test_torchattacks_normalization_used(digits):
    model, x, y = digits
    net = Normalised(model).eval()
    xn = (x - 0.3) / 0.2
    plain = TorchattacksTEAM(model, norm="l2", **FAST)(x, y)
    atk = TorchattacksTEAM(net, norm="l2", **FAST)
    atk.set_normalization_used(mean=[0.3], std=[0.2])
    adv_n = atk(xn, y)  # normalised in, normalised out
    assert (net(adv_n).argmax(1) != y).all()
    assert torch.allclose(adv_n * 0.2 + 0.3, plain, atol=1e-4)


def test_torchattacks_targeted_modes_and_save(digits, tmp_path):
    model, x, y = digits
    atk = TorchattacksTEAM(model, norm="l2", **FAST)
    atk.set_mode_targeted_by_label(quiet=True)
    t = (y + 1) % 10
    assert (model(atk(x, t)).argmax(1) == t).all()
    atk.set_mode_targeted_least_likely(quiet=True)
    ll = model(x).argsort(1)[:, 0]
    assert (model(atk(x, y)).argmax(1) == ll).all()
    atk.set_mode_default()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    path = tmp_path / "adv.pt"
    rob_acc, _, _ = atk.save(loader, save_path=str(path), verbose=False, return_verbose=True)
    assert rob_acc == 0.0
    saved = torch.load(path, weights_only=True)
    assert saved["adv_inputs"].shape == x.shape and (model(saved["adv_inputs"]).argmax(1) != y).all()


def test_foolbox_minimization_attack(digits):
    model, x, y = digits
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
    attack = FoolboxTEAM(norm="l2", **FAST)
    eps = [0.1, 0.5, 2.0, None]
    raw, clipped, success = attack(fmodel, x, fb.criteria.Misclassification(y), epsilons=eps)
    assert len(raw) == len(clipped) == 4 and success.shape == (4, len(x))
    assert success[-1].all() and success[2].all()           # unbounded, and 2.0 above every distance found
    assert (success.float().mean(1).diff() >= 0).all()       # monotone in eps
    assert ((clipped[1] - x).flatten(1).norm(dim=1) <= 0.5 + 1e-4).all()
    assert (fb.distances.l2(x, raw[-1]) > 0).all()


def test_foolbox_bounds_preprocessing_targeted(digits):
    model, x, y = digits
    # a 0..255 model with its normalisation done by foolbox's preprocessing
    net = Normalised(model).eval()
    fmodel = fb.PyTorchModel(net, bounds=(0, 255), device="cpu",
                             preprocessing=dict(mean=[0.3 * 255], std=[0.2 * 255], axis=-3))
    x255 = x * 255
    assert fb.utils.accuracy(fmodel, x255, y) == 1.0
    t = (y + 3) % 10
    attack = FoolboxTEAM(norm="l2", **FAST)
    raw, clipped, success = attack(fmodel, x255, fb.criteria.TargetedMisclassification(t), epsilons=[None])
    assert success[0].all()
    assert (fmodel(clipped[0]).argmax(1) == t).all()
    assert float(clipped[0].min()) >= 0 and float(clipped[0].max()) <= 255
    ref = FoolboxTEAM(norm="l2", **FAST)(fb.PyTorchModel(model, bounds=(0, 1), device="cpu"), x,
                                         fb.criteria.TargetedMisclassification(t), epsilons=[None])[0][0]
    # the same attack on the [0, 1] model: distances scale with the bounds
    d255, d1 = fb.distances.l2(x255, raw[0]), fb.distances.l2(x, ref)
    assert torch.allclose(d255 / 255, d1, rtol=1e-3, atol=1e-4)
    with pytest.raises(ta.InputError, match="criterion"):
        attack(fmodel, x255, fb.criteria.Misclassification(y) & fb.criteria.TargetedMisclassification(t),
               epsilons=None)
