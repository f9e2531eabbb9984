"""Freed memory back to the OS: the query service's glibc heap.

The hot tier merges every live batch and catch-up with numpy (concatenate,
lexsort, masks), making and freeing arrays of a few hundred kB to a few MB
many times a minute. glibc serves those from mmap at first, but raises its
mmap threshold each time such a block is freed (up to 32 MiB), so soon they
come from the heap, whose free holes are reused only by blocks that fit and
are rarely returned. RSS then grew without bound while the arrays held stayed
the same: the edge box's query process, 222 -> 778 MB in 20 min (README, "The
edge in a box"); in isolation 283 -> 457 MB in 300 catch-ups with a 22 MB
tier, and 263 -> 334 MB with the threshold fixed at 64 KiB.

Setting M_MMAP_THRESHOLD fixes it (and turns off glibc's adjustment): every
block of 64 KiB or more is its own mapping, unmapped when freed. The price
is an mmap/munmap per large array; the query p99 of bench_query_memory's
"all" phase was 53.4 ms with it and 53.6 ms without.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc malloc.h
LARGE_BLOCK_BYTES = 64 * 1024


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Large allocations as their own mappings from now on; False where the C
    library has no ``mallopt`` (not glibc) or refuses it."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done: bool = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    if not done:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) refused; freed arrays may stay in the heap", threshold)
    return done
