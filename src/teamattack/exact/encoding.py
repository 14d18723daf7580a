"""The mixed-integer encoding of "x is in the box and the ReLU net's decision is adversarial".

Shared by the Linf MILP (`milp.py`) and the L2 MIQP (`miqp.py`), which add their distance
variable and objective. Variables: x (n) | a_1 .. a_K (post-activations) | delta (one binary per
unstable unit) | s (one binary per class that can win, untargeted). Stable units are fixed (0 or
linear); unstable ones get the big-M encoding with their pre-activation bounds (l, u):
`a >= z, a <= z - l (1 - delta), a <= u delta`. Untargeted success is one disjunction
(`sum s_j = 1`, `z_j - z_y >= -M_j (1 - s_j)`) over the classes that can beat y within the box;
targeted success is `z_t >= z_j` for every j.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .relu import INF, Rows, forward_np, interval


@dataclass
class Encoding:
    """Solver-neutral mixed-integer rows lb <= A v <= ub with column bounds and integrality."""

    layers: list
    bounds: list
    n: int
    rows: Rows
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray          # bool per column
    act_offs: list[int]          # first column of a_k
    unstable: list[np.ndarray]   # unstable unit indices per hidden layer
    d_offs: list[int]            # first column of layer k's binaries
    s_off: int | None = None     # first column of the class binaries (untargeted)
    classes: list[int] = field(default_factory=list)
    y: int = 0
    target: int | None = None

    @property
    def nvar(self) -> int:
        return len(self.lb)

    def point(self, x: np.ndarray) -> np.ndarray:
        """The full variable vector of input x (an incumbent): activations, binaries, class choice."""
        v = np.zeros(self.nvar)
        v[: self.n] = x
        zs = forward_np(self.layers, x)
        for k, (z, us) in enumerate(zip(zs[:-1], self.unstable)):
            v[self.act_offs[k]: self.act_offs[k] + len(z)] = np.maximum(z, 0.0)
            v[self.d_offs[k]: self.d_offs[k] + len(us)] = (z[us] > 0).astype(float)
        if self.s_off is not None and self.classes:
            logits = zs[-1]
            j = max(range(len(self.classes)), key=lambda t: logits[self.classes[t]])
            v[self.s_off + j] = 1.0
        return np.clip(v, self.lb, self.ub)

    def binaries(self) -> int:
        return int(self.integer.sum())


def encode(layers, bounds, x0: np.ndarray, lo_x: np.ndarray, hi_x: np.ndarray, y: int,
           target: int | None) -> Encoding | None:
    """The encoding over the input box [lo_x, hi_x] with hidden bounds `bounds`; None if no
    class can reach the goal within the box (then nothing adversarial is there)."""
    n = len(x0)
    hidden = layers[:-1]
    sizes = [len(l) for l, _ in bounds]
    act_offs = [n]
    for s_ in sizes:
        act_offs.append(act_offs[-1] + s_)
    unstable = [np.where((l < 0) & (u > 0))[0] for l, u in bounds]
    d_offs = [act_offs[-1]]
    for us in unstable:
        d_offs.append(d_offs[-1] + len(us))
    WL, bL = layers[-1]
    m = len(bL)
    a_lo = np.maximum(bounds[-1][0], 0.0) if hidden else lo_x
    a_hi = np.maximum(bounds[-1][1], 0.0) if hidden else hi_x
    last = np.arange(act_offs[-2], act_offs[-1]) if hidden else np.arange(n)
    rows = Rows()
    for k, ((W, bb), (l, u)) in enumerate(zip(hidden, bounds)):
        prev = np.arange(n) if k == 0 else np.arange(act_offs[k - 1], act_offs[k])
        pos = {int(j): d_offs[k] + t for t, j in enumerate(unstable[k])}
        for i in range(len(bb)):
            ai = act_offs[k] + i
            if u[i] <= 0:
                continue
            if l[i] >= 0:
                rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], bb[i])
                continue
            di = pos[i]
            rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], INF)  # a >= z
            rows.add(np.r_[ai, prev, di], np.r_[1.0, -W[i], -l[i]], -INF, bb[i] - l[i])  # a <= z - l(1-d)
            rows.add([ai, di], [1.0, -u[i]], -INF, 0.0)  # a <= u d
    nvar = d_offs[-1]
    s_off, classes = None, []
    if target is None:
        cand = []
        for j in range(m):
            if j == y:
                continue
            cvec = WL[j] - WL[y]
            dl, du = interval(cvec[None], np.array([bL[j] - bL[y]]), a_lo, a_hi)
            if du[0] >= 0:
                cand.append((j, cvec, float(dl[0])))
        if not cand:
            return None
        s_off = nvar
        nvar += len(cand)
        for t_, (j, cvec, dl) in enumerate(cand):
            M = max(0.0, -dl) + 1e-6
            rows.add(np.r_[last, s_off + t_], np.r_[cvec, -M], -(bL[j] - bL[y]) - M, INF)
        rows.add(np.arange(s_off, nvar), np.ones(len(cand)), 1.0, INF)
        classes = [j for j, _, _ in cand]
    else:
        for j in range(m):
            if j == target:
                continue
            cvec = WL[target] - WL[j]
            dl, du = interval(cvec[None], np.array([bL[target] - bL[j]]), a_lo, a_hi)
            if du[0] < 0:
                return None
            rows.add(last, cvec, -(bL[target] - bL[j]), INF)
    lb = np.concatenate([lo_x] + [np.maximum(l, 0.0) for l, _ in bounds] + [np.zeros(nvar - d_offs[0])])
    ub = np.concatenate([hi_x] + [np.maximum(u, 0.0) for _, u in bounds] + [np.ones(nvar - d_offs[0])])
    integer = np.zeros(nvar, dtype=bool)
    integer[d_offs[0]:] = True
    return Encoding(layers, bounds, n, rows, lb, ub, integer, act_offs, unstable, d_offs, s_off,
                    classes, y, target)
