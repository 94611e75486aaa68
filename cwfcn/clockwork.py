"""The clockwork engine: staged inference over video with per-stage clocks.

A network is cut into stages S1..SN (a `Staging`: pure functions of the module).
On every frame each stage's clock decides to compute the stage or to reuse its
cached output from the last frame on which it fired; `fuse` then combines the
latest output of every stage into the frame's scores. The whole video is one
jit-compiled `lax.scan` whose carry (`ClockState`) holds the caches, and every
compute-or-cache choice is a `lax.cond` on a scalar, so a stage that does not fire
costs nothing.

Schedules (`parse_schedule`):
  oracle (1,1,1), skip (2,2,2), exponential (1,2,4), alternating (1,1,2),
  periods:a,b,c   stage s fires on frames t with t % period_s == 0;
  adaptive:theta  the earlier stages fire every frame; the last fires when the
                  fraction of positions whose class argmax of the clock scores
                  (FCN-8s: uncropped score_pool4) differs from that at its last
                  firing is >= theta;
  pipeline3       frame t fuses S1(t), S2(t-1), S3(t-2): each stage reads the
                  previous step's output of the stage before it, so the stages of
                  one step are independent and can run concurrently;
  pipeline2       S1+S2 on t, S3 on t-1.
Frame 0 fires every stage (pipelines fill with frame 0).

The engine knows nothing of FCN-8s: any `nnx.Module` whose class has a `staging`
attribute plugs in.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Staging:
    """How to run a network stage by stage. All functions are pure in the module.

    Attributes:
      stages: stage k is `f(module, x) -> out_k` (any pytree of arrays), where x is
        the frames `[N, H, W, 3]` for k = 0 and the output of stage k-1 otherwise.
      fuse: `f(module, (out_1, ..., out_N), (H, W)) -> scores [N, H, W, C]`.
      clock_scores: `f((out_1, ..., out_N)) -> [N, h, w, K]`, the scores whose class
        argmax the adaptive clock compares across frames. It may read only the
        outputs of stages before the last (the last is the one it gates).
    """

    stages: tuple[Callable[[nnx.Module, Any], Any], ...]
    fuse: Callable[[nnx.Module, tuple, tuple[int, int]], jax.Array]
    clock_scores: Callable[[tuple], jax.Array]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A clock per stage. Hashable: it is a static argument of the jitted engine.

    Attributes:
      name: the spec it was parsed from (for tables and errors).
      periods: stage s fires on frames t with t % periods[s] == 0.
      lags: 1 where stage s reads the previous step's output of stage s-1 (pipelines).
      theta: if set, the last stage fires by the adaptive clock instead of its period.
    """

    name: str
    periods: tuple[int, ...] = (1, 1, 1)
    lags: tuple[int, ...] = (0, 0, 0)
    theta: float | None = None

    @property
    def num_stages(self) -> int:
        return len(self.periods)

    @property
    def pipelined(self) -> bool:
        return any(self.lags)


FIXED_SCHEDULES = {
    "oracle": (1, 1, 1),
    "skip": (2, 2, 2),
    "exponential": (1, 2, 4),
    "alternating": (1, 1, 2),
}
PIPELINES = {"pipeline2": (0, 0, 1), "pipeline3": (0, 1, 1)}
DEFAULT_THETA = 0.25  # the paper's operating point on YouTube-Objects
SCHEDULE_HELP = (
    "oracle, skip, exponential, alternating, periods:a,b,c (positive integers), "
    "adaptive or adaptive:theta (0 <= theta <= 1), pipeline2, pipeline3"
)


def parse_schedule(spec: str | Schedule) -> Schedule:
    """Turns a schedule name into a `Schedule`.

    Args:
      spec: one of `SCHEDULE_HELP` (case-insensitive), or a `Schedule` (returned as is).

    Returns:
      The schedule.

    Raises:
      ValueError: for anything else, naming the accepted forms.
    """
    if isinstance(spec, Schedule):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"schedule must be a string, got {type(spec).__name__}: {SCHEDULE_HELP}")
    name = spec.strip().lower()
    head, _, arg = name.partition(":")
    if name in FIXED_SCHEDULES:
        return Schedule(name, periods=FIXED_SCHEDULES[name])
    if name in PIPELINES:
        return Schedule(name, lags=PIPELINES[name])
    if head == "periods":
        try:
            periods = tuple(int(p) for p in arg.split(","))
        except ValueError:
            periods = ()
        if not periods or min(periods) < 1:
            raise ValueError(f"bad schedule {spec!r}: periods must be positive integers, "
                             "e.g. periods:1,2,4")
        return Schedule(name, periods=periods, lags=(0,) * len(periods))
    if head == "adaptive":
        theta = DEFAULT_THETA
        if arg:
            try:
                theta = float(arg)
            except ValueError:
                theta = math.nan
        if not 0.0 <= theta <= 1.0:  # also rejects nan
            raise ValueError(f"bad schedule {spec!r}: theta must be a number in [0, 1], "
                             "e.g. adaptive:0.25")
        return Schedule(f"adaptive:{theta:g}", theta=theta)
    raise ValueError(f"unknown schedule {spec!r}; use one of: {SCHEDULE_HELP}")


class ClockState(NamedTuple):
    """The carry of the scan (a pytree): everything a frame step needs from the past.

    Attributes:
      cache: the latest output of each stage (pytrees as the stages return them).
      t: int32 scalar, the index of the next frame.
      ref: int32 `[N, h, w]`, the clock scores' argmax at the last firing of the
        gated stage (adaptive schedules; shape `[0]` otherwise).
      change: float32 scalar, the adaptive clock's change fraction at the last step.
    """

    cache: tuple
    t: jax.Array
    ref: jax.Array
    change: jax.Array


class RunOutput(NamedTuple):
    """What `run` returns.

    Attributes:
      scores: float32 `[T, H, W, C]`.
      fired: bool `[T, N]`, which stage computed on each frame.
      change: float32 `[T]`, the adaptive clock's change fraction (0 where unused).
    """

    scores: jax.Array
    fired: jax.Array
    change: jax.Array


def staging_of(net: nnx.Module) -> Staging:
    """The `Staging` of a network: its class's `staging` attribute."""
    staging = getattr(type(net), "staging", None)
    if not isinstance(staging, Staging):
        raise ValueError(f"{type(net).__name__} has no `staging` class attribute "
                         "(a clockwork.Staging): the engine cannot cut it into stages")
    return staging


def _check_compatible(staging: Staging, schedule: Schedule) -> None:
    if schedule.num_stages != len(staging.stages):
        raise ValueError(f"schedule {schedule.name!r} clocks {schedule.num_stages} stages "
                         f"but the net has {len(staging.stages)}")


def _cond(pred: jax.Array, compute: Callable[[], Any], cached: Any) -> Any:
    """Compute a stage or reuse its cache; a skipped branch costs no compute."""
    return jax.lax.cond(pred, compute, lambda: cached)


def _sequential_step(net, staging, schedule, state, x, t):
    """Frames with every lag 0: stage k reads stage k-1's output of this frame."""
    n = len(staging.stages)
    # A stage with period 1 fires on every frame: a plain call, no branch at all.
    fires = [True if p == 1 else t % p == 0 for p in schedule.periods]
    outs: list = []
    ref, change = state.ref, jnp.zeros((), jnp.float32)
    for k, stage in enumerate(staging.stages):
        if schedule.theta is not None and k == n - 1:
            cls = jnp.argmax(staging.clock_scores((*outs, state.cache[k])), -1).astype(jnp.int32)
            change = jnp.where(t == 0, 0.0, jnp.mean((cls != state.ref).astype(jnp.float32)))
            fires[k] = (t == 0) | (change >= schedule.theta)
            ref = jnp.where(fires[k], cls, state.ref)
        src = x if k == 0 else outs[k - 1]
        if fires[k] is True:
            outs.append(stage(net, src))
        else:
            outs.append(_cond(fires[k], functools.partial(stage, net, src), state.cache[k]))
    return tuple(outs), jnp.stack([jnp.asarray(f) for f in fires]), ref, change


def _pipelined_step(net, staging, schedule, state, x, t):
    """Lagged stages read the previous step's cache, so no stage waits for another."""
    del t
    outs = []
    for k, stage in enumerate(staging.stages):
        src = x if k == 0 else (state.cache[k - 1] if schedule.lags[k] else outs[k - 1])
        outs.append(stage(net, src))
    fired = jnp.ones((len(outs),), bool)
    return tuple(outs), fired, state.ref, jnp.zeros((), jnp.float32)


def _frame_step(graphdef, staging, schedule, params, state: ClockState, frame: jax.Array):
    """One frame: `(state, frame [H, W, 3]) -> (state, (scores [H, W, C], fired [N], change))`."""
    net = nnx.merge(graphdef, params)
    x, t = frame[None], state.t
    args = (net, staging, schedule, state, x, t)
    if schedule.pipelined:
        # Frame 0 has no earlier outputs to lag on: it runs the net straight through.
        full = dataclasses.replace(schedule, lags=(0,) * schedule.num_stages)
        cache, fired, ref, change = jax.lax.cond(
            t == 0,
            lambda: _sequential_step(net, staging, full, state, x, t),
            lambda: _pipelined_step(*args),
        )
    else:
        cache, fired, ref, change = _sequential_step(*args)
    scores = staging.fuse(net, cache, frame.shape[:2])[0]
    return ClockState(cache, t + 1, ref, change), (scores, fired, change)


def _init_state(graphdef, staging, schedule, params, frame_shape) -> ClockState:
    """Zero caches of the right shapes (from `jax.eval_shape`; nothing is computed)."""
    net = nnx.merge(graphdef, params)
    x = jax.ShapeDtypeStruct((1, *frame_shape), jnp.float32)
    outs = []
    for k, stage in enumerate(staging.stages):
        outs.append(jax.eval_shape(stage, net, x if k == 0 else outs[k - 1]))
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tuple(outs))
    if schedule.theta is None:
        ref = jnp.zeros((0,), jnp.int32)
    else:
        ref = jnp.zeros(staging.clock_scores(cache).shape[:-1], jnp.int32)
    return ClockState(cache, jnp.zeros((), jnp.int32), ref, jnp.zeros((), jnp.float32))


def _check_frames(frames: jax.Array, rank: int, what: str) -> None:
    shape = tuple(frames.shape)
    if len(shape) != rank or shape[-1] != 3:
        want = "[T, H, W, 3]" if rank == 4 else "[H, W, 3]"
        raise ValueError(f"{what} must be {want} (preprocessed BGR), got shape {shape}")
    if not jnp.issubdtype(frames.dtype, jnp.floating):
        raise ValueError(f"{what} must be floating point (see model.preprocess), "
                         f"got {frames.dtype}")


@functools.partial(jax.jit, static_argnames=("graphdef", "staging", "schedule"))
def _run(params, frames, *, graphdef, staging, schedule) -> RunOutput:
    state = _init_state(graphdef, staging, schedule, params, frames.shape[1:])
    step = functools.partial(_frame_step, graphdef, staging, schedule, params)
    _, (scores, fired, change) = jax.lax.scan(step, state, frames)
    return RunOutput(scores, fired, change)


def run(net: nnx.Module, frames: jax.Array, schedule: str | Schedule) -> RunOutput:
    """Runs a clockwork schedule over a video: one jitted `lax.scan` over frames.

    Compiled once per (net structure, schedule, frame shape).

    Args:
      net: a staged network (its class has a `staging`), e.g. `model.FCN8s`.
      frames: float32 `[T, H, W, 3]`, preprocessed.
      schedule: a `Schedule` or its name (`parse_schedule`).

    Returns:
      `RunOutput(scores [T, H, W, C], fired bool [T, N], change float32 [T])`.
    """
    schedule = parse_schedule(schedule)
    staging = staging_of(net)
    _check_compatible(staging, schedule)
    _check_frames(frames, 4, "frames")
    graphdef, params = nnx.split(net)
    return _run(params, jnp.asarray(frames), graphdef=graphdef, staging=staging,
                schedule=schedule)


class Clockwork:
    """Streaming clockwork for live video: `init` once, then `step` per frame.

    Gives exactly what `run` gives on the same frames; `step` is compiled once per
    frame shape.

    Example:
      cw = Clockwork(net, "adaptive:0.25")
      state = cw.init((H, W, 3))
      for frame in stream:
        state, scores, fired = cw.step(state, frame)
    """

    def __init__(self, net: nnx.Module, schedule: str | Schedule):
        self.schedule = parse_schedule(schedule)
        self.staging = staging_of(net)
        _check_compatible(self.staging, self.schedule)
        self.graphdef, self.params = nnx.split(net)
        self._cache_shapes: dict[tuple, list] = {}  # frame shape -> cache leaf shapes
        self._init = jax.jit(
            functools.partial(_init_state, self.graphdef, self.staging, self.schedule),
            static_argnums=1,
        )
        self._step = jax.jit(
            functools.partial(_frame_step, self.graphdef, self.staging, self.schedule)
        )

    def init(self, frame_shape: tuple[int, int, int]) -> ClockState:
        """The state before the first frame, for frames of shape `(H, W, 3)`."""
        frame_shape = tuple(int(d) for d in frame_shape)
        if len(frame_shape) != 3 or frame_shape[-1] != 3:
            raise ValueError(f"frame_shape must be (H, W, 3), got {frame_shape}")
        state = self._init(self.params, frame_shape)
        self._cache_shapes[frame_shape] = [a.shape for a in jax.tree.leaves(state.cache)]
        return state

    def step(self, state: ClockState, frame: jax.Array) -> tuple[ClockState, jax.Array, jax.Array]:
        """Processes one frame.

        Args:
          state: from `init` or the previous `step`.
          frame: float32 `[H, W, 3]`, preprocessed, of the shape given to `init`.

        Returns:
          `(state, scores float32 [H, W, C], fired bool [N])`; `state.change` holds
          the adaptive clock's change fraction.
        """
        frame = jnp.asarray(frame)
        _check_frames(frame, 3, "frame")
        cache_shapes = self._cache_shapes.get(tuple(frame.shape))
        if cache_shapes != [a.shape for a in jax.tree.leaves(state.cache)]:
            raise ValueError(f"frame of shape {tuple(frame.shape)} does not match the state: "
                             "call init(frame.shape) for a stream of this size")
        state, (scores, fired, _) = self._step(self.params, state, frame)
        return state, scores, fired
