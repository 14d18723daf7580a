"""Inputs reach the network in the memory layout of the caller's images (teamattack.layout)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import teamattack as ta
from teamattack.counting import CountingModel
from teamattack.layout import laid_out_like, row_strides


def _channels_last_like(b: int, c: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(b, h, w, c).permute(0, 3, 1, 2)   # strides (hwc, 1, wc, c): the MNIST readers' layout


def test_row_strides_of_dense_and_strided_rows():
    assert row_strides(torch.rand(2, 3, 4, 5)) == (20, 5, 1)
    assert row_strides(_channels_last_like(2, 3, 4, 5)) == (1, 15, 3)
    assert row_strides(_channels_last_like(2, 1, 4, 5)) == (1, 5, 1)    # one channel: its stride is kept
    assert row_strides(torch.rand(2, 3, 4, 10)[..., ::2]) is None        # not dense
    assert row_strides(torch.rand(5, 7)) == (1,)


@pytest.mark.parametrize("c", [1, 3])
def test_laid_out_like_keeps_values_and_gradients(c):
    x = _channels_last_like(3, c, 4, 5)
    t = torch.rand(6, c, 4, 5, requires_grad=True)
    out = laid_out_like(t, row_strides(x))
    assert out.stride() == (c * 20,) + x.stride()[1:] and torch.equal(out, t)
    (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
    assert torch.equal(t.grad, torch.arange(t.numel(), dtype=t.dtype).reshape(t.shape))
    same = torch.rand(2, c, 4, 5)
    assert laid_out_like(same, row_strides(same)) is same               # already laid out: no copy


class _Spy(nn.Module):
    """A small conv net that records the strides of every input it is given."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Linear(4 * 4 * 4, 10))
        self.seen: list[tuple[int, tuple[int, ...]]] = []

    def forward(self, x):
        self.seen.append((x.shape[0], x.stride()))
        return self.net(x)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_every_pass_of_an_attack_uses_the_callers_layout(norm):
    spy = _Spy().eval()
    x = _channels_last_like(5, 1, 8, 8)
    y = torch.randint(0, 10, (5,))
    r = ta.TEAM(spy, norm=norm)(x, y)
    # the attack's passes (through its CountingModel); not the input check and the final
    # verification (x and x_adv as given) nor the walk's one-row size probe (uncounted)
    inside = [s for b, s in spy.seen[1:-1] if b > 1]
    assert len(inside) > 10 and all(s[1:] == x.stride()[1:] for s in inside)
    # the same attack on the same images in NCHW: the same answer up to the kernels' rounding
    spy.seen.clear()
    r2 = ta.TEAM(spy, norm=norm)(x.contiguous(memory_format=torch.contiguous_format).clone(), y)
    assert torch.equal(r.success, r2.success)
    assert torch.allclose(r.x_adv, r2.x_adv, atol=1e-4)


def test_counting_model_without_a_template_passes_inputs_through():
    spy = _Spy().eval()
    cm = CountingModel(spy)
    x = _channels_last_like(2, 1, 8, 8)
    cm(x)
    assert spy.seen[-1] == (2, x.stride()) and cm.forwards == 2
