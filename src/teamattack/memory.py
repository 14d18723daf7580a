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


def limit_fragmentation(threshold: int = 128 * 1024) -> bool:
    """Ask glibc to mmap every allocation above `threshold` bytes (and so return it on free).

    Long CPU attack loops allocate thousands of short-lived multi-MB tensors; glibc's dynamic
    mmap threshold then serves them from the heap, whose fragmentation made the resident memory of
    a 100-image benchmark grow past 24 GB here. Fixing the threshold keeps it near the live data.
    Returns False where this is not glibc (nothing is changed). The CLI calls it at start, and
    every attack once per process (limit_fragmentation_once).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


_APPLIED: bool | None = None


def limit_fragmentation_once() -> bool:
    """`limit_fragmentation()` the first time it is asked for in this process (every attack's
    constructor asks). `TEAMATTACK_MALLOPT=0` in the environment turns it off."""
    global _APPLIED
    if _APPLIED is None:
        _APPLIED = os.environ.get("TEAMATTACK_MALLOPT", "1") != "0" and limit_fragmentation()
    return _APPLIED
