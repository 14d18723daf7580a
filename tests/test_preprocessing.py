"""bounds= and preprocessing= on every attack: the same attack on the user's scale, mapped back."""
import pytest
import torch

import teamattack as ta
from teamattack.preprocessing import InputSpace


@pytest.fixture(scope="module")
def digits():
    model = ta.zoo.load("digits-cnn")
    x, y = ta.data.load("digits", "test", n=8, seed=1)
    return model, x, y


class Scaled(torch.nn.Module):
    """The digits net taking 0..255 inputs normalised with (x - mean) / std."""

    def __init__(self, net, mean=0.3 * 255, std=0.2 * 255):
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, z):  # z = (x255 - mean) / std
        return self.net((z * self.std + self.mean) / 255)


def test_team_on_0_255_with_preprocessing_matches_unit(digits):
    model, x, y = digits
    unit = ta.TEAM(model, norm="l2", mode="min-norm", steps=12, starts=2, screen=4)(x, y)
    atk = ta.TEAM(Scaled(model).eval(), norm="l2", mode="min-norm", steps=12, starts=2, screen=4,
                  bounds=(0, 255), preprocessing=(0.3 * 255, 0.2 * 255))
    r = atk(x * 255, y)
    assert torch.equal(r.success, unit.success)
    assert torch.allclose(r.l2, unit.l2 * 255, rtol=1e-3, atol=1e-2)
    assert torch.allclose(r.x_adv / 255, unit.x_adv, atol=1e-4)
    assert torch.equal(r.l0, unit.l0)                     # untouched pixels stay exactly x
    assert r.info["input_space"]["bounds"] == [0.0, 255.0]
    with pytest.raises(ta.InputError, match="bounds"):
        atk(x * 300, y)


@pytest.mark.parametrize("make", [
    lambda m, **kw: ta.paper.FGSM(m, eps=0.1 * 255, **kw),
    lambda m, **kw: ta.TEAM(m, norm="linf", eps=0.1 * 255, mode="paper", **kw),
])
def test_fixed_budgets_are_on_the_users_scale(digits, make):
    model, x, y = digits
    unit = make(model).__class__  # same class, unit box, eps / 255
    r = make(Scaled(model, mean=0.0, std=1.0).eval(), bounds=(0, 255))(x * 255, y)
    assert float(r.linf.max()) <= 0.1 * 255 + 1e-3
    assert torch.allclose(r.radius, torch.full_like(r.radius, 0.1 * 255))
    assert isinstance(r, ta.AttackResult) and unit is not None


def test_set_input_space_and_identity(digits):
    model, x, y = digits
    atk = ta.paper.FGSM(model, eps=0.1).set_input_space(bounds=(0, 1))
    assert atk.input_space is None                       # the default costs nothing
    with pytest.raises(ta.InputError):
        InputSpace.of(bounds=(1, 0))
    with pytest.raises(ta.InputError):
        InputSpace.of(preprocessing=(0.5,))
    sp = InputSpace.of(bounds=(-1, 1), preprocessing={"mean": [0.5], "std": [2.0]})
    z = torch.rand(2, 1, 3, 3) * 2 - 1
    assert torch.allclose(sp.from_unit(sp.to_unit(z)), z, atol=1e-6)
    assert torch.allclose(sp.normalise(z), (z - 0.5) / 2.0)


def test_peer_adapter_takes_bounds(digits):
    pytest.importorskip("torchattacks")
    from teamattack import baselines

    model, x, y = digits
    unit = baselines.make("pgd", model, eps=0.1, alpha=0.02, steps=5)(x, y)
    r = baselines.make("pgd", Scaled(model, 0.0, 1.0).eval(), eps=0.1 * 255, alpha=0.02 * 255, steps=5,
                       bounds=(0, 255))(x * 255, y)
    assert torch.equal(r.success, unit.success)
    assert torch.allclose(r.x_adv / 255, unit.x_adv, atol=1e-5)
