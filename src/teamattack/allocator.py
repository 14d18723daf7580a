"""Keep freed memory in the process between an attack's passes (glibc malloc on Linux).

An attack allocates and frees activation buffers of a few MB on every forward and backward pass.
glibc serves blocks above its mmap threshold with fresh mappings and gives the top of its heap back
to the OS above its trim threshold, so each pass pays page faults for memory it just freed. Its
dynamic threshold sometimes adapts and sometimes does not: a frozen model
(`requires_grad_(False)` on the parameters, as in `teamattack bench`) made TEAM and DDN about 2x
slower on one CPU thread, most of it system time (docs/engine.md, "Speed"). Fixing both thresholds
ends it at the cost of keeping up to `trim_bytes` of freed memory in the process.

`teamattack`'s command line calls `keep_freed_memory()` at start; library users call it once
(`ta.keep_freed_memory()`). It changes nothing off glibc (macOS, Windows, musl) and on CUDA it only
concerns host memory.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters (malloc.h)
MMAP_BYTES = 32 << 20    # glibc's largest mmap threshold on 64-bit systems
TRIM_BYTES = 256 << 20

_done: bool | None = None


def keep_freed_memory(mmap_bytes: int = MMAP_BYTES, trim_bytes: int = TRIM_BYTES) -> bool:
    """Set glibc's mmap and trim thresholds (once per process); True where they were set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, int(mmap_bytes))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_bytes)))
    return _done
