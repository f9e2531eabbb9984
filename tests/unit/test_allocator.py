"""map_large_blocks: freed large arrays go back to the OS even after glibc has
raised its mmap threshold (the query service's growth, services/allocator.py).
Each case runs in a fresh interpreter: the setting is process-wide."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PATTERN = """
import sys
import numpy as np
import psutil
if sys.argv[1] == "on":
    from citylake.services.allocator import map_large_blocks
    assert map_large_blocks()
big = np.ones(4 << 20, dtype=np.uint8)
del big  # glibc raises its mmap threshold to 4 MiB here
blocks, keep = [], []
for _ in range(100):
    blocks.append(np.ones(1 << 20, dtype=np.uint8))  # 1 MiB arrays, as the hot tier's merges
    keep.append(np.ones(4096, dtype=np.uint8))  # small, long-lived, between them
rss = psutil.Process().memory_info().rss
del blocks
print((rss - psutil.Process().memory_info().rss) // 2**20)
"""


def returned_mib(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, check=True, timeout=60
    )
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not glibc: nothing to set")
def test_freed_large_arrays_leave_the_process_only_with_the_threshold_fixed() -> None:
    assert returned_mib("off") < 20  # glibc's default: the holes stay in the heap
    assert returned_mib("on") >= 90
