"""ReLU networks as affine layers and ReLUs: the one decomposition, and pre-activation bounds.

A ReLU network here is an `nn.Sequential` (possibly nested) `A_L o ReLU o ... o ReLU o A_1` whose
pieces between the `nn.ReLU` modules are affine. Two views of it are built on one split
(`relu_pieces`):

* `decompose`: the pieces as `AffineLayer`s holding their `nn.Linear` / `nn.Conv2d` op (the
  math paper's `W_j`, conv included), for the theorems' bounds (`experiments/theorems.py`);
* `relu_layers`: every piece as an explicit float64 `(W, b)` (any affine piece: Flatten, Linear,
  normalisation, Conv2d), for the exact solvers.

Bounds (`layer_bounds`): interval arithmetic, then for every later layer an LP over the triangle
relaxation of the earlier ones; over an L2 ball intersected with the box, also backward linear
bounds (`backward_bounds`, CROWN-style) closed by the ball-and-box support function.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

INF = float("inf")


class NotApplicable(ValueError):
    """The model is not of a kind whose optimum (or bound) this package computes."""


# ------------------------------------------------------------------------------------ the split
def leaves(model: nn.Module) -> list[nn.Module]:
    """The leaf modules of a (nested) nn.Sequential, in order."""
    if isinstance(model, nn.Sequential):
        return [m for child in model for m in leaves(child)]
    return [model]


def relu_pieces(model: nn.Module) -> list[list[nn.Module]]:
    """The leaf modules of a (nested) Sequential, split at every nn.ReLU: [piece_1, ..., piece_L]."""
    pieces: list[list[nn.Module]] = [[]]
    for m in leaves(model):
        if isinstance(m, nn.ReLU):
            pieces.append([])
        else:
            pieces[-1].append(m)
    return pieces


# ------------------------------------------------------------------------- the theorems' view
@dataclass
class AffineLayer:
    """One `W_j` of the net: its op, a flatten before it, and whether a ReLU follows."""

    op: nn.Module          # nn.Linear or nn.Conv2d
    flatten: bool          # flatten (start_dim 1) before op
    relu: bool             # ReLU after op
    in_shape: tuple = ()   # per-example shape entering op (after the flatten)
    out_shape: tuple = ()

    def linear(self, h: torch.Tensor) -> torch.Tensor:
        """The op without its bias (the linear part W h)."""
        if isinstance(self.op, nn.Linear):
            return F.linear(h, self.op.weight)
        return self.op._conv_forward(h, self.op.weight, None)


def decompose(model: nn.Module, input_shape: tuple[int, ...]) -> list[AffineLayer]:
    """Split a Sequential ReLU net of Flatten / Linear / Conv2d / ReLU into `AffineLayer`s.

    Each piece between ReLUs must be one Linear or zero-padded Conv2d, optionally preceded by
    Flatten(start_dim=1) (Identity / Dropout are skipped). Raises NotApplicable otherwise.
    """
    pieces = relu_pieces(model)
    layers: list[AffineLayer] = []
    for k, piece in enumerate(pieces):
        flatten, op = False, None
        for m in piece:
            if isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    raise NotApplicable("only Flatten(start_dim=1) is supported")
                if op is not None:
                    raise NotApplicable("a Flatten between two affine ops")
                flatten = True
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
                    raise NotApplicable("only zero-padded convolutions (their unrolled rows are exact)")
                if op is not None:
                    raise NotApplicable("two affine ops without a ReLU between them")
                op = m
            elif isinstance(m, (nn.Identity, nn.Dropout)):
                continue
            else:
                raise NotApplicable(f"{type(m).__name__} is outside the class (linear/conv + ReLU)")
        if op is None:
            if k < len(pieces) - 1:
                raise NotApplicable("a ReLU must follow a Linear / Conv2d layer")
            raise NotApplicable("the net must end with a Linear layer giving the logits")
        layers.append(AffineLayer(op, flatten, k < len(pieces) - 1))
    w = layers[0].op.weight
    h = torch.zeros((1, *input_shape), dtype=w.dtype, device=w.device)
    with torch.no_grad():
        for L in layers:
            h = h.flatten(1) if L.flatten else h
            L.in_shape = tuple(h.shape[1:])
            h = L.op(h)
            L.out_shape = tuple(h.shape[1:])
    return layers


def preactivations(layers: list[AffineLayer], x: torch.Tensor) -> list[torch.Tensor]:
    """Tmp_j for every layer (the last one is the logits)."""
    out, h = [], x
    for L in layers:
        h = h.flatten(1) if L.flatten else h
        z = L.op(h)
        out.append(z)
        h = z.clamp(min=0) if L.relu else z
    return out


def row_abs_sums(layer: AffineLayer) -> torch.Tensor:
    """Absolute row sums of the layer's unrolled matrix, one per output unit (exact, borders included)."""
    w = layer.op.weight
    if isinstance(layer.op, nn.Linear):
        return w.abs().sum(dim=1)
    ones = torch.ones((1, *layer.in_shape), dtype=w.dtype, device=w.device)
    return layer.op._conv_forward(ones, w.abs(), None)[0].flatten()


def inf_norm(layer: AffineLayer) -> float:
    """||W||_inf = max_i sum_k |w_ik| of the (unrolled) layer."""
    with torch.no_grad():
        return float(row_abs_sums(layer).max())


def unrolled(layer: AffineLayer) -> torch.Tensor:
    """The layer's linear part as an explicit (out, in) matrix (brute force; for checks and tests)."""
    w = layer.op.weight
    n = int(np.prod(layer.in_shape))
    basis = torch.eye(n, dtype=w.dtype, device=w.device).reshape(n, *layer.in_shape)
    with torch.no_grad():
        return layer.linear(basis).reshape(n, -1).T.contiguous()


# --------------------------------------------------------------------------- the solvers' view
def _to64(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double().eval()


@torch.no_grad()
def _affine_of(fn, in_shape: tuple[int, ...], device, dtype=torch.float64, check: int = 3,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) with fn(x) = W x.flatten() + b, by Jacobian at 0; raises NotApplicable if not affine."""
    n = int(np.prod(in_shape))
    zero = torch.zeros((1, *in_shape), device=device, dtype=dtype)
    b = fn(zero).reshape(-1)
    eye = torch.eye(n, device=device, dtype=dtype).reshape(n, *in_shape)
    cols = []
    for i in range(0, n, 1024):
        cols.append(fn(eye[i : i + 1024]).reshape(min(1024, n - i), -1) - b)
    W = torch.cat(cols).T  # (m, n)
    g = torch.Generator(device="cpu").manual_seed(seed)
    probe = torch.rand((check, *in_shape), generator=g, dtype=dtype).to(device)
    want = fn(probe).reshape(check, -1)
    got = probe.reshape(check, -1) @ W.T + b
    scale = want.abs().max().clamp_min(1.0)
    if not torch.allclose(got, want, atol=1e-6 * float(scale), rtol=1e-6):
        raise NotApplicable("the model (or a piece of it between ReLUs) is not affine")
    return W.cpu().numpy(), b.cpu().numpy()


def affine_form(model: nn.Module, x_shape: tuple[int, ...], device=None) -> tuple[np.ndarray, np.ndarray]:
    """W (m, n), b (m,) in float64 of a model that is affine in its input (e.g. Flatten + Linear).

    Found numerically (Jacobian at 0, checked at random points), so any affine preprocessing
    inside the model (normalisation) is included. Raises NotApplicable otherwise.
    """
    if any(isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.MaxPool2d, nn.Softmax)) for m in model.modules()):
        raise NotApplicable("the model has non-linear layers; it is not a linear-softmax model")
    device = device or next(model.parameters()).device
    return _affine_of(_to64(model), tuple(x_shape), device)


def relu_layers(model: nn.Module, x_shape: tuple[int, ...], device=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W1, b1), ..., (WL, bL)] in float64 of a ReLU network `A_L o ReLU o ... o ReLU o A_1`.

    The model must be an nn.Sequential (possibly nested, or a module wrapping exactly one) whose
    pieces between nn.ReLU modules are affine. Raises NotApplicable otherwise.
    """
    device = device or next(model.parameters()).device
    if not isinstance(model, nn.Sequential):
        kids = list(model.children())
        if len(kids) == 1 and isinstance(kids[0], nn.Sequential):
            probe = torch.rand((2, *x_shape), generator=torch.Generator().manual_seed(1)).to(device)
            with torch.no_grad():
                same = torch.allclose(model(probe), kids[0](probe), atol=1e-6)
            if same:
                return relu_layers(kids[0], x_shape, device)
        raise NotApplicable("exact solvers need an nn.Sequential of affine pieces and nn.ReLU")
    layers = []
    shape = tuple(x_shape)
    for piece in relu_pieces(_to64(model)):
        seq = nn.Sequential(*piece).to(device)
        W, b = _affine_of(seq, shape, device)
        with torch.no_grad():
            shape = tuple(seq(torch.zeros((1, *shape), device=device, dtype=torch.float64)).shape[1:])
        layers.append((W, b))
    return layers


def forward_np(layers, x: np.ndarray) -> list[np.ndarray]:
    """Pre-activations of every layer at x (float64; the last entry is the logits)."""
    out, a = [], x
    for i, (W, b) in enumerate(layers):
        z = W @ a + b
        out.append(z)
        a = np.maximum(z, 0.0)
    return out


# ------------------------------------------------------------------------------------ bounds
def interval(W, b, lo, hi):
    """Interval arithmetic: elementwise bounds of W x + b over lo <= x <= hi."""
    Wp, Wn = np.maximum(W, 0.0), np.minimum(W, 0.0)
    return Wp @ lo + Wn @ hi + b, Wp @ hi + Wn @ lo + b


class Rows:
    """Sparse constraint rows lb <= A v <= ub, collected as COO triplets."""

    def __init__(self) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lb: list[float] = []
        self.ub: list[float] = []

    def add(self, cols, vals, lb, ub) -> None:
        k = len(self.lb)
        cols = np.asarray(cols, dtype=np.int64)
        self.r.append(np.full(len(cols), k, dtype=np.int64))
        self.c.append(cols)
        self.v.append(np.asarray(vals, dtype=np.float64))
        self.lb.append(lb)
        self.ub.append(ub)

    def __len__(self) -> int:
        return len(self.lb)

    def csr(self, nvar: int) -> sp.csr_matrix:
        if not self.lb:
            return sp.csr_matrix((0, nvar))
        return sp.csr_matrix((np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
                             shape=(len(self.lb), nvar))

    def matrix(self, nvar: int):
        if not self.lb:
            return None
        return so.LinearConstraint(self.csr(nvar), np.array(self.lb), np.array(self.ub))


def layer_bounds(layers, lo_x, hi_x, lp: bool = True, ball: tuple[np.ndarray, float] | None = None):
    """Pre-activation bounds (l, u) of every hidden layer over the input box [lo_x, hi_x].

    Interval arithmetic, then, where lp, an LP over the triangle relaxation of the earlier layers.
    With `ball` = (x0, radius) the region is the box intersected with the L2 ball: layer 1 gets the
    exact bounds over it (`ball_box_support`) and every later layer the tighter of the LP and the
    backward linear bounds over it (`backward_bounds`). Where the radius is small against the box
    (an MNIST image at radius ~1 has its box almost [0, 1]^784), the ball is what makes the bounds
    tight enough for branch and bound.
    """
    bounds: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(len(layers) - 1):
        if k == 0:
            l, u = interval(*layers[0], lo_x, hi_x)
        else:
            pl, pu = bounds[-1]
            l, u = interval(*layers[k], np.maximum(pl, 0.0), np.maximum(pu, 0.0))
        if ball is not None:
            bl, bu = backward_bounds(layers[: k + 1], bounds, ball[0], lo_x, hi_x, ball[1])
            l, u = np.maximum(l, bl), np.minimum(u, bu)
        if k > 0 and lp:
            l, u = _lp_bounds(layers[: k + 1], bounds, lo_x, hi_x, l, u)
        bounds.append((l, u))
    return bounds


def ball_box_support(C: np.ndarray, lo: np.ndarray, hi: np.ndarray, radius: float, iters: int = 100) -> np.ndarray:
    """Per row c of C an upper bound of max c.d over {lo <= d <= hi, ||d|| <= radius} (lo <= 0 <= hi).

    The Lagrangian dual min_mu>=0 sum_j max_{d_j in [lo_j, hi_j]} (c_j d_j - mu d_j^2) + mu radius^2,
    whose inner maximiser is d_j = clip(c_j / (2 mu), lo_j, hi_j); mu is found by bisection on
    ||d(mu)|| = radius. Any mu gives a valid bound (weak duality), so the result is an upper bound
    whatever the bisection's accuracy, and equal to the maximum (strong duality) at the limit.
    """
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    corner = np.where(C > 0, hi, lo)  # the box's maximiser
    box = (C * corner).sum(1)
    if radius <= 0:
        return np.zeros(len(C))
    # tau = 1 / (2 mu): ||clip(tau c)|| grows with tau; bisect in log space for ||d|| = radius
    t_lo, t_hi = np.full(len(C), 1e-12), np.full(len(C), 1e12)
    for _ in range(iters):
        tau = np.sqrt(t_lo * t_hi)
        big = np.linalg.norm(np.clip(tau[:, None] * C, lo, hi), axis=1) > radius
        t_hi, t_lo = np.where(big, tau, t_hi), np.where(big, t_lo, tau)
    mu = 1.0 / (2.0 * t_hi)
    d = np.clip(C / (2.0 * mu[:, None]), lo, hi)
    dual = (C * d - mu[:, None] * d * d).sum(1) + mu * radius * radius
    inside = np.linalg.norm(corner, axis=1) <= radius  # the box corner is in the ball: the box decides
    return np.where(inside, box, np.minimum(box, dual))


def backward_bounds(layers, bounds, x0: np.ndarray, lo_x: np.ndarray, hi_x: np.ndarray,
                    radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the last layer's pre-activation over {lo_x <= x <= hi_x, ||x - x0|| <= radius}.

    Back-substitution through the ReLUs of the earlier layers (whose bounds are `bounds`) with one
    linear upper and one linear lower relaxation per unstable unit (the triangle's upper side; slope
    1 or 0 below, whichever is closer), as in CROWN / DeepPoly, then `ball_box_support` for the
    linear function of x that remains. Sound: every step only loosens.
    """
    W, b = layers[-1]
    out = []
    for sign in (1.0, -1.0):  # upper bounds of sign * z
        lam, const = sign * W, sign * b
        for j in range(len(layers) - 2, -1, -1):
            l, u = bounds[j]
            on, off = l >= 0, u <= 0
            unstable = ~on & ~off
            width = np.where(unstable, u - l, 1.0)
            up_slope = np.where(unstable, u / width, on.astype(float))
            up_icpt = np.where(unstable, -up_slope * l, 0.0)
            low_slope = np.where(unstable, (u > -l).astype(float), on.astype(float))
            pos = lam > 0
            const = const + (np.where(pos, up_icpt[None], 0.0) * lam).sum(1)
            lam = lam * np.where(pos, up_slope[None], low_slope[None])
            Wj, bj = layers[j]
            const, lam = const + lam @ bj, lam @ Wj
        out.append(lam @ x0 + const + ball_box_support(lam, lo_x - x0, hi_x - x0, radius) + 1e-9)
    return -out[1], out[0]


@dataclass
class Relaxation:
    """Variables [x, a_1, ..., a_K] (activation k at offs[k]..offs[k+1]) and the triangle rows.

    Stable-on units: a = W a_prev + b; unstable ones: a >= z and a <= u (z - l) / (u - l), the row
    of `a >= z` listed in `unstable` as (layer, unit, column of a, row); stable-off units: a = 0 by
    their column bounds.
    """

    nvar: int
    offs: np.ndarray
    rows: Rows
    col_lo: np.ndarray
    col_hi: np.ndarray
    unstable: list[tuple[int, int, int, int]]


def triangle_relaxation(layers_hidden, bounds, lo_x, hi_x) -> Relaxation:
    """The LP relaxation of the hidden layers over the box [lo_x, hi_x] with their bounds."""
    n = len(lo_x)
    sizes = [len(b[0]) for b in bounds]
    offs = np.cumsum([n] + sizes)
    rows = Rows()
    unstable: list[tuple[int, int, int, int]] = []
    var_lo = [lo_x] + [np.maximum(l, 0.0) for l, _ in bounds]
    var_hi = [hi_x] + [np.maximum(u, 0.0) for _, u in bounds]
    for k, ((W, bb), (l, u)) in enumerate(zip(layers_hidden, bounds)):
        prev = np.arange(0 if k == 0 else offs[k - 1], offs[k])
        for i in range(len(bb)):
            ai = int(offs[k] + i)
            if u[i] <= 0:
                continue  # a fixed at 0 by its bounds
            if l[i] >= 0:  # a = W a_prev + b
                rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], bb[i])
            else:  # a >= z ; a <= u (z - l) / (u - l)
                unstable.append((k, i, ai, len(rows)))
                rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], INF)
                s = u[i] / (u[i] - l[i])
                rows.add(np.r_[ai, prev], np.r_[1.0, -s * W[i]], -INF, s * (bb[i] - l[i]))
    return Relaxation(int(offs[-1]), offs, rows, np.concatenate(var_lo), np.concatenate(var_hi), unstable)


def _lp_bounds(layers, bounds, lo_x, hi_x, l0, u0):
    W, bb = layers[-1]
    rel = triangle_relaxation(layers[:-1], bounds, lo_x, hi_x)
    nvar, offs, rows, vlo, vhi = rel.nvar, rel.offs, rel.rows, rel.col_lo, rel.col_hi
    cons = rows.matrix(nvar)
    last = np.arange(offs[-2], offs[-1]) if len(offs) > 1 else np.arange(len(lo_x))
    l, u = l0.copy(), u0.copy()
    bnds = so.Bounds(vlo, vhi)
    for i in range(len(bb)):
        if l0[i] >= 0 or u0[i] <= 0:
            continue  # already stable: the interval bound decides the encoding
        cost = np.zeros(nvar)
        cost[last] = W[i]
        for sign in (1.0, -1.0):
            r = so.milp(sign * cost, integrality=np.zeros(nvar), bounds=bnds,
                        constraints=[cons] if cons is not None else None)
            if r.status == 0:
                v = sign * r.fun + bb[i]
                if sign > 0:
                    l[i] = max(l[i], v - 1e-7)
                else:
                    u[i] = min(u[i], v + 1e-7)
    return l, u
