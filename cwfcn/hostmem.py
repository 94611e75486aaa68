"""The host's heap under a long video: glibc's malloc kept from growing with its length.

Running a video file part by part (`evaluation.ClipScorer`) allocates and frees large
buffers at a steady rate: the decoded frames (in a thread), each part, its preprocessed
copy and the engine's outputs. glibc keeps what is freed in the heap it came from, and gives
each allocating thread a heap of its own ("arenas", up to 8 a core), so without these the
peak resident memory creeps up with the video's length (bench/memory.py --evaluate).
Elsewhere glibc's defaults stay: a fixed mmap threshold, which would also bound the heap,
makes every large buffer a fresh mapping and slows the training step by a fifth.
"""

from __future__ import annotations

import ctypes
import functools

MALLOC_ARENAS = 2  # the decode thread's and the main thread's
_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (it has `mallopt` and `malloc_trim`), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def limit_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Caps glibc's malloc arenas (`mallopt(M_ARENA_MAX)`) for this process; False where the
    C library is not glibc. A program's choice, made once at its start (`cli.main`)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_freed() -> bool:
    """Hands the heap's freed pages back to the system (`malloc_trim(0)`): the resident
    memory drops to what is in use. Cheap beside a part of a video (milliseconds);
    False where the C library is not glibc or nothing could be released."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
