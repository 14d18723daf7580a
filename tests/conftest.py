"""Test-wide settings: one torch thread per pytest worker (./run.sh test runs 2 workers on 2 cores)."""
import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("TEAMATTACK_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))


def train_digits_mlp(hidden: tuple[int, ...], steps: int):
    """A small ReLU MLP trained briefly (full-batch Adam) on sklearn's bundled 8x8 digits.

    Returns (model in eval mode with frozen parameters, held-out x (N,1,8,8), y).
    """
    from sklearn.datasets import load_digits
    from torch import nn

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    torch.manual_seed(0)
    layers, width = [nn.Flatten()], 64
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1000]), y[:1000]).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x[1500:], y[1500:]


# ---- devices: tests that take `device` run on the CPU and, where one is present, on CUDA
# (scripts/gpu-check.sh runs them with -m device) --------------------------------------------
import pytest  # noqa: E402
import torch  # noqa: E402

_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)
