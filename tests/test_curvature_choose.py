"""`hessian="auto"` (curvature.sources.choose) picks by input size and a memory bound."""
from __future__ import annotations

import torch
from torch import nn

from teamattack.curvature.sources import choose, curvature_bytes
from teamattack.objectives import get_objective


def _smooth_net(shape):
    n = 1
    for s in shape:
        n *= s
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 8), nn.Tanh(), nn.Linear(8, 10)).eval()


def test_auto_never_forms_a_hessian_it_cannot_hold():
    obj = get_objective("T4")  # softmax: curvature is not zero
    for shape, expect in (((1, 8, 8), "exact"), ((3, 224, 224), "krylov")):
        model = _smooth_net(shape)
        x = torch.rand(4, *shape)
        y = model(x).argmax(1)
        src, why = choose(model, obj, x, y, mode="paper")
        assert src == expect, why
        need = curvature_bytes(model, x)
        assert (need["exact-dense"] <= 2e9) == (expect == "exact") and need["krylov"] < 1e8
    # the same small input under a bound too small for its dense Hessian: Hessian-free
    model, x = _smooth_net((1, 8, 8)), torch.rand(4, 1, 8, 8)
    src, why = choose(model, obj, x, model(x).argmax(1), mode="paper", memory_bytes=6e4)  # < its 4 B n^2 = 65536 bytes
    assert src == "krylov" and "bound" in why
