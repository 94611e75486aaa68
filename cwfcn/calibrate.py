"""Calibrating the adaptive clock's threshold to a target firing rate.

The paper tuned theta on the whole evaluation set so that the full net ran on 50% of the
frames (Table 6; the reference notebooks hard-code the thresholds found: 0.2545 on
YouTube-Objects, 0.47 on Cityscapes). Here theta is chosen so that the last stage fires
on about a fraction `rate` of the frames, with no labels: compute the clock's argmax maps
once (`clock_maps`), replay the adaptive clock on them for every threshold that can change
its decisions (`simulate`), and keep the best: over one stream (`theta_for_rate`, e.g. the
first frames of a live video) or over every clip of a data set, counting the frames its
protocol counts (`theta_for_rate_over`, `clip_runs`).

The replay matches `clockwork.run(net, frames, f"adaptive:{theta}")` exactly: frame 0
fires; frame t fires when the float32 fraction of positions whose class differs from the
map at the last firing is >= float32(theta); the reference map updates on firing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cwfcn import clockwork, model
from cwfcn.data import protocol


def _frame_map(graphdef, staging: clockwork.Staging, params, frame: jax.Array) -> jax.Array:
    """`frame [H, W, 3] -> int32 [h, w]`: the clock scores' class argmax, as the engine."""
    net = nnx.merge(graphdef, params)
    x = frame[None]  # one frame at a time, the shapes the engine computes with
    outs: list = []
    for k, stage in enumerate(staging.stages[:-1]):
        outs.append(stage(net, x if k == 0 else outs[k - 1]))
    # clock_scores may read only the stages before the last: None stands in for the last.
    scores = staging.clock_scores((*outs, None))
    return clockwork.clock_classes(scores)[0]


@functools.partial(jax.jit, static_argnames=("graphdef", "staging"))
def _maps(params, frames, *, graphdef, staging):
    return jax.lax.map(functools.partial(_frame_map, graphdef, staging, params), frames)


def clock_maps(net: nnx.Module, frames: jax.Array | np.ndarray) -> np.ndarray:
    """The adaptive clock's class maps of each frame (FCN-8s: uncropped score_pool4).

    Runs only the stages before the last; compiled once per (net structure, frame shape).

    Args:
      net: a staged network (its class has a `clockwork.Staging`), e.g. `model.FCN8s`.
      frames: float32 `[N, H, W, 3]`, preprocessed (`model.preprocess`).

    Returns:
      int32 `[N, h, w]`: per frame, the argmax over classes of the clock scores.

    Raises:
      ValueError: if the net has no staging or frames are not finite `[N, H, W, 3]` floats
        (`clockwork.check_frames`).
    """
    staging = clockwork.staging_of(net)
    frames = jnp.asarray(frames)
    clockwork.check_frames(frames, 4, "frames")
    graphdef, params = nnx.split(net)
    return np.asarray(_maps(params, frames, graphdef=graphdef, staging=staging), np.int32)


def _check_maps(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim < 2 or maps.shape[0] < 1 or maps[0].size == 0:
        raise ValueError(f"maps must be [N, h, w] with N >= 1 and h * w > 0, got {maps.shape}")
    return maps


def _change(a: np.ndarray, b: np.ndarray) -> np.float32:
    """The engine's change fraction: mean(a != b) in float32 (exact count / size)."""
    return np.float32(np.count_nonzero(a != b)) / np.float32(a.size)


def simulate(maps: np.ndarray, theta: float) -> np.ndarray:
    """Replays the adaptive clock on precomputed maps.

    Args:
      maps: int `[N, h, w]` (any trailing shape), e.g. from `clock_maps`.
      theta: the threshold, as in `"adaptive:theta"`.

    Returns:
      bool `[N]`: whether the gated (last) stage fires on each frame; equal to
      `clockwork.run(net, frames, f"adaptive:{theta}").fired[:, -1]`.
    """
    maps = _check_maps(maps)
    theta32 = np.float32(theta)
    fired = np.zeros(len(maps), bool)
    fired[0] = True
    ref = maps[0]
    for t in range(1, len(maps)):
        if _change(maps[t], ref) >= theta32:
            fired[t] = True
            ref = maps[t]
    return fired


def _pairwise_changes(maps: np.ndarray) -> np.ndarray:
    """float32 `[N, N]`: the change fraction between every two frames' maps."""
    flat = maps.reshape(len(maps), -1)
    num_frames = len(flat)
    dist = np.zeros((num_frames, num_frames), np.float32)
    for i in range(num_frames):
        counts = np.count_nonzero(flat[i + 1 :] != flat[i], axis=1)
        dist[i, i + 1 :] = counts.astype(np.float32) / np.float32(flat.shape[1])
    return dist + dist.T


class ClockRun(NamedTuple):
    """One clip's clock maps and which of its firings count.

    Attributes:
      maps: int `[T, h, w]`, the clock's class maps of each frame (`clock_maps`).
      counted: indices of the frames whose firings count.
      denominator: the frames the rate divides by (`protocol.Clip.denominator`).
    """

    maps: np.ndarray
    counted: tuple[int, ...]
    denominator: int


def clip_runs(net: nnx.Module, clips: Iterable[protocol.Clip | protocol.StreamClip],
              mean_bgr: Sequence[float]) -> list[ClockRun]:
    """The clock maps of every clip (a data set's adaptive protocol, `Source.clips`); a
    `StreamClip` is read chunk by chunk (its maps are what is kept: 1/16 of the frames'
    pixels), every frame counted."""
    runs = []
    for clip in clips:
        if isinstance(clip, protocol.Clip):
            runs.append(ClockRun(clock_maps(net, model.preprocess(clip.frames, mean_bgr)),
                                 clip.counted, clip.denominator))
            continue
        maps = np.concatenate([clock_maps(net, model.preprocess(part, mean_bgr))[:length]
                               for part, length in clip.chunks(clockwork.DEFAULT_CHUNK)])
        runs.append(ClockRun(maps, tuple(range(len(maps))), len(maps)))
    return runs


def _fired_counts(dist: np.ndarray, counted: tuple[int, ...], thetas: np.ndarray) -> np.ndarray:
    """For each threshold, how many of the `counted` frames the replay fires on."""
    mask = np.zeros(len(dist), bool)
    mask[list(counted)] = True
    out = np.zeros(len(thetas), np.int64)
    for i, theta in enumerate(thetas):
        ref, fires = 0, int(mask[0])
        for t in range(1, len(dist)):
            if dist[ref, t] >= theta:
                ref, fires = t, fires + int(mask[t])
        out[i] = fires
    return out


def theta_for_rate_over(runs: Sequence[ClockRun], rate: float) -> float:
    """The threshold whose replayed firing rate over all `runs` is closest to `rate`.

    The rate is (firings on the counted frames, summed over runs) / (the denominators,
    summed): the fraction of frames fired as the data set's reference counts it. A run's
    decisions change only where theta crosses one of its pairwise change fractions, so
    each run is replayed once per value of its own and the totals are read off for every
    candidate threshold: all these values and 1.0. The rate is not exactly monotone in
    theta, so every candidate is weighed.

    Args:
      runs: `ClockRun`s (e.g. `clip_runs`).
      rate: the target fraction, in (0, 1].

    Returns:
      theta in [0, 1]; among equally close rates the largest (the cheapest). It is exactly
      representable in float32, so the engine reproduces the replay.

    Raises:
      ValueError: a rate outside (0, 1], no runs, or empty maps.
    """
    if not 0.0 < rate <= 1.0:  # also rejects nan
        raise ValueError(f"rate must be a fraction of frames in (0, 1], got {rate!r}")
    if not runs:
        raise ValueError("no clips to calibrate the clock on")
    curves, values = [], [np.float32(1.0)]
    for run in runs:
        dist = _pairwise_changes(_check_maps(run.maps))
        own = np.unique(dist[np.triu_indices(len(dist), 1)])
        # Thresholds above every value of a run fire it on frame 0 only: one more point.
        counts = _fired_counts(dist, run.counted, np.append(own, np.inf))
        curves.append((own, counts))
        values.append(own)
    candidates = np.unique(np.concatenate([np.atleast_1d(v) for v in values]))
    fires = sum(counts[np.searchsorted(own, candidates, side="left")]
                for own, counts in curves)
    rates = fires / max(sum(run.denominator for run in runs), 1)
    err = np.abs(rates - rate)
    best = np.flatnonzero(err <= err.min() + 1e-12)[-1]  # ascending: the largest theta
    return float(candidates[best])


def theta_for_rate(maps: np.ndarray, rate: float) -> float:
    """The threshold whose replayed firing rate on one stream is closest to `rate`.

    `theta_for_rate_over` a single run whose every frame counts: see there.

    Args:
      maps: int `[N, h, w]` from `clock_maps` on the calibration frames.
      rate: the target fraction of frames on which the last stage fires, in (0, 1].

    Returns:
      theta in [0, 1]; among equally close rates the largest theta (the cheapest).

    Raises:
      ValueError: if rate is not in (0, 1] or maps are empty.
    """
    maps = _check_maps(maps)
    return theta_for_rate_over([ClockRun(maps, tuple(range(len(maps))), len(maps))], rate)
