"""Device-parametrised checks (cpu, and cuda where present: scripts/gpu-check.sh): the engine and
the bench follow the model's and the input's device; a mismatch is a clear error."""
from __future__ import annotations

import pytest
import torch
from conftest import train_digits_mlp

from teamattack.attacks import TEAM
from teamattack.bench import harness
from teamattack.bench.suites import get_suite


@pytest.fixture(scope="module")
def digits():
    return train_digits_mlp((16,), steps=40)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if "seconds" not in k and "peak_memory" not in k}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_team_runs_on_the_inputs_device(digits, device):
    model, x, y = digits
    model = model.to(device)
    x, y = x[:6].to(device), y[:6].to(device)
    for norm in ("l2", "linf"):
        res = TEAM(model, norm=norm, mode="min-norm")(x, y)
        assert res.x_adv.device.type == device.type and bool(res.success.all())
        assert (model(res.x_adv).argmax(1) != y).all()


def test_bench_on_device_matches_cpu(digits, device):
    """The same records on the device as on the CPU (success identical, distances to 1e-4)."""
    model, x, y = digits
    specs, _ = get_suite("paper-table5", ["team-T1-paper"])
    xs, ys, _ = harness.select_images(model, x, y, 8, seed=0)
    ref = harness.run_bench(model, xs, ys, specs, seed=0, batch_size=4, progress=False).runs[0]
    out = harness.run_bench(model.to(device), xs.to(device), ys.to(device), specs, seed=0, batch_size=4,
                            progress=False).runs[0]
    model.cpu()
    assert out["asr"] == ref["asr"] and out["grad_evals_per_image"] == ref["grad_evals_per_image"]
    assert out["l2"]["median"] == pytest.approx(ref["l2"]["median"], rel=1e-4)


def test_device_mismatch_is_a_clear_error(digits):
    model, x, y = digits
    with pytest.raises(ValueError, match="labels"):
        harness.run_bench(model, x[:4], y[:4].to("meta"), get_suite("paper-table5", ["team-T1-paper"])[0],
                          progress=False)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="model is on"):
            harness.run_bench(model, x[:4].cuda(), y[:4].cuda(), get_suite("paper-table5", ["team-T1-paper"])[0],
                              progress=False)
