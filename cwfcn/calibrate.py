"""Calibrating the adaptive clock's threshold to a target firing rate (beyond the paper).

The paper picks theta by hand per data set. Here theta is chosen so that the last stage
fires on about a fraction `rate` of frames, from the first frames of a stream and no
labels: compute the clock's argmax maps once (`clock_maps`), replay the adaptive clock on
them for every threshold that can change its decisions (`simulate`), and keep the best
(`theta_for_rate`).

The replay matches `clockwork.run(net, frames, f"adaptive:{theta}")` exactly: frame 0
fires; frame t fires when the float32 fraction of positions whose class differs from the
map at the last firing is >= float32(theta); the reference map updates on firing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cwfcn import clockwork


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
      ValueError: if the net has no staging or frames are not `[N, H, W, 3]` floats.
    """
    staging = clockwork.staging_of(net)
    frames = jnp.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3] (preprocessed), got {frames.shape}")
    if not jnp.issubdtype(frames.dtype, jnp.floating):
        raise ValueError(f"frames must be floating point (see model.preprocess), "
                         f"got {frames.dtype}")
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
    n = len(flat)
    dist = np.zeros((n, n), np.float32)
    for i in range(n):
        counts = np.count_nonzero(flat[i + 1 :] != flat[i], axis=1)
        dist[i, i + 1 :] = counts.astype(np.float32) / np.float32(flat.shape[1])
    return dist + dist.T


def _replay_rate(dist: np.ndarray, theta: np.float32) -> float:
    """The firing rate of the replay, from pairwise changes (as `simulate`)."""
    ref, fires = 0, 1
    for t in range(1, len(dist)):
        if dist[ref, t] >= theta:
            ref, fires = t, fires + 1
    return fires / len(dist)


def theta_for_rate(maps: np.ndarray, rate: float) -> float:
    """The threshold whose replayed firing rate is closest to `rate`.

    Every change the replay compares is one of the pairwise change fractions between
    frames, so the thresholds in one interval between consecutive such values all make
    the same decisions; the candidates are these values (each the largest threshold of
    its interval) and 1.0 (fires on frame 0 only, if no pair differs everywhere). The
    rate is not exactly monotone in theta, so every candidate is replayed.

    Args:
      maps: int `[N, h, w]` from `clock_maps` on the calibration frames.
      rate: the target fraction of frames on which the last stage fires, in (0, 1].

    Returns:
      theta in [0, 1]; among equally close rates the largest theta (the cheapest). It is
      exactly representable in float32, so the engine reproduces the replay.

    Raises:
      ValueError: if rate is not in (0, 1] or maps are empty.
    """
    if not 0.0 < rate <= 1.0:  # also rejects nan
        raise ValueError(f"rate must be a fraction of frames in (0, 1], got {rate!r}")
    maps = _check_maps(maps)
    dist = _pairwise_changes(maps)
    candidates = np.unique(np.append(dist[np.triu_indices(len(maps), 1)], np.float32(1.0)))
    best_theta, best_err = 1.0, np.inf
    for theta in candidates:  # ascending: on ties the later (larger) one wins
        err = abs(_replay_rate(dist, theta) - rate)
        if err <= best_err + 1e-12:
            best_theta, best_err = float(theta), err
    return best_theta
