"""ReLU networks as affine layers and ReLUs: the one decomposition, and pre-activation bounds.

A ReLU network here is an `nn.Sequential` (possibly nested) `A_L o ReLU o ... o ReLU o A_1` whose
pieces between the `nn.ReLU` modules are affine. Two views of it are built on one split
(`relu_pieces`):

* `decompose`: the pieces as `AffineLayer`s holding their `nn.Linear` / `nn.Conv2d` op (the
  math paper's `W_j`, conv included), for the theorems' bounds (`experiments/theorems.py`);
* `relu_layers`: every piece as an explicit float64 `(W, b)` (any affine piece: Flatten, Linear,
  normalisation, Conv2d), for the exact solvers.

Bounds (`layer_bounds`): interval arithmetic for layer 1 (optionally intersected with an L2 ball),
then for every later layer an LP over the triangle relaxation of the earlier ones.
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


def layer_bounds(layers, lo_x, hi_x, lp: bool = True, first=None):
    """Pre-activation bounds (l, u) of every hidden layer over the input box [lo_x, hi_x].

    Layer 1 by interval arithmetic (intersected with `first` = (l1, u1) when given, e.g. the
    bounds over an L2 ball), later layers by interval arithmetic then, where lp, an LP over the
    triangle relaxation of the earlier layers.
    """
    bounds: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(len(layers) - 1):
        if k == 0:
            l, u = interval(*layers[0], lo_x, hi_x)
            if first is not None:
                l, u = np.maximum(l, first[0]), np.minimum(u, first[1])
        else:
            pl, pu = bounds[-1]
            l, u = interval(*layers[k], np.maximum(pl, 0.0), np.maximum(pu, 0.0))
            if lp:
                l, u = _lp_bounds(layers[: k + 1], bounds, lo_x, hi_x, l, u)
        bounds.append((l, u))
    return bounds


def l2_ball_bounds(W, b, x0, radius):
    """Bounds of W x + b over the L2 ball ||x - x0|| <= radius."""
    z = W @ x0 + b
    r = radius * np.linalg.norm(W, axis=1)
    return z - r, z + r


def _relaxation(layers_hidden, bounds, lo_x, hi_x):
    """LP variables [x, a_1, ..., a_K] with the triangle relaxation of each ReLU."""
    n = len(lo_x)
    sizes = [len(b[0]) for b in bounds]
    offs = np.cumsum([n] + sizes)
    nvar = int(offs[-1])
    rows = Rows()
    var_lo = [lo_x] + [np.maximum(l, 0.0) for l, _ in bounds]
    var_hi = [hi_x] + [np.maximum(u, 0.0) for _, u in bounds]
    for k, ((W, bb), (l, u)) in enumerate(zip(layers_hidden, bounds)):
        prev = np.arange(0 if k == 0 else offs[k - 1], offs[k])
        for i in range(len(bb)):
            ai = offs[k] + i
            if u[i] <= 0:
                continue  # a fixed at 0 by its bounds
            if l[i] >= 0:  # a = W a_prev + b
                rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], bb[i])
            else:  # a >= z ; a <= u (z - l) / (u - l)
                rows.add(np.r_[ai, prev], np.r_[1.0, -W[i]], bb[i], INF)
                s = u[i] / (u[i] - l[i])
                rows.add(np.r_[ai, prev], np.r_[1.0, -s * W[i]], -INF, s * (bb[i] - l[i]))
    return nvar, offs, rows, np.concatenate(var_lo), np.concatenate(var_hi)


def _lp_bounds(layers, bounds, lo_x, hi_x, l0, u0):
    W, bb = layers[-1]
    nvar, offs, rows, vlo, vhi = _relaxation(layers[:-1], bounds, lo_x, hi_x)
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
