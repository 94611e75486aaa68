"""Clockwork over many streams at once: `run_batch` on a batch of videos `[B, T, H, W, 3]`.

`vmap` of `clockwork.run` would turn every `lax.cond` with a per-stream predicate into
a `select` that computes both branches, losing the saving. Here the batch lives inside
the tensors (every stage already takes `[N, ...]`), and each clock decision stays a
scalar for the whole batch:

- fixed and pipelined schedules: all streams start at frame 0, so they share one
  clock and a stage fires for the whole batch or for none (one `lax.cond` per stage);
- adaptive (either clock signal): the gated (last) stage fires per stream. The firing
  streams are sorted to the front and gathered into a slot whose capacity is the
  smallest of `capacities` that holds them; a `lax.switch` over the capacities
  (capacity 0: nothing runs) computes the stage on that slot only, and the outputs are
  scattered back to their streams. With the default capacities 1..B the stage costs
  exactly the streams that fire.

Per stream, the firing decisions are those of `clockwork.run` on that video alone; a budget's
controller (`cwfcn.control`) runs per stream too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cwfcn import clockwork, control
from cwfcn.clockwork import ClockState, RunOutput, Schedule, Staging


def gated_stage(net: nnx.Module, staging: Staging, capacities: tuple[int, ...], src, cached,
                fire: jax.Array):
    """The last stage on the streams that fire, the cache on the others.

    The firing streams are sorted to the front and gathered into the smallest slot of
    `capacities` that holds them; the stage runs on that slot only (nothing where no
    stream fires) and its outputs are scattered back to their streams.

    Args:
      net: the merged module.
      staging: its staging.
      capacities: increasing slot sizes, the last = B.
      src: the previous stage's output, a pytree of `[B, ...]` arrays.
      cached: the stage's cache, a pytree of `[B, ...]` arrays.
      fire: bool `[B]`.

    Returns:
      The stage's new output, a pytree of `[B, ...]` arrays.
    """
    # Firing streams first (stable), so that a slot of k >= sum(fire) holds them all.
    order = jnp.argsort(jnp.logical_not(fire).astype(jnp.int32), stable=True)
    count = jnp.sum(fire.astype(jnp.int32))
    bucket = jnp.searchsorted(jnp.asarray(capacities), count)  # first capacity >= count

    def slot(size: int):
        def compute():
            idx = order[:size]
            out = staging.stages[-1](net, jax.tree.map(lambda a: a[idx], src))
            keep = fire[idx]

            def scatter(cache_leaf, out_leaf):
                mask = keep.reshape((size,) + (1,) * (out_leaf.ndim - 1))
                return cache_leaf.at[idx].set(jnp.where(mask, out_leaf, cache_leaf[idx]))

            return jax.tree.map(scatter, cached, out)

        return compute

    branches = [lambda: cached] + [slot(size) for size in capacities]
    return jax.lax.switch(jnp.where(count == 0, 0, bucket + 1), branches)


def _ungated_head(staging: Staging, schedule: Schedule) -> tuple[Staging, Schedule]:
    """The net cut before its gated (last) stage, and its clocks: the stages every stream
    shares, run by their periods."""
    head = dataclasses.replace(staging, stages=staging.stages[:-1])
    return head, Schedule(schedule.name, schedule.periods[:-1], schedule.lags[:-1])


def _adaptive_step(capacities, net, staging: Staging, schedule: Schedule, state, x, t):
    """One frame of the batch; the last stage fires per stream by the adaptive clock."""
    head, head_schedule = _ungated_head(staging, schedule)
    head_state = state._replace(cache=state.cache[:-1])
    outs, fired_head, *_ = clockwork.run_stages(net, head, head_schedule, head_state, x, t)
    signal = clockwork.clock_signal(staging, schedule, x, (*outs, state.cache[-1]))
    change = jnp.where(t == 0, 0.0, clockwork.clock_change(schedule, signal, state.ref))  # [B]
    fire, ctrl = control.decide(schedule, state.control, change, t)  # per stream
    ref = jnp.where(fire.reshape((-1,) + (1,) * (signal.ndim - 1)), signal, state.ref)
    last = gated_stage(net, staging, capacities, outs[-1], state.cache[-1], fire)
    streams = fire.shape[0]
    fired = jnp.concatenate([jnp.broadcast_to(fired_head, (streams, len(head.stages))),
                             fire[:, None]], axis=1)
    return (*outs, last), fired, ref, change, ctrl


def _batch_step(graphdef, staging, schedule, capacities, params, state: ClockState, frames):
    """One frame of every stream.

    `(state, frames [B, H, W, 3]) -> (state, (scores [B, H, W, C], fired [B, N], change [B]))`.
    """
    net = nnx.merge(graphdef, params)
    t, streams = state.t, frames.shape[0]
    args = (net, staging, schedule, state, frames, t)
    if schedule.theta is not None:
        cache, fired, ref, change, ctrl = _adaptive_step(capacities, *args)
    else:
        cache, shared, ref, _, ctrl = clockwork.run_stages(*args)
        fired = jnp.broadcast_to(shared, (streams, len(staging.stages)))
        change = jnp.zeros((streams,), jnp.float32)
    scores = staging.fuse(net, cache, frames.shape[1:3])
    return ClockState(cache, t + 1, ref, change, ctrl), (scores, fired, change)


def _init_batch_state(graphdef, staging, schedule, params, batch_shape) -> ClockState:
    """Zero caches for frames of `batch_shape` = (B, H, W, 3): clockwork's, widened to B."""
    one = clockwork.init_state(graphdef, staging, schedule, params, batch_shape[1:])
    streams = batch_shape[0]

    def widen(leaf):
        return jnp.zeros((streams, *leaf.shape[1:]), leaf.dtype)

    ref = one.ref if schedule.theta is None else widen(one.ref)
    return ClockState(jax.tree.map(widen, one.cache), one.t, ref,
                      jnp.zeros((streams,), jnp.float32),
                      control.init_control(schedule, (streams,)))


@functools.partial(jax.jit, static_argnames=(*clockwork.STATIC_ARGNAMES, "capacities"))
def scan_batch(params, videos, *, graphdef, staging, schedule, capacities) -> RunOutput:
    """`run_batch` on a prepared net (`clockwork.prepare`): the jitted scan, for callers that
    place the params and videos themselves (`distributed.evaluate_sharded`, inside
    `shard_map`).

    Args:
      params: the net's params (`Prepared.params`).
      videos: float32 `[B, T, H, W, 3]`, preprocessed.
      graphdef, staging, schedule: `Prepared.static` (the schedule bound to the staging).
      capacities: `check_capacities` for adaptive schedules, () for the others.

    Returns:
      As `run_batch`.
    """
    frames = jnp.swapaxes(videos, 0, 1)  # [T, B, H, W, 3]: scan over time
    state = _init_batch_state(graphdef, staging, schedule, params, frames.shape[1:])
    step = functools.partial(_batch_step, graphdef, staging, schedule, capacities, params)
    _, (scores, fired, change) = jax.lax.scan(step, state, frames)
    return RunOutput(*(jnp.swapaxes(a, 0, 1) for a in (scores, fired, change)))


def check_capacities(capacities: Sequence[int] | None, batch: int) -> tuple[int, ...]:
    """The slot sizes of the adaptive gather, checked: increasing, in [1, B], ending at B.

    Args:
      capacities: slot sizes, or None for every size 1..B (work exactly proportional to
        the firing streams, at the price of B compiled copies of the gated stage).
      batch: B.

    Returns:
      The capacities as a sorted tuple ending with B.

    Raises:
      ValueError: a size outside [1, B].
    """
    if capacities is None:
        return tuple(range(1, batch + 1))
    caps = sorted({int(k) for k in capacities})
    if not caps or caps[0] < 1 or caps[-1] > batch:
        raise ValueError(f"capacities must be slot sizes in [1, {batch}] (the batch), "
                         f"got {list(capacities)}")
    return (*caps, batch) if caps[-1] != batch else tuple(caps)


def run_batch(
    net: nnx.Module,
    videos: jax.Array,
    schedule: str | Schedule,
    *,
    capacities: Sequence[int] | None = None,
) -> RunOutput:
    """Runs a clockwork schedule over B videos at once: one jitted `lax.scan` over frames.

    Args:
      net: a staged network (its class has a `staging`), e.g. `model.FCN8s`.
      videos: float32 `[B, T, H, W, 3]`, preprocessed; all of one size and length.
      schedule: a `Schedule` or its name (`clockwork.parse_schedule`).
      capacities: adaptive schedules: the slot sizes the firing streams are gathered
        into (`check_capacities`); e.g. `(1, 2, 4, 8)` compiles fewer copies of the
        gated stage and computes at most twice the streams that fire.

    Returns:
      `RunOutput(scores float32 [B, T, H, W, C], fired bool [B, T, N],
      change float32 [B, T])`; stream b equals `clockwork.run(net, videos[b], schedule)`.

    Raises:
      ValueError: bad videos, schedule or capacities.
    """
    prepared = clockwork.prepare(net, schedule)
    shape = tuple(videos.shape)
    if len(shape) != 5 or shape[-1] != 3 or 0 in shape:
        raise ValueError(f"videos must be [B, T, H, W, 3] (preprocessed BGR), got shape {shape}")
    if not jnp.issubdtype(videos.dtype, jnp.floating):
        raise ValueError(f"videos must be floating point (see model.preprocess), "
                         f"got {videos.dtype}")
    adaptive = prepared.schedule.theta is not None
    caps = check_capacities(capacities, shape[0]) if adaptive else ()
    return scan_batch(prepared.params, jnp.asarray(videos), capacities=caps, **prepared.static)
