"""Peak memory of a block of work: device memory on CUDA, sampled resident memory on CPU."""
from __future__ import annotations

import os
import threading

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: no sampling
        return 0


class PeakMemory:
    """`with PeakMemory(device) as pm: ...; pm.mb` = peak extra memory in MiB during the block.

    CUDA: torch.cuda.max_memory_allocated above the start. CPU: the process's resident set sampled
    every `interval` seconds, above the start (other threads' allocations count too).
    """

    def __init__(self, device: torch.device | str, interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._start = _rss_bytes()
        self._peak = self._start
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, _rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.mb = max(peak - self._start, 0) / 2**20


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters (malloc.h)
MMAP_BYTES = 32 << 20    # glibc's largest mmap threshold on 64-bit systems
TRIM_BYTES = 256 << 20


def tune_malloc(mmap_bytes: int = MMAP_BYTES, trim_bytes: int = TRIM_BYTES) -> bool:
    """Fix glibc's mmap and trim thresholds: freed attack buffers stay in the process for reuse.

    An attack allocates and frees buffers of a few MB on every pass. Where glibc serves them with
    fresh mappings (above its mmap threshold) or hands the top of its heap back to the OS (above its
    trim threshold), every pass pays page faults for memory it has just freed. The fixed thresholds
    end that at the cost of up to `trim_bytes` of freed memory kept (docs/engine.md, "Speed": 2x
    wall time on a frozen model; an earlier 128 KiB mmap threshold, chosen while a memory leak
    grew the heap, caused it). Returns False where this is not glibc (nothing is changed).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_bytes))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_bytes)))


_APPLIED: bool | None = None


def tune_malloc_once() -> bool:
    """`tune_malloc()` the first time it is asked for in this process (the CLI at start and every
    attack's constructor ask). `TEAMATTACK_MALLOPT=0` in the environment turns it off."""
    global _APPLIED
    if _APPLIED is None:
        _APPLIED = os.environ.get("TEAMATTACK_MALLOPT", "1") != "0" and tune_malloc()
    return _APPLIED
