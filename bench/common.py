"""What every benchmark shares: timing, the device line, and the JSON / table output.

Timings are wall-clock, best of several rounds; the rounds go round-robin over
everything compared, so that drift in a shared machine's load hits all alike, and
results are reported as ratios measured in one run. Each timing also records the
process CPU time, which a busy machine inflates far less than wall time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from tqdm import tqdm


def load_config(path: str) -> ml_collections.ConfigDict:
    """The config of a config file (`get_config()` of configs/*.py), as --config gives it."""
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall s, process CPU s) of `fn()`, waiting for its device work to finish."""
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - wall, time.process_time() - cpu


def round_robin(fns: dict[str, Callable[[], Any]], repeats: int,
                desc: str = "timing rounds") -> dict[str, dict[str, float]]:
    """Times each function `repeats` times, round-robin, after one untimed call each.

    Returns:
      name -> {"first_s": the untimed call (compiles), "wall_s": best wall time,
      "cpu_s": the CPU time of that best round}.
    """
    out = {name: {"first_s": timed(fn)[0], "wall_s": float("inf"), "cpu_s": 0.0}
           for name, fn in fns.items()}
    for _ in tqdm(range(repeats), desc=desc, file=sys.stderr):
        for name, fn in fns.items():
            wall, cpu = timed(fn)
            if wall < out[name]["wall_s"]:
                out[name].update(wall_s=wall, cpu_s=cpu)
    return out


class Stepping:
    """A training step that donates its state, fed its own outputs: each call runs
    `step(*state, *rest) -> (*new state, loss)`, keeps the new state, returns the loss."""

    def __init__(self, step: Callable, state: tuple, rest: tuple):
        self.step, self.state, self.rest = step, state, rest

    def __call__(self):
        out = self.step(*self.state, *self.rest)
        self.state = out[:2]
        return out[2]


def device_info() -> dict[str, Any]:
    """Which machine ran the benchmark: backend, device kind and count, host, versions."""
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}: {device.device_kind}",
        "devices": jax.device_count(),
        "host": platform.node(),
        "cpu_count": _cpu_count(),
        "jax": jax.__version__,
    }


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def emit(result: dict, table: str, json_path: str | None) -> None:
    """Prints the table and the JSON; also writes the JSON to `json_path` if given."""
    print(table)
    text = json.dumps(result, indent=1)
    print(text)
    if json_path:
        with open(json_path, "w") as f:
            f.write(text + "\n")
