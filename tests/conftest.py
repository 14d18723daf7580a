"""Test-wide settings: one torch thread per pytest worker (./run.sh test runs 2 workers on 2 cores)."""
import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("TEAMATTACK_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))
