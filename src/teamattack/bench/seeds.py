"""Seeds of the benchmark: per unit from its key, the targets from the run's seed."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def seed_everything(s: int) -> None:
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def random_targets(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Offset k in 1..m-1 per image (the target is (y + k) mod m), seeded: uniform over t != y."""
    g = torch.Generator().manual_seed(derive_seed(seed, "targets"))
    return torch.randint(1, num_classes, (len(y),), generator=g)
