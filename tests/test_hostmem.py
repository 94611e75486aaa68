"""glibc's heap: the arena cap and the release of freed pages (bench/memory.py measures the
effect on a long video)."""

import platform
from pathlib import Path

import numpy as np
import pytest

from cwfcn import hostmem

GLIBC = platform.libc_ver()[0] == "glibc"


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def test_the_arena_cap_is_set_where_the_c_library_is_glibc():
    assert hostmem.limit_arenas(hostmem.MALLOC_ARENAS) is GLIBC


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_pages_in_the_middle_of_the_heap_go_back_to_the_system():
    # 600 blocks of 100 KB (below malloc's mmap threshold: in the heap), the last one kept so
    # that the freed space is not at the heap's top, where free() alone would give it back.
    blocks = [np.ones(100 * 1024, np.uint8) for _ in range(600)]
    pin = blocks.pop()
    blocks.clear()
    kept = _resident_mb()
    assert hostmem.release_freed()
    assert kept - _resident_mb() > 30  # of the ~59 MB freed
    del pin
