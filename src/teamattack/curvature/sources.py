"""Curvature sources: each builds an `Expansion` of objective(model(x)) around a batch x.

| source  | H                                   | cost per example (backward-pass units)  |
|---------|-------------------------------------|------------------------------------------|
| none    | 0 (first-order model)               | 1 gradient                               |
| exact   | exact Hessian; low-rank A^T Ha A on | p gradients of the p smooth-layer inputs |
|         | nets split as features/smooth/head  | (p = 200 on the MNIST Table I net)       |
|         | (features piecewise linear), else   | n Hessian-vector products (dense n x n)  |
|         | dense via torch.func                |                                          |
| krylov  | rank-k Lanczos approximation        | k Hessian-vector products                |
| ggn     | J^T (d2f/dZ2) J, rank <= classes    | m gradients (m = number of classes)      |

Fact (documented in docs/engine.md): for ReLU / max-pool networks the Hessian of a logit is zero
almost everywhere, so logit objectives (T1-T3, margin) are first-order there; softmax objectives
(T4-T6) and smooth layers (the Table I nets' sigmoid) keep curvature.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jvp, vmap

from ..counting import CountingModel
from ..goal import Goal
from ..objectives import Objective
from .expansion import Expansion

ObjectiveFn = Callable[[torch.Tensor], torch.Tensor]


def _raw(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, CountingModel) else model


def _count(model: nn.Module, **kw: int) -> None:
    if isinstance(model, CountingModel):
        model.add(**kw)


def _labels(y: torch.Tensor, target: torch.Tensor | None, other: torch.Tensor | None):
    t = target if target is not None else y
    o = other if other is not None else y
    return t, o


def has_smooth_top(model: nn.Module) -> bool:
    """True when the model exposes `features` (piecewise linear), `smooth` and `head`."""
    m = _raw(model)
    return all(hasattr(m, a) for a in ("features", "smooth", "head"))


def first_order(model: nn.Module, obj: Objective, x: torch.Tensor, y, target=None, other=None) -> Expansion:
    """f and g only (H = 0)."""
    xr = x.detach().requires_grad_(True)
    logits = model(xr)
    if obj.margin and not obj.smooth_max and other is None:  # the active piece, from this forward pass
        other = obj.runner_up(logits, y, target)
    f = obj(logits, y, target, other)
    (g,) = torch.autograd.grad(f.sum(), xr)
    return Expansion(f.detach(), g.reshape(len(x), -1), source="none", logits=logits.detach())


def batched_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fn(x) (B, k) and its per-example input Jacobian (B, k, n): k backward passes, vectorised.

    Uses autograd's batched gradients (examples are independent in eval mode, so the gradient of
    output row j summed over the batch is every example's row j). torch.func's vjp + vmap gives
    the same numbers but kept ~200 MB per call alive on CPU here.
    """
    B = x.shape[0]
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = fn(xr)
        k = out.shape[1]
        eye = torch.eye(k, dtype=out.dtype, device=out.device).unsqueeze(1).expand(k, B, k)
        (J,) = torch.autograd.grad(out, xr, eye, is_grads_batched=True)
    return out.detach(), J.reshape(k, B, -1).permute(1, 0, 2).contiguous()


def _activation_numel(module: nn.Module, x1: torch.Tensor) -> int:
    """Number of activation elements one example creates in `module` (outputs of its leaves)."""
    total = [0]

    def hook(_m, _i, out):
        if torch.is_tensor(out):
            total[0] += out.numel()

    leaves = [m for m in module.modules() if not list(m.children())] or [module]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            module(x1)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], x1.numel())


def exact_lowrank(model: nn.Module, obj: Objective, x: torch.Tensor, y, target=None, other=None,
                  memory_bytes: float = 1e9) -> Expansion:
    """Exact Hessian of a net whose layers below `smooth` are piecewise linear: H = A^T Ha A.

    A = d a / d x is the Jacobian of the smooth layer's input a = features(x) (exact within the
    current linear region), Ha the Hessian of objective(head(smooth(a))) w.r.t. a. A takes one
    vectorised backward pass per row of a; examples are processed in chunks so that those passes'
    activations stay within `memory_bytes`.
    """
    m = _raw(model)
    B = x.shape[0]
    t, o = _labels(y, target, other)
    with torch.no_grad():
        p = m.features(x[:1]).shape[1]
    per_example = 3 * 4 * p * (_activation_numel(m.features, x[:1]) + x[0].numel())
    chunk = max(1, int(memory_bytes // per_example))
    parts = [batched_jacobian(m.features, x[i:i + chunk]) for i in range(0, B, chunk)]
    a = torch.cat([q[0] for q in parts])
    A = torch.cat([q[1] for q in parts])                        # (B, p, n)

    def top(ai, yi, ti, oi):
        z = m.head(m.smooth(ai.unsqueeze(0)))
        return obj(z, yi[None], ti[None] if target is not None else None, oi[None] if other is not None else None)[0]

    ga = vmap(grad(top))(a, y, t, o)                            # (B, p)
    Ha = vmap(hessian(top))(a, y, t, o)                         # (B, p, p)
    with torch.no_grad():
        f = obj(m.head(m.smooth(a)), y, target, other)
    g = torch.bmm(A.transpose(1, 2), ga.unsqueeze(-1)).squeeze(-1)
    _count(model, forwards=B, gradients=B * p)
    Ha = 0.5 * (Ha + Ha.transpose(1, 2))
    return Expansion(f, g, Q=A.transpose(1, 2), Hs=Ha, source="exact")


def hvp_bytes(model: nn.Module, obj: Objective | None, x1: torch.Tensor, y1: torch.Tensor | None = None,
              target1: torch.Tensor | None = None, other1: torch.Tensor | None = None) -> int:
    """Bytes the autograd graph saves for one example's objective and its input gradient (kept for
    a second derivative): what each Hessian-vector product of that example holds (the tangent of
    every saved tensor).

    Measured, not guessed: ``torch.autograd.graph.saved_tensors_hooks`` counts every tensor the
    forward pass and the ``create_graph`` backward save, each once, the model's
    parameters and buffers excluded (the HVPs share them). Device-agnostic (a probe on the
    1-image batch ``x1``). ``obj`` None: the log-sum-exp of the logits (a softmax objective's
    graph, to within a few logit-sized tensors of any other).
    """
    m = _raw(model)
    params = {k: v.detach() for k, v in m.named_parameters()}  # as exact_dense: no weight gradients
    buffers = dict(m.named_buffers())
    shared = {t.untyped_storage().data_ptr() for t in (*params.values(), *buffers.values())}
    counted: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in shared:  # each tensor once (by its data), its own bytes
            counted[t.data_ptr()] = max(counted.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    xr = x1[:1].detach().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z = functional_call(m, (params, buffers), (xr,))
        f = torch.logsumexp(z, dim=1) if obj is None else obj(z, y1[:1], _first(target1), _first(other1))
        if f.requires_grad:
            torch.autograd.grad(f.sum(), xr, create_graph=True)
    return sum(counted.values())


def _first(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t[:1]


# An HVP in flight holds more than the tangents of the saved graph (temporaries of each layer):
# the process's peak grows past the saved-graph count (measured in docs/engine.md), hence the factor
HVP_OVERHEAD = 2.0


def dense_chunks(per_hvp: float, B: int, n: int, memory_bytes: float) -> tuple[int, int]:
    """(examples, HVPs per example) that :func:`exact_dense` runs at once so that the B n x n result
    plus ``HVP_OVERHEAD * per_hvp`` bytes per HVP in flight stay within ``memory_bytes`` (at least 1 x 1)."""
    budget = memory_bytes - 4.0 * B * n * n
    at_once = max(1, int(budget // max(HVP_OVERHEAD * per_hvp, 1.0)))
    if at_once >= n:
        return max(1, min(B, at_once // n)), n
    return 1, at_once


def exact_dense(model: nn.Module, obj: Objective, x: torch.Tensor, y, target=None, other=None,
                memory_bytes: float = 2e9) -> Expansion:
    """Full per-example Hessian: n Hessian-vector products (forward-over-reverse, torch.func) per
    example, run as many at once as ``memory_bytes`` allows (:func:`dense_chunks`, with
    :func:`hvp_bytes` measured on the first example)."""
    m = _raw(model)
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = dict(m.named_buffers())
    B = x.shape[0]
    n = x[0].numel()
    t, o = _labels(y, target, other)
    shape = x.shape[1:]

    def f_single(xi, yi, ti, oi):
        z = functional_call(m, (params, buffers), (xi.reshape(1, *shape),))
        return obj(z, yi[None], ti[None] if target is not None else None, oi[None] if other is not None else None)[0]

    grad_f = grad(f_single)

    def hvps(xi, yi, ti, oi, V):  # rows H v for the tangents v of V (c, n)
        return vmap(lambda v: jvp(lambda z: grad_f(z, yi, ti, oi), (xi,), (v,))[1])(V)

    per_hvp = hvp_bytes(model, obj, x[:1], y[:1], target, other)
    e, c = dense_chunks(per_hvp, B, n, memory_bytes)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    Hs, gs, fs = [], [], []
    xf = x.detach().reshape(B, n)
    for i in range(0, B, e):
        sl = slice(i, i + e)
        rows = [vmap(hvps, in_dims=(0, 0, 0, 0, None))(xf[sl], y[sl], t[sl], o[sl], eye[j:j + c])
                for j in range(0, n, c)]
        Hs.append(torch.cat(rows, dim=1).transpose(1, 2))       # row k of the stack is H e_k = column k
        gs.append(vmap(grad_f)(xf[sl], y[sl], t[sl], o[sl]))
        with torch.no_grad():
            fs.append(obj(m(x[sl]), y[sl], t[sl] if target is not None else None, o[sl] if other is not None else None))
    H = torch.cat(Hs)
    H = 0.5 * (H + H.transpose(1, 2))
    _count(model, forwards=B, gradients=B, hvps=B * n)
    return Expansion(torch.cat(fs), torch.cat(gs), H=H, source="exact")


def logit_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z (B, m) and their input Jacobian J (B, m, n): m vectorised backward passes."""
    z, J = batched_jacobian(_raw(model), x)
    _count(model, forwards=x.shape[0], gradients=x.shape[0] * z.shape[1])
    return z, J


def gauss_newton(model: nn.Module, obj: Objective, x: torch.Tensor, y, target=None, other=None) -> Expansion:
    """Generalised Gauss-Newton J^T (d2 f / dZ2) J with J = dZ/dx (rank <= number of classes)."""
    t, o = _labels(y, target, other)
    z, J = logit_jacobian(model, x)

    def on_logits(zi, yi, ti, oi):
        return obj(zi.unsqueeze(0), yi[None], ti[None] if target is not None else None, oi[None] if other is not None else None)[0]

    z = z.detach()
    gz = vmap(grad(on_logits))(z, y, t, o)
    Hz = vmap(hessian(on_logits))(z, y, t, o)
    f = obj(z, y, target, other)
    g = torch.bmm(J.transpose(1, 2), gz.unsqueeze(-1)).squeeze(-1)
    Hz = 0.5 * (Hz + Hz.transpose(1, 2))
    return Expansion(f, g, Q=J.transpose(1, 2), Hs=Hz, source="ggn")


def hvp_operator(model: nn.Module, obj: Objective, x: torch.Tensor, y, target=None, other=None):
    """(f, g, hvp) with hvp(V (B,n)) -> (B,n) by double backward through one kept graph."""
    B = x.shape[0]
    xr = x.detach().requires_grad_(True)
    f = obj(model(xr), y, target, other)
    (g,) = torch.autograd.grad(f.sum(), xr, create_graph=True)
    g_flat = g.reshape(B, -1)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        _count(model, hvps=B)
        if not g_flat.requires_grad:  # the gradient does not depend on x (affine model): H = 0
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(g_flat, xr, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.reshape(B, -1).detach()

    return f.detach(), g_flat.detach(), hvp


def krylov(model: nn.Module, obj: Objective, x: torch.Tensor, y, target=None, other=None, k: int = 20) -> Expansion:
    """Hessian-free: k Lanczos steps from g with HVPs; H ~ V T V^T (rank k)."""
    from ..subproblems import lanczos

    f, g, hvp = hvp_operator(model, obj, x, y, target, other)
    k = min(k, g.shape[1])
    V, T = lanczos(g, hvp, k)
    return Expansion(f, g, Q=V, Hs=T, source="krylov")


def curvature_is_zero(model: nn.Module, obj: Objective, x: torch.Tensor, y, target=None, other=None,
                      rel_tol: float = 1e-6) -> bool:
    """Probe one HVP with a random direction: is H = 0 here (e.g. logits of a ReLU net)?"""
    f, g, hvp = hvp_operator(model, obj, x, y, target, other)
    gen = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(g.shape, generator=gen).to(g)
    hv = hvp(v)
    scale = g.norm(dim=1).clamp_min(1e-12) * max(1.0, math.sqrt(g.shape[1]))
    return bool((hv.norm(dim=1) <= rel_tol * scale).all())


SOURCES = ("none", "exact", "krylov", "ggn", "auto")


def choose(model: nn.Module, obj: Objective, x: torch.Tensor, y, target=None, mode: str = "paper",
           memory_bytes: float = 2e9, dense_max_n: int = 1024) -> tuple[str, str]:
    """What `hessian="auto"` picks for a TEAM mode, and why.

    The rule follows the engine benchmark (`teamattack bench --suite engine`, docs/engine.md):
    with one expansion (paper mode) exact curvature shortened the steps found; once the loop
    re-expands and every step is judged by the network (iterated, min-norm) first order was as good
    or better for every objective, at a fraction of the cost. Where the Hessian is zero, first
    order is exact anyway.
    """
    n = x[0].numel()
    probe = Goal(y, target)[:4]
    if not obj.softmax and curvature_is_zero(model, obj, x[:4], probe.y, probe.target):
        return "none", "the objective's Hessian is zero here (piecewise-linear logits): first order is exact"
    if mode != "paper":
        return "none", f"mode {mode!r} re-expands and judges every step by the network: curvature measured not to pay off"
    need = curvature_bytes(model, x, obj=obj, y=probe.y, target=probe.target)
    if has_smooth_top(model) and need["exact-lowrank"] <= memory_bytes:
        return "exact", "piecewise-linear features below a smooth layer: exact low-rank Hessian"
    if n <= dense_max_n and need["exact-dense"] <= memory_bytes:
        return "exact", f"n = {n}: the dense Hessian fits in memory"
    if n > dense_max_n:
        return "krylov", f"n = {n} > {dense_max_n}: n HVPs per example cost too much time; Hessian-free Lanczos"
    return "krylov", (f"n = {n}: the exact Hessian needs {need['exact-dense'] / 1e9:.3g} GB for this batch "
                      f"(bound {memory_bytes / 1e9:.3g} GB): Hessian-free Lanczos")


def curvature_bytes(model: nn.Module, x: torch.Tensor, k: int = 20, obj: Objective | None = None,
                    y: torch.Tensor | None = None, target: torch.Tensor | None = None) -> dict[str, float]:
    """Bytes each curvature source holds for the batch x (float32), without forming anything.

    exact-dense: the B n x n Hessians plus one Hessian-vector product's activations
    (``HVP_OVERHEAD`` x :func:`hvp_bytes`, measured on x[:1] with ``obj``, or a softmax probe without it): the least
    :func:`exact_dense` runs in (it runs more HVPs at once when ``memory_bytes`` allows);
    exact-lowrank: the Jacobian of the smooth layer's input (B p n) and its p x p Hessians (nets
    with a smooth top only, else inf); krylov: the B k n Lanczos basis; ggn / none: the gradients.
    """
    B, n = x.shape[0], x[0].numel()
    lowrank = math.inf
    if has_smooth_top(model):
        with torch.no_grad():
            p = _raw(model).features(x[:1]).shape[1]
        lowrank = 4.0 * B * p * (n + p)
    if obj is not None and y is None:
        with torch.no_grad():
            y = model(x[:1]).argmax(1)
    dense = 4.0 * B * n * n + HVP_OVERHEAD * hvp_bytes(model, obj, x[:1], y, target)
    return {"exact-dense": dense, "exact-lowrank": lowrank,
            "krylov": 4.0 * B * (k + 2) * n, "ggn": 4.0 * B * 2 * n, "none": 4.0 * B * n}


def expand(model: nn.Module, obj: Objective, x: torch.Tensor, y: torch.Tensor,
           target: torch.Tensor | None = None, other: torch.Tensor | None = None,
           source: str = "exact", k: int = 20, memory_bytes: float = 2e9) -> Expansion:
    """Second-order expansion of obj(model(x)) around x with the chosen curvature source.

    For margin objectives the competing class is fixed at the expansion point (`other`, default the
    current runner-up), so the expanded function is smooth.
    """
    if source not in ("none", "exact", "krylov", "ggn"):
        raise ValueError(f"unknown curvature source {source!r}; choose one of {SOURCES[:-1]}")
    if source == "none":
        return first_order(model, obj, x, y, target, other)
    if obj.margin and not obj.smooth_max and other is None:
        with torch.no_grad():  # through the (counting) model: this forward pass is work done
            other = obj.runner_up(model(x), y, target)
    if source == "exact":
        if has_smooth_top(model):
            return exact_lowrank(model, obj, x, y, target, other, memory_bytes / 2)
        return exact_dense(model, obj, x, y, target, other, memory_bytes)
    if source == "krylov":
        return krylov(model, obj, x, y, target, other, k)
    return gauss_newton(model, obj, x, y, target, other)
