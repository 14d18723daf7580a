"""TEAM-L0's four L0 searches as one timed process (docs/engine.md, "Choices where the papers are silent").

Iterated (default) and paper mode, 64 digits-cnn and 4 cifar10-table1 test images, one thread.
Time the whole process under two checkouts (PYTHONPATH=<checkout>/src) in alternation to compare them:

    /usr/bin/time -v python scripts/l0_speed.py
"""
import torch, teamattack as ta
from teamattack import data, zoo
torch.set_num_threads(1)
m = zoo.load("digits-cnn"); x, y = data.load("digits", "test", n=64, seed=3)
ta.TEAM(m, norm="l0")(x, y); ta.TEAM(m, norm="l0", mode="paper", search="paper")(x, y)
m = zoo.load("cifar10-table1"); x, y = data.load("cifar10", "test", n=4, seed=3)
ta.TEAM(m, norm="l0")(x, y); ta.TEAM(m, norm="l0", mode="paper", search="paper")(x, y)
