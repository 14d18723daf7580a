"""Memory layout of the network's inputs: every pass in the layout of the caller's images.

Attacks keep their points flat or build them with arithmetic on x; the result is NCHW, while the
caller's x may be channels_last (the MNIST and digits readers' images are, strides (n, 1, w, 1)).
The network then runs other kernels: on CPU, max-pooling and convolutions in NCHW cost up to several
times more than on the same images in channels_last (docs/engine.md, "Speed"). `CountingModel`
lays every input out like the caller's x, so a pass inside an attack costs what a pass on x does.
"""
from __future__ import annotations

import math

import torch


def row_strides(x: torch.Tensor) -> tuple[int, ...] | None:
    """The strides of one row of x when its rows are dense in memory (the dimensions in any order,
    e.g. NCHW or channels_last), else None. Size-1 dimensions keep their stride: it is what tells a
    one-channel image's layout, and what the convolution kernels look at."""
    sizes, strides = x.shape[1:], x.stride()[1:]
    expect = 1
    for i in sorted(range(len(sizes)), key=lambda i: strides[i]):
        if sizes[i] == 1:
            continue
        if strides[i] != expect:
            return None
        expect *= sizes[i]
    return tuple(strides)


def laid_out_like(t: torch.Tensor, strides: tuple[int, ...] | None) -> torch.Tensor:
    """t (a batch of rows) with each row laid out by `strides` (`row_strides` of a template); t
    itself when it already is, when strides is None or when the row shapes differ. Differentiable."""
    if strides is None or t.dim() != len(strides) + 1:
        return t
    full = (math.prod(t.shape[1:]),) + strides
    if t.stride() == full or t.shape[0] == 0:
        return t
    return torch.empty_strided(tuple(t.shape), full, dtype=t.dtype, device=t.device).copy_(t)
