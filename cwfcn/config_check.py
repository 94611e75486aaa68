"""Checks a config's values before any work, so a bad one fails with its key named.

ml_collections locks the configs, so unknown keys and wrong types already fail at the
command line; this catches values of the right type that make no sense (a zero
logging interval, a negative learning rate, an unknown data set). Keys that configs/default.py
leaves out (`data.mean`, `clock.schedule`) are checked when a config sets them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import ml_collections

from cwfcn import clockwork, model
from cwfcn.data import datasets


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


def _positive(x) -> bool:
    return x >= 1


def _non_negative(x) -> bool:
    return x >= 0


def _parses(parse: Callable[[object], object]) -> Callable[[object], bool]:
    """A test that a value is one `parse` takes (it raises no ValueError)."""
    def test(value) -> bool:
        try:
            parse(value)
        except ValueError:
            return False
        return True
    return test


# A band radius above this covers any frame of the paper's data sets whole (the paper's is
# 5 px); far above it, the disk alone takes gigabytes (100000: 40 GB).
MAX_BOUNDARY_RADIUS = 512
# Far above any real image side or batch (Cityscapes: 2048 px; the paper's batch: 1-20), far
# below what would fill the memory while the input workers hang (issue 17.8: a batch of 1e8
# 48 px images, 2.7 TB, hung train.py in grain's workers).
MAX_IMAGE_SIDE = 16384
MAX_BATCH_SIZE = 65536

# key -> (test, what is allowed). A key absent from the config is not checked.
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "seed": (lambda s: 0 <= s < 2**63, "an int in [0, 2**63) (JAX's keys take 64-bit seeds)"),
    "model.num_classes": (lambda c: 0 <= c <= 255,
                          "0 (the data set's, `datasets.net_classes`) or an int in [1, 255] "
                          "(255 is the ignore label)"),
    "model.dropout_rate": (lambda r: 0.0 <= r < 1.0, "in [0, 1)"),
    "model.arch": (lambda a: a in model.ARCHS, f"one of {model.ARCHS}"),
    # Not in configs/default.py, checked where a config sets it: an override of the data
    # set's mean (`datasets.mean_bgr_of`).
    "data.mean": (_parses(datasets.get),
                  f"one of {sorted(datasets.registry())} (the data set whose mean the net takes)"),
    "data.size": (lambda n: 1 <= n <= MAX_IMAGE_SIDE, f"an int in [1, {MAX_IMAGE_SIDE}] (pixels)"),
    "data.shift": (_non_negative, "an int >= 0 (pixels per frame)"),
    "data.num_frames": (lambda t: t >= 3, "an int >= 3 (frames per translated video: frames "
                        "0-1 are never scored, as in the reference, so 3 is the least with a "
                        "scored frame)"),
    "data.num_videos": (_positive, "an int >= 1"),
    "data.num_val": (_non_negative, "an int >= 0"),
    "data.workers": (_non_negative, "an int >= 0 (input worker processes; 0 = in-process)"),
    # Not in configs/default.py (evaluate.py takes --schedule), checked where a config sets it.
    "clock.schedule": (_parses(clockwork.parse_schedule), clockwork.SCHEDULE_HELP),
    "clock.boundary_radius": (lambda r: 1 <= r <= MAX_BOUNDARY_RADIUS,
                              f"an int in [1, {MAX_BOUNDARY_RADIUS}] (pixels)"),
    "optim.learning_rate": (lambda x: math.isfinite(x) and x > 0, "a finite number > 0"),
    "optim.momentum": (lambda x: 0.0 <= x < 1.0, "in [0, 1)"),
    "optim.weight_decay": (lambda x: math.isfinite(x) and x >= 0, "a finite number >= 0"),
    "train.steps": (_non_negative, "an int >= 0"),
    "train.batch_size": (lambda n: 1 <= n <= MAX_BATCH_SIZE, f"an int in [1, {MAX_BATCH_SIZE}]"),
    "train.log_every": (_positive, "an int >= 1 (steps)"),
    "train.checkpoint_every": (_positive, "an int >= 1 (steps)"),
    "train.keep_checkpoints": (_positive, "an int >= 1"),
    "train.eval_every": (_non_negative, "an int >= 0 (steps; 0 = never)"),
}


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first key of `RULES` whose value is not allowed."""
    for key, (test, allowed) in RULES.items():
        node, *path = key.split(".")
        value = config.get(node)
        for part in path:
            value = None if value is None else value.get(part)
        if value is not None and not test(value):
            raise ConfigError(f"config.{key} = {value!r} is invalid: it must be {allowed} "
                              f"(set --config.{key}=...)")
