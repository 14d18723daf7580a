"""teamattack.memory: glibc's malloc thresholds (tune_malloc) and the peak-memory probe."""
import resource
import sys

import pytest
import torch

from teamattack.memory import tune_malloc


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_without_page_faults():
    """A 4 MiB buffer allocated and freed 50 times: with the thresholds fixed, the pages stay in the
    process (a 128 KiB mmap threshold faulted every page of every buffer in: 51250 faults here)."""
    if not tune_malloc():
        pytest.skip("not glibc")
    for _ in range(5):   # the heap settles (in a pytest worker other tests' buffers shaped it)
        x = torch.empty(1 << 20).fill_(1.0)
        del x
    before = _minor_faults()
    for _ in range(50):
        x = torch.empty(1 << 20).fill_(1.0)
        del x
    assert _minor_faults() - before < 50 * 1024 // 4   # one buffer faulted in costs 1024 (4 KiB pages)
