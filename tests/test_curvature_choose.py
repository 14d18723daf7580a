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


# ---------------------------------------------------------------------------------------------
# the dense exact Hessian's memory: a measured per-HVP graph, HVPs chunked under memory_bytes
# ---------------------------------------------------------------------------------------------
def _conv_net(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, channels, 3), nn.Tanh(), nn.Flatten(), nn.Linear(channels * 36, 10)).eval()


def test_hvp_bytes_is_the_hand_count_of_the_saved_graph():
    """Conv(1->c, 3x3) - tanh - linear(10), cross-entropy (T4), one 8x8 image. The forward pass
    keeps the conv's input (n = 64 floats), the tanh output (a = 36 c), the log-softmax output (10)
    and the label (one int64); the backward kept for a second derivative keeps the logits'
    gradient (10), the gradient reaching the tanh (a) and tanh's backward output (a). Weights
    (shared by every HVP) are not counted, each tensor once (log-softmax's output is saved thrice)."""
    from teamattack.curvature.sources import hvp_bytes

    obj = get_objective("T4")
    x = torch.rand(3, 1, 8, 8)
    for c in (4, 8):
        model = _conv_net(c)
        y = model(x).argmax(1)
        a = 36 * c
        assert hvp_bytes(model, obj, x[:1], y[:1]) == 4 * (64 + 3 * a + 2 * 10) + 8
        # the batch the probe is cut from does not count, only its first image
        assert hvp_bytes(model, obj, x, y) == hvp_bytes(model, obj, x[:1].clone(), y[:1].clone())


def test_dense_hessian_chunked_equals_unchunked_and_follows_the_bound():
    from teamattack.curvature.sources import HVP_OVERHEAD, dense_chunks, exact_dense, hvp_bytes

    model, x = _conv_net(4), torch.rand(3, 1, 8, 8)
    y = model(x).argmax(1)
    B, n = 3, 64  # (2, n): two examples, then the third
    for name in ("T4", "T1"):  # softmax, and a logit objective (tanh: curvature not zero)
        obj = get_objective(name)
        per = hvp_bytes(model, obj, x[:1], y[:1])
        full = exact_dense(model, obj, x, y, memory_bytes=1e12)  # every HVP of every example at once
        assert dense_chunks(per, B, n, 1e12) == (B, n)
        for k, plan in ((7.5, (1, 7)), (2.2 * n, (2, n)), (-1e6, (1, 1))):  # HVPs that fit beside H
            mem = 4 * B * n * n + k * HVP_OVERHEAD * per
            assert dense_chunks(per, B, n, mem) == plan
            part = exact_dense(model, obj, x, y, memory_bytes=mem)
            # the same numbers up to float32 rounding of differently batched products (~2e-7 seen)
            torch.testing.assert_close(part.H, full.H, rtol=0, atol=1e-5 * float(full.H.abs().max()))
            torch.testing.assert_close(part.g, full.g)
        assert float(full.H.abs().max()) > 1e-4


def test_choose_uses_the_measured_bound():
    from teamattack.curvature.sources import HVP_OVERHEAD, hvp_bytes

    obj = get_objective("T4")
    model, x = _conv_net(4), torch.rand(4, 1, 8, 8)
    y = model(x).argmax(1)
    need = curvature_bytes(model, x, obj=obj, y=y[:4])
    assert need["exact-dense"] == 4 * 4 * 64 * 64 + HVP_OVERHEAD * hvp_bytes(model, obj, x[:1], y[:1])
    for slack, expect in ((1, "exact"), (-1, "krylov")):
        src, why = choose(model, obj, x, y, mode="paper", memory_bytes=need["exact-dense"] + slack)
        assert src == expect, why
