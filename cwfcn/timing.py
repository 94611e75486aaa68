"""Timing that says when it cannot be trusted: repeated runs, and the CPU other processes took.

On a shared machine a timing is only as good as the machine's quiet while it ran. Each
timed call here runs `repeats` times back to back (the table reports the fastest, and the
spread), and counts the CPU seconds the rest of the machine used meanwhile: all busy CPU
time (`psutil.cpu_times`) less this process's own (`time.process_time`, every thread of
it, XLA's included). A row whose timed runs shared the machine with more than
`DISTURBED_CORES` cores of other work, on average, is flagged.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import psutil

# Other processes' average CPU use (in cores) above which a timing counts as disturbed:
# a fifth of a core slows a 2-core run by about a tenth.
DISTURBED_CORES = 0.2


def busy_cpu_seconds() -> float:
    """The machine's CPU seconds spent busy so far, every core and process (all but idle
    and I/O wait)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@dataclasses.dataclass(frozen=True)
class Runs:
    """The timings of one call repeated.

    Attributes:
      seconds: the wall time of each run, in order.
      others_cpu_s: the CPU seconds other processes used during the runs, in all.
    """

    seconds: tuple[float, ...]
    others_cpu_s: float


def time_runs(fn: Callable[[], Any], repeats: int) -> tuple[Any, Runs]:
    """Runs `fn()` `repeats` times (>= 1), waiting for its device work each time.

    Returns:
      The first run's result and the runs' timings.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    first, seconds, others = None, [], 0.0
    for run in range(repeats):
        busy, own, start = busy_cpu_seconds(), time.process_time(), time.perf_counter()
        result = jax.block_until_ready(fn())
        seconds.append(time.perf_counter() - start)
        others += max(0.0, busy_cpu_seconds() - busy - (time.process_time() - own))
        if run == 0:
            first = result
    return first, Runs(tuple(seconds), others)
