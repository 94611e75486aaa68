"""The clockwork engine: staged inference over video with per-stage clocks.

A network is cut into stages S1..SN (a `Staging`: pure functions of the module).
On every frame each stage's clock decides to compute the stage or to reuse its
cached output from the last frame on which it fired; `fuse` then combines the
latest output of every stage into the frame's scores. The whole video is one
jit-compiled `lax.scan` whose carry (`ClockState`) holds the caches, and every
compute-or-cache choice is a `lax.cond` on a scalar, so a stage that does not fire
costs nothing.

The schedules (oracle, skip, exponential, alternating, periods:a,b,c, adaptive:theta,
adaptive-pixel:theta, pipeline2, pipeline3) are the registry of `cwfcn.schedules`,
re-exported here; a named schedule is bound to the net's number of stages. Frame 0 fires
every stage. Pipelines fill as the authors' code does (clockwork-fcn lib/run_net.py,
pipeline_fill_3stage): frame 0 runs the whole net, and each later step turns on one more
lag, deepest first (`fill_lags`), so pipeline3's frame 1 is a pipeline2 step and frame 2
fuses S1(2), S2(1), S3(1).

The engine knows nothing of FCN-8s: any `nnx.Module` whose class has a `staging`
attribute plugs in. Its building blocks, for the other engines (`batched`, `distributed`):
`prepare` (a net and a schedule made ready: parsed, bound, checked, split), `init_state`
(the zero carry), `run_stages` (the stages of one step) and `check_frames`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cwfcn import compilation, control
from cwfcn.schedules import (
    ADAPTIVE_SIGNALS,
    ALL_SCHEDULES,
    BASELINES,
    DEFAULT_STAGES,
    DEFAULT_THETA,
    SCHEDULE_HELP,
    Schedule,
    parse_schedule,
)

__all__ = [  # the schedules' names are re-exported: the public API is clockwork.X
    "ADAPTIVE_SIGNALS", "ALL_SCHEDULES", "BASELINES", "DEFAULT_CHUNK", "DEFAULT_STAGES",
    "DEFAULT_THETA", "DTYPES", "SCHEDULE_HELP", "STATIC_ARGNAMES", "ClockState", "Clockwork",
    "CompiledRun",
    "Prepared", "RunOutput", "Schedule", "StagesOutput", "Staging", "bind_schedule",
    "cast_params", "check_frames", "clock_change", "clock_classes", "clock_signal",
    "compile_counts", "compute_dtype", "fill_lags", "init_state", "parse_schedule",
    "prepare", "run", "run_stages", "staging_of",
]

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


class ClockState(NamedTuple):
    """The carry of the scan (a pytree): everything a frame step needs from the past.

    Attributes:
      cache: the latest output of each stage (pytrees as the stages return them).
      t: int32 scalar, the index of the next frame.
      ref: the adaptive clock's signal at the last firing of the gated stage
        (`clock_signal`: int32 `[N, h, w]` class maps, or the frames `[N, H, W, 3]` for
        the pixel clock; shape `[0]` for other schedules).
      change: float32 scalar, the adaptive clock's change fraction at the last step.
      control: a budget's controller (`control.Control`: its threshold and firing history),
        `()` for a schedule without a target.
    """

    cache: tuple
    t: jax.Array
    ref: jax.Array
    change: jax.Array
    control: Any = ()


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


def bind_schedule(staging: Staging, schedule: str | Schedule) -> Schedule:
    """A schedule for a net of this staging: parsed, and a named one bound to its stages.

    Args:
      staging: the net's staging.
      schedule: a `Schedule` or its name (`parse_schedule`).

    Returns:
      The schedule, with one clock per stage.

    Raises:
      ValueError: a bad name, a truncated baseline, a named schedule that does not fit the
        staging, or explicit periods of another number of stages.
    """
    schedule = parse_schedule(schedule, len(staging.stages))
    if schedule.keep is not None:
        raise ValueError(f"schedule {schedule.name!r} is a truncated baseline: the engine runs "
                         "clockwork schedules, the evaluator runs truncated baselines "
                         "(evaluation.predict)")
    if schedule.num_stages != len(staging.stages):
        raise ValueError(f"schedule {schedule.name!r} clocks {schedule.num_stages} stages "
                         f"but the net has {len(staging.stages)}")
    return schedule


# The jitted entry points take the net's structure, staging and schedule as static
# arguments (`Prepared.static`), so their compile caches are shared by every `run` and
# `Clockwork` of the same net structure: one compile per (schedule, dtype, frame shape),
# process-wide.
STATIC_ARGNAMES = ("graphdef", "staging", "schedule")


class Prepared(NamedTuple):
    """A net and a schedule made ready for the engine (`prepare`).

    Attributes:
      graphdef: the net's structure (`nnx.split`), a static jit argument.
      params: the net's state, a pytree of arrays (as stored: not cast).
      staging: the net's staging.
      schedule: the schedule, bound to the staging.
    """

    graphdef: Any
    params: Any
    staging: Staging
    schedule: Schedule

    @property
    def static(self) -> dict[str, Any]:
        """The static keyword arguments of the jitted engine (`STATIC_ARGNAMES`)."""
        return {name: getattr(self, name) for name in STATIC_ARGNAMES}


def prepare(net: nnx.Module, schedule: str | Schedule) -> Prepared:
    """Readies a net and a schedule for the engine: the staging looked up, the schedule
    parsed, bound and checked (`bind_schedule`), the net split (`nnx.split`).

    Raises:
      ValueError: a net without staging, or a schedule it cannot run.
    """
    staging = staging_of(net)
    schedule = bind_schedule(staging, schedule)
    graphdef, params = nnx.split(net)
    return Prepared(graphdef, params, staging, schedule)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DEFAULT_CHUNK = 64  # frames per scan when `run` or `Clockwork.chunks` cut a long video


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The activations' dtype: None or "float32" (default), "bfloat16", or a jnp dtype."""
    if dtype is None:
        return jnp.dtype(jnp.float32)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown compute dtype {dtype!r}; use one of {sorted(DTYPES)}")
        return jnp.dtype(DTYPES[dtype])
    dtype = jnp.dtype(dtype)
    if dtype not in {jnp.dtype(d) for d in DTYPES.values()}:
        raise ValueError(f"unsupported compute dtype {dtype}; use one of {sorted(DTYPES)}")
    return dtype


def cast_params(params: Any, dtype: Any) -> Any:
    """Floating leaves of a params pytree in `dtype` (the stored params stay float32).

    Every layer then computes in `dtype`: `nnx.Conv` promotes its input and kernel to
    their common dtype, and the frames are cast alike by the engine.
    """
    dtype = compute_dtype(dtype)
    return jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)


def clock_classes(scores: jax.Array) -> jax.Array:
    """The adaptive clock's view of its scores: `[..., h, w, K] -> int32 [..., h, w]`, the
    class argmax that it compares with the map at the stage's last firing."""
    return jnp.argmax(scores, -1).astype(jnp.int32)


def clock_signal(staging: Staging, schedule: Schedule, x: jax.Array, outs: tuple) -> jax.Array:
    """What an adaptive clock compares across frames, per stream.

    Args:
      staging: the net's staging.
      schedule: an adaptive schedule (`theta` set).
      x: the frames `[N, H, W, 3]` of this step.
      outs: the stage outputs the clock scores read (`Staging.clock_scores`).

    Returns:
      int32 `[N, h, w]` class maps (signal "scores"), or the frames `x` ("pixels").
    """
    if schedule.signal == "pixels":
        return x
    return clock_classes(staging.clock_scores(outs))


def clock_change(schedule: Schedule, signal: jax.Array, ref: jax.Array) -> jax.Array:
    """The adaptive clock's change since its last firing, per stream: float32 `[N]`.

    "scores": the fraction of positions whose class differs from `ref`'s; "pixels": the
    mean absolute difference of the frames from `ref`, over 255 (both in [0, 1] for
    0..255 pixels, so one theta range serves both).
    """
    axes = tuple(range(1, signal.ndim))
    if schedule.signal == "pixels":
        diff = jnp.abs(signal.astype(jnp.float32) - ref.astype(jnp.float32))
        return jnp.mean(diff, axis=axes) / 255.0
    return jnp.mean((signal != ref).astype(jnp.float32), axis=axes)


def fill_lags(schedule: Schedule, step: int) -> tuple[int, ...]:
    """The lags a pipelined schedule uses on `step` while it fills.

    Step 0 runs the whole net (no lag); each step after turns on one more lag, deepest
    first, until all are on: pipeline3 (lags 0,1,1) runs (0,0,0), then (0,0,1), the
    2-stage step of clockwork-fcn's `pipeline_fill_3stage` (lib/run_net.py), then (0,1,1).

    Args:
      schedule: a schedule (any: without lags this is all zeros).
      step: the frame index t >= 0.

    Returns:
      The lags, one per stage.
    """
    lagged = [k for k, lag in enumerate(schedule.lags) if lag]
    active = set(lagged[len(lagged) - min(step, len(lagged)):])
    return tuple(int(k in active) for k in range(schedule.num_stages))


def _cond(pred: jax.Array, compute: Callable[[], Any], cached: Any) -> Any:
    """Compute a stage or reuse its cache; a skipped branch costs no compute."""
    return jax.lax.cond(pred, compute, lambda: cached)


class StagesOutput(NamedTuple):
    """What `run_stages` returns for one step.

    Attributes:
      cache: the latest output of each stage after the step (the new `ClockState.cache`).
      fired: bool `[N_stages]`, which stages computed.
      ref: the adaptive clock's new reference (`ClockState.ref`).
      change: float32 scalar, the adaptive clock's change fraction (0 where unused).
      control: the budget's controller after the step (`ClockState.control`).
    """

    cache: tuple
    fired: jax.Array
    ref: jax.Array
    change: jax.Array
    control: Any = ()


def _sequential_stages(net, staging, schedule, state, x, t) -> StagesOutput:
    """Frames with every lag 0: stage k reads stage k-1's output of this frame."""
    last = len(staging.stages) - 1
    # A stage with period 1 fires on every frame: a plain call, no branch at all.
    fires = [True if period == 1 else t % period == 0 for period in schedule.periods]
    outs: list = []
    ref, change, ctrl = state.ref, jnp.zeros((), jnp.float32), state.control
    for k, stage in enumerate(staging.stages):
        if schedule.theta is not None and k == last:
            signal = clock_signal(staging, schedule, x, (*outs, state.cache[k]))
            change = jnp.where(t == 0, 0.0, clock_change(schedule, signal, state.ref)[0])
            fires[k], ctrl = control.decide(schedule, state.control, change, t)
            ref = jnp.where(fires[k], signal, state.ref)
        src = x if k == 0 else outs[k - 1]
        if fires[k] is True:
            outs.append(stage(net, src))
        else:
            outs.append(_cond(fires[k], functools.partial(stage, net, src), state.cache[k]))
    return StagesOutput(tuple(outs), jnp.stack([jnp.asarray(f) for f in fires]), ref, change,
                        ctrl)


def _pipelined_stages(net, staging, lags, state, x) -> StagesOutput:
    """Lagged stages read the previous step's cache, so no stage waits for another."""
    outs = []
    for k, stage in enumerate(staging.stages):
        src = x if k == 0 else (state.cache[k - 1] if lags[k] else outs[k - 1])
        outs.append(stage(net, src))
    fired = jnp.ones((len(outs),), bool)
    return StagesOutput(tuple(outs), fired, state.ref, jnp.zeros((), jnp.float32),
                        state.control)


def run_stages(net: nnx.Module, staging: Staging, schedule: Schedule, state: ClockState,
               x: jax.Array, t: jax.Array) -> StagesOutput:
    """The stages of one step: each computed or taken from the cache as its clock says.

    Pipelines lag on the previous step's outputs; while they fill (`fill_lags`), step t
    has only the deepest t lags on, so frame 0 runs the net straight through. An adaptive
    schedule decides one scalar for the whole batch `N` (its change is that of stream 0:
    `batched` gates per stream on its own).

    Args:
      net: the merged module (inside the jitted function).
      staging: its staging.
      schedule: bound to the staging (`bind_schedule`).
      state: the carry before the step.
      x: the frames `[N, H, W, 3]` of this step, in the compute dtype.
      t: int32 scalar, the step's frame index.

    Returns:
      `StagesOutput(cache, fired bool [N_stages], ref, change, control)`.
    """
    if not schedule.pipelined:
        return _sequential_stages(net, staging, schedule, state, x, t)
    depth = schedule.pipeline_depth
    branches = [functools.partial(_pipelined_stages, net, staging, fill_lags(schedule, step),
                                  state, x)
                for step in range(depth + 1)]
    return jax.lax.switch(jnp.minimum(t, depth), branches)


def _frame_step(graphdef, staging, schedule, params, state: ClockState, frame: jax.Array):
    """One frame: `(state, frame [H, W, 3]) -> (state, (scores [H, W, C], fired [N], change))`."""
    net = nnx.merge(graphdef, params)
    x, t = frame[None].astype(_params_dtype(params)), state.t
    cache, fired, ref, change, ctrl = run_stages(net, staging, schedule, state, x, t)
    scores = staging.fuse(net, cache, frame.shape[:2])[0].astype(jnp.float32)
    return ClockState(cache, t + 1, ref, change, ctrl), (scores, fired, change)


def _params_dtype(params) -> jnp.dtype:
    """The compute dtype the params were cast to: that of their floating leaves."""
    leaves = [p for p in jax.tree.leaves(params) if jnp.issubdtype(p.dtype, jnp.floating)]
    return leaves[0].dtype if leaves else jnp.dtype(jnp.float32)


def init_state(graphdef: Any, staging: Staging, schedule: Schedule, params: Any,
               frame_shape: tuple[int, int, int]) -> ClockState:
    """The carry before frame 0: zero caches of the right shapes, from `jax.eval_shape`
    (nothing is computed), for one stream of frames `(H, W, 3)`.

    Args:
      graphdef: the net's structure (`Prepared.graphdef`).
      staging: its staging.
      schedule: bound to the staging.
      params: the net's params, cast to the compute dtype (the caches take their dtype).
      frame_shape: `(H, W, 3)`.

    Returns:
      The `ClockState`; each cache leaf has a leading batch axis of 1.
    """
    net = nnx.merge(graphdef, params)
    x = jax.ShapeDtypeStruct((1, *frame_shape), _params_dtype(params))
    outs = []
    for k, stage in enumerate(staging.stages):
        outs.append(jax.eval_shape(stage, net, x if k == 0 else outs[k - 1]))
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tuple(outs))
    if schedule.theta is None:
        ref = jnp.zeros((0,), jnp.int32)
    else:
        signal = jax.eval_shape(functools.partial(clock_signal, staging, schedule), x, cache)
        ref = jnp.zeros(signal.shape, signal.dtype)
    return ClockState(cache, jnp.zeros((), jnp.int32), ref, jnp.zeros((), jnp.float32),
                      control.init_control(schedule))


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    return jnp.isfinite(x).all()


def check_frames(frames: Any, rank: int, what: str) -> None:
    """Checks the engine's input frames.

    Args:
      frames: float `[T, H, W, 3]` (rank 4) or `[H, W, 3]` (rank 3), preprocessed, with
        T, H, W >= 1 and no NaN or inf (not checked on tracers: nothing is concrete).
      rank: 4 or 3.
      what: what to call them in errors ("frames", "frame").

    Raises:
      ValueError: another rank or channel count, integer frames, empty or non-finite ones.
    """
    want = "[T, H, W, 3]" if rank == 4 else "[H, W, 3]"
    if not hasattr(frames, "shape") or not hasattr(frames, "dtype"):  # a number, a list
        raise ValueError(f"{what} must be an array {want} (preprocessed BGR), got "
                         f"{type(frames).__name__}")
    shape = tuple(frames.shape)
    if len(shape) != rank or shape[-1] != 3:
        raise ValueError(f"{what} must be {want} (preprocessed BGR), got shape {shape}")
    if not jnp.issubdtype(frames.dtype, jnp.floating):
        raise ValueError(f"{what} must be floating point (see model.preprocess), "
                         f"got {frames.dtype}")
    if 0 in shape:
        raise ValueError(f"empty {what}, shape {shape}: pass {want} with at least one "
                         "frame of at least 1x1 pixels (the smallest FCN-8s takes, thanks to "
                         "its 100-px pad)")
    if isinstance(frames, jax.core.Tracer):
        return
    if not _all_finite(frames):  # one reduction on device (numpy input is copied there)
        raise ValueError(f"NaN or inf values in the {what}: pass finite ones (model.preprocess "
                         "of uint8 RGB frames gives them; check the decoding or the arithmetic "
                         "that made these)")


def _scan_frames(graphdef, staging, schedule, params, state: ClockState, frames: jax.Array):
    """Frames `[T, H, W, 3]` from `state`: `(state after them, RunOutput)`."""
    step = functools.partial(_frame_step, graphdef, staging, schedule, params)
    state, (scores, fired, change) = jax.lax.scan(step, state, frames)
    return state, RunOutput(scores, fired, change)




@functools.partial(jax.jit, static_argnames=(*STATIC_ARGNAMES, "frame_shape"))
def _init_state_jit(params, *, graphdef, staging, schedule, frame_shape) -> ClockState:
    return init_state(graphdef, staging, schedule, params, frame_shape)


@functools.partial(jax.jit, static_argnames=STATIC_ARGNAMES)
def _frame_step_jit(params, state, frame, *, graphdef, staging, schedule):
    return _frame_step(graphdef, staging, schedule, params, state, frame)


@functools.partial(jax.jit, static_argnames=STATIC_ARGNAMES)
def _scan_from_state_jit(params, state, frames, *, graphdef, staging, schedule):
    return _scan_frames(graphdef, staging, schedule, params, state, frames)


@functools.partial(jax.jit, static_argnames=(*STATIC_ARGNAMES, "dtype"))
def _run_video_jit(params, frames, *, graphdef, staging, schedule, dtype) -> RunOutput:
    params = cast_params(params, dtype)  # once per call, outside the scan
    state = init_state(graphdef, staging, schedule, params, frames.shape[1:])
    return _scan_frames(graphdef, staging, schedule, params, state, frames)[1]


_argmax_jit = jax.jit(functools.partial(jnp.argmax, axis=-1))


def compile_counts() -> dict[str, int]:
    """How many executables each jitted entry point holds in this process: one per
    (net structure, schedule, dtype, frame or chunk shape) it has met; a retrace would
    add one. Keys: run, init, step, scan."""
    jitted = {"run": _run_video_jit, "init": _init_state_jit, "step": _frame_step_jit,
              "scan": _scan_from_state_jit}
    return {name: fn._cache_size() for name, fn in jitted.items()}


def run(
    net: nnx.Module,
    frames: jax.Array | np.ndarray,
    schedule: str | Schedule,
    *,
    dtype: Any = None,
    chunk: int | None = DEFAULT_CHUNK,
) -> RunOutput:
    """Runs a clockwork schedule over a video: jitted `lax.scan`s over frames.

    A video of at most `chunk` frames is one scan, compiled once per (net structure,
    schedule, dtype, frame shape). A longer one runs `chunk` frames at a time with the
    clock state carried across (`Clockwork.chunks`): the same results, with device
    memory bounded by the chunk, not the video; its outputs are then numpy arrays,
    moved to the host chunk by chunk.

    Args:
      net: a staged network (its class has a `staging`), e.g. `model.FCN8s`.
      frames: float32 `[T, H, W, 3]`, preprocessed; a numpy array of a long video
        stays on the host and reaches the device a chunk at a time.
      schedule: a `Schedule` or its name (`parse_schedule`).
      dtype: compute dtype of the activations ("float32", the default, or "bfloat16");
        the params are cast for the computation only.
      chunk: frames per scan; None: one scan whatever the length.

    Returns:
      `RunOutput(scores float32 [T, H, W, C], fired bool [T, N], change float32 [T])`.
    """
    prepared = prepare(net, schedule)
    dtype = compute_dtype(dtype)
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of frames or None, got {chunk}")
    check_frames(frames, 4, "frames")
    if chunk is not None and len(frames) > chunk:
        stream = Clockwork(net, prepared.schedule, dtype=dtype)
        parts = [jax.device_get(out) for out in stream.chunks(frames, chunk, checked=True)]
        return RunOutput(*(np.concatenate(leaf) for leaf in zip(*parts, strict=True)))
    return _run_video_jit(prepared.params, jnp.asarray(frames), dtype=dtype, **prepared.static)


class Clockwork:
    """Streaming clockwork for live video: `init` once, then `step` per frame (or
    `run_chunk` per block of frames).

    Gives exactly what `run` gives on the same frames. `step` is compiled once per
    frame shape, `run_chunk` once per chunk shape; neither retraces afterwards. The
    params are cast to the compute dtype once, here.

    Example:
      cw = Clockwork(net, "adaptive:0.25")
      state = cw.init((H, W, 3))
      for frame in stream:
        state, scores, fired = cw.step(state, frame)
    """

    def __init__(self, net: nnx.Module, schedule: str | Schedule, *, dtype: Any = None):
        prepared = prepare(net, schedule)
        self.schedule, self.staging = prepared.schedule, prepared.staging
        self.dtype = compute_dtype(dtype)
        self.graphdef = prepared.graphdef
        self.params = cast_params(prepared.params, self.dtype)
        self._cache_shapes: dict[tuple, list] = {}  # frame shape -> cache leaf shapes
        self._static = prepared.static

    def init(self, frame_shape: tuple[int, int, int]) -> ClockState:
        """The state before the first frame, for frames of shape `(H, W, 3)`."""
        frame_shape = tuple(int(d) for d in frame_shape)
        if len(frame_shape) != 3 or frame_shape[-1] != 3:
            raise ValueError(f"frame_shape must be (H, W, 3), got {frame_shape}")
        state = _init_state_jit(self.params, frame_shape=frame_shape, **self._static)
        self._cache_shapes[frame_shape] = [a.shape for a in jax.tree.leaves(state.cache)]
        return state

    def _check_state(self, state: ClockState, frame_shape: tuple) -> None:
        cache_shapes = self._cache_shapes.get(tuple(frame_shape))
        if cache_shapes != [a.shape for a in jax.tree.leaves(state.cache)]:
            raise ValueError(f"frames of shape {tuple(frame_shape)} do not match the state: "
                             "call init(frame_shape) for a stream of this size")

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
        check_frames(frame, 3, "frame")
        self._check_state(state, frame.shape)
        state, (scores, fired, _) = _frame_step_jit(self.params, state, frame, **self._static)
        return state, scores, fired

    def pure_step(self, params: Any, state: ClockState, frame: jax.Array
                  ) -> tuple[ClockState, jax.Array, jax.Array]:
        """`step` as a pure, unchecked function of the params (`self.params`, already cast),
        for transformations such as `jax.export` (`cwfcn.export`)."""
        state, (scores, fired, _) = _frame_step(self.graphdef, self.staging, self.schedule,
                                                params, state, frame)
        return state, scores, fired

    def run_chunk(self, state: ClockState, frames: jax.Array) -> tuple[ClockState, RunOutput]:
        """Processes a block of frames in one scan, carrying the clock state.

        Args:
          state: from `init` or the previous `run_chunk` / `step`.
          frames: float32 `[t, H, W, 3]`, preprocessed, of the frame shape given to `init`.

        Returns:
          `(state, RunOutput(scores [t, H, W, C], fired [t, N], change [t]))`.
        """
        check_frames(frames, 4, "frames")
        self._check_state(state, frames.shape[1:])
        return _scan_from_state_jit(self.params, state, jnp.asarray(frames), **self._static)

    def chunks(
        self, frames: jax.Array | np.ndarray, chunk: int = DEFAULT_CHUNK, *, checked: bool = False
    ) -> Iterator[RunOutput]:
        """A whole video, `chunk` frames per scan: yields each chunk's `RunOutput`.

        Only one chunk of frames and outputs is on the device at a time. The last chunk
        is padded with its last frame to the full length (so it needs no compile of its
        own) and its outputs cut back.

        Args:
          frames: float32 `[T, H, W, 3]`, preprocessed (numpy stays on the host).
          chunk: frames per scan.
          checked: the frames were already validated (by `run`).

        Raises:
          ValueError: bad frames (`check_frames`), or a chunk that is not an int >= 1.
        """
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an int >= 1 (frames per scan), got {chunk!r}")
        if not checked:
            check_frames(frames, 4, "frames")
        scan = functools.partial(_scan_from_state_jit, self.params, **self._static)
        return _chunked(self.init(frames.shape[1:]), scan, frames, chunk)


def _chunk_parts(frames: jax.Array | np.ndarray, chunk: int) -> Iterator[tuple[jax.Array, int]]:
    """`(part [chunk, H, W, 3], frames it holds)` of a video, `chunk` frames at a time; a
    short last part of a longer video is padded with its last frame (on the host: no op
    of its own to compile), so every scan after the first has one shape."""
    for start in range(0, len(frames), chunk):
        part = frames[start : start + chunk]
        length = len(part)
        if start and length < chunk:
            part = np.asarray(part)
            part = np.concatenate([part, np.repeat(part[-1:], chunk - length, 0)])
        yield jnp.asarray(part), length


def _chunked(state: ClockState, scan: Callable, frames, chunk: int) -> Iterator[RunOutput]:
    """Each chunk's `RunOutput` of `scan(state, part) -> (state, RunOutput)` over a video."""
    for part, length in _chunk_parts(frames, chunk):
        state, out = scan(state, part)
        yield RunOutput(*(leaf[:length] for leaf in out))


class CompiledRun:
    """`run` of one net and schedule, compiled ahead of time per video shape.

    `compile(shape)` lowers and compiles what `run` runs on a video of that shape (one
    scan, or for a video longer than `chunk` the initial state and a chunk's scan)
    without running any frame; calling runs only compiled executables (compiling first
    for a shape not compiled yet). The programs are `run`'s own, so the outputs are
    exactly `run`'s. An evaluation that times its runs compiles first, then times, and
    never runs a video just to compile it.

    Example:
      runs = CompiledRun(net, "adaptive:0.25")
      seconds = runs.compile(frames.shape)
      out = runs(frames)  # == run(net, frames, "adaptive:0.25")
    """

    def __init__(self, net: nnx.Module, schedule: str | Schedule, *, dtype: Any = None,
                 chunk: int = DEFAULT_CHUNK, classes: bool = False):
        """See `run` for net, schedule, dtype and chunk; `classes`: the outputs' scores are
        the class maps, int32 `[T, H, W]` (their argmax, per chunk on the device), not the
        scores."""
        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of frames, got {chunk}")
        prepared = prepare(net, schedule)
        self.schedule, self.chunk, self.classes = prepared.schedule, chunk, classes
        self.dtype = compute_dtype(dtype)
        self._params = prepared.params
        self._cast = cast_params(prepared.params, self.dtype)  # what the chunked scans take
        self._run = compilation.Executables(_run_video_jit, dtype=self.dtype, **prepared.static)
        self._init = compilation.Executables(_init_state_jit, **prepared.static)
        self._scan = compilation.Executables(_scan_from_state_jit, **prepared.static)
        self._argmax = compilation.Executables(_argmax_jit)

    @property
    def compile_seconds(self) -> float:
        """The time spent compiling so far."""
        return sum(e.compile_seconds for e in (self._run, self._init, self._scan, self._argmax))

    def compile(self, shape: tuple[int, ...], *, stream: bool = False) -> float:
        """Compiles for videos of `shape` `[T, H, W, 3]` (float32, preprocessed), running
        nothing; returns the seconds it took (0 for a shape compiled already). With
        `stream`: what `start` and `advance` run on parts of `shape`."""
        shape = tuple(int(d) for d in shape)
        if len(shape) != 4 or shape[-1] != 3 or 0 in shape:
            raise ValueError(f"a video shape is [T, H, W, 3] with T, H, W >= 1, got {shape}")
        before = self.compile_seconds
        if shape[0] <= self.chunk and not stream:
            out = self._run.compile(self._params, jax.ShapeDtypeStruct(shape, jnp.float32))
            scores = out.out_info.scores
        else:
            state = self._init.compile(self._cast, frame_shape=shape[1:]).out_info
            part = jax.ShapeDtypeStruct((shape[0] if stream else self.chunk, *shape[1:]),
                                        jnp.float32)
            scores = self._scan.compile(self._cast, state, part).out_info[1].scores
        if self.classes:
            self._argmax.compile(scores)
        return self.compile_seconds - before

    def start(self, frame_shape: tuple[int, int, int]) -> ClockState:
        """The clock state before a video's first frame, for `advance`."""
        return self._init(self._cast, frame_shape=tuple(int(d) for d in frame_shape))

    def advance(self, state: ClockState, part: jax.Array) -> tuple[ClockState, RunOutput]:
        """Runs `part` float32 `[t, H, W, 3]` (preprocessed) from `state`: `(the state after
        it, its RunOutput)` on the device (class maps for `classes`). These are the chunked
        `run`'s programs: `start`, then `advance` on each part of a video read as it comes,
        gives `run`'s outputs."""
        state, out = self._scan(self._cast, state, part)
        return state, self._maps(out)

    def __call__(self, frames: jax.Array | np.ndarray) -> RunOutput:
        """`run(net, frames, schedule, dtype=, chunk=)` (class maps for `classes`): one
        `RunOutput` on the device, or for a video longer than `chunk` numpy arrays moved
        to the host chunk by chunk."""
        check_frames(frames, 4, "frames")
        self.compile(frames.shape)
        if len(frames) <= self.chunk:
            return self._maps(self._run(self._params, jnp.asarray(frames)))

        state = self.start(frames.shape[1:])  # the maps on whole chunks: one shape, compiled
        parts = [jax.device_get(out)
                 for out in _chunked(state, self.advance, frames, self.chunk)]
        return RunOutput(*(np.concatenate(leaf) for leaf in zip(*parts, strict=True)))

    def _maps(self, out: RunOutput) -> RunOutput:
        return out._replace(scores=self._argmax(out.scores)) if self.classes else out
