"""Repeated timing, and the CPU other processes take meanwhile (`cwfcn.timing`)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cwfcn import timing


def test_runs_repeat_and_return_the_first_result():
    calls = []
    first, runs = timing.time_runs(lambda: calls.append(len(calls)) or len(calls), 3)
    assert calls == [0, 1, 2] and first == 1
    assert len(runs.seconds) == 3 and all(s >= 0 for s in runs.seconds)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        timing.time_runs(lambda: None, 0)


def test_another_process_spinning_meanwhile_is_counted():
    """A child burns a core while the timed call sleeps: its CPU is the others'."""
    spin = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # the child is up and spinning
        _, runs = timing.time_runs(lambda: time.sleep(0.8), 1)
    finally:
        child.wait()
    # The sleep takes no CPU of this process; the child took about 0.8 s of a core.
    assert runs.others_cpu_s >= 0.4
    assert runs.others_cpu_s / sum(runs.seconds) > timing.DISTURBED_CORES
