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
  adaptive-pixel:theta  the same, but the clock watches the input: the last stage
                  fires when the mean absolute difference of the frame's pixels from
                  the frame at its last firing, over 255, is >= theta (the paper's
                  Fig. 7 pixel-difference clock);
  pipeline3       frame t fuses S1(t), S2(t-1), S3(t-2): each stage reads the
                  previous step's output of the stage before it, so the stages of
                  one step are independent and can run concurrently;
  pipeline2       S1+S2 on t, S3 on t-1.
Frame 0 fires every stage. Pipelines fill as the authors' code does (clockwork-fcn
lib/run_net.py, pipeline_fill_3stage): frame 0 runs the whole net, and each later step
turns on one more lag, deepest first (`fill_lags`), so pipeline3's frame 1 is a pipeline2
step and frame 2 fuses S1(2), S2(1), S3(1).

The engine knows nothing of FCN-8s: any `nnx.Module` whose class has a `staging`
attribute plugs in.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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
      signal: what the adaptive clock compares with its last firing: "scores" (the
        class argmax of the staging's clock scores) or "pixels" (the input frame).
    """

    name: str
    periods: tuple[int, ...] = (1, 1, 1)
    lags: tuple[int, ...] = (0, 0, 0)
    theta: float | None = None
    signal: str = "scores"

    @property
    def num_stages(self) -> int:
        return len(self.periods)

    @property
    def pipelined(self) -> bool:
        return any(self.lags)

    @property
    def cycle(self) -> int:
        """Frames after which a fixed schedule repeats: the lcm of its periods (1 for the
        others). Frame t's state is that of phase t % cycle since the last full firing."""
        return 1 if self.theta is not None or self.pipelined else math.lcm(*self.periods)


FIXED_SCHEDULES = {
    "oracle": (1, 1, 1),
    "skip": (2, 2, 2),
    "exponential": (1, 2, 4),
    "alternating": (1, 1, 2),
}
PIPELINES = {"pipeline2": (0, 0, 1), "pipeline3": (0, 1, 1)}
DEFAULT_THETA = 0.25  # the paper's operating point on YouTube-Objects
# The adaptive clocks by schedule name: what each compares with its last firing.
ADAPTIVE_SIGNALS = {"adaptive": "scores", "adaptive-pixel": "pixels"}
SCHEDULE_HELP = (
    "oracle, skip, exponential, alternating, periods:a,b,c (positive integers), "
    "adaptive or adaptive:theta (0 <= theta <= 1), adaptive-pixel:theta (the pixel-"
    "difference clock), pipeline2, pipeline3"
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
    if head in ADAPTIVE_SIGNALS:
        theta = DEFAULT_THETA
        if arg:
            try:
                theta = float(arg)
            except ValueError:
                theta = math.nan
        if not 0.0 <= theta <= 1.0:  # also rejects nan
            raise ValueError(f"bad schedule {spec!r}: theta must be a number in [0, 1], "
                             f"e.g. {head}:0.25")
        return Schedule(f"{head}:{theta:g}", theta=theta, signal=ADAPTIVE_SIGNALS[head])
    raise ValueError(f"unknown schedule {spec!r}; use one of: {SCHEDULE_HELP}")


class ClockState(NamedTuple):
    """The carry of the scan (a pytree): everything a frame step needs from the past.

    Attributes:
      cache: the latest output of each stage (pytrees as the stages return them).
      t: int32 scalar, the index of the next frame.
      ref: the adaptive clock's signal at the last firing of the gated stage
        (`clock_signal`: int32 `[N, h, w]` class maps, or the frames `[N, H, W, 3]` for
        the pixel clock; shape `[0]` for other schedules).
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


def _sequential_step(net, staging, schedule, state, x, t):
    """Frames with every lag 0: stage k reads stage k-1's output of this frame."""
    n = len(staging.stages)
    # A stage with period 1 fires on every frame: a plain call, no branch at all.
    fires = [True if p == 1 else t % p == 0 for p in schedule.periods]
    outs: list = []
    ref, change = state.ref, jnp.zeros((), jnp.float32)
    for k, stage in enumerate(staging.stages):
        if schedule.theta is not None and k == n - 1:
            signal = clock_signal(staging, schedule, x, (*outs, state.cache[k]))
            change = jnp.where(t == 0, 0.0, clock_change(schedule, signal, state.ref)[0])
            fires[k] = (t == 0) | (change >= schedule.theta)
            ref = jnp.where(fires[k], signal, state.ref)
        src = x if k == 0 else outs[k - 1]
        if fires[k] is True:
            outs.append(stage(net, src))
        else:
            outs.append(_cond(fires[k], functools.partial(stage, net, src), state.cache[k]))
    return tuple(outs), jnp.stack([jnp.asarray(f) for f in fires]), ref, change


def _pipelined_step(net, staging, lags, state, x):
    """Lagged stages read the previous step's cache, so no stage waits for another."""
    outs = []
    for k, stage in enumerate(staging.stages):
        src = x if k == 0 else (state.cache[k - 1] if lags[k] else outs[k - 1])
        outs.append(stage(net, src))
    fired = jnp.ones((len(outs),), bool)
    return tuple(outs), fired, state.ref, jnp.zeros((), jnp.float32)


def _stages_step(net, staging, schedule, state, x, t):
    """The stages of one step, `x` `[N, H, W, 3]`: `(outputs, fired [N_stages], ref, change)`.

    Pipelines lag on the previous step's outputs; while they fill (`fill_lags`), step t
    has only the deepest t lags on, so frame 0 runs the net straight through.
    """
    if not schedule.pipelined:
        return _sequential_step(net, staging, schedule, state, x, t)
    depth = sum(1 for lag in schedule.lags if lag)
    branches = [functools.partial(_pipelined_step, net, staging, fill_lags(schedule, i), state, x)
                for i in range(depth + 1)]
    return jax.lax.switch(jnp.minimum(t, depth), branches)


def _frame_step(graphdef, staging, schedule, params, state: ClockState, frame: jax.Array):
    """One frame: `(state, frame [H, W, 3]) -> (state, (scores [H, W, C], fired [N], change))`."""
    net = nnx.merge(graphdef, params)
    x, t = frame[None].astype(_params_dtype(params)), state.t
    cache, fired, ref, change = _stages_step(net, staging, schedule, state, x, t)
    scores = staging.fuse(net, cache, frame.shape[:2])[0].astype(jnp.float32)
    return ClockState(cache, t + 1, ref, change), (scores, fired, change)


def _params_dtype(params) -> jnp.dtype:
    """The compute dtype the params were cast to: that of their floating leaves."""
    leaves = [p for p in jax.tree.leaves(params) if jnp.issubdtype(p.dtype, jnp.floating)]
    return leaves[0].dtype if leaves else jnp.dtype(jnp.float32)


def _init_state(graphdef, staging, schedule, params, frame_shape) -> ClockState:
    """Zero caches of the right shapes (from `jax.eval_shape`; nothing is computed)."""
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
    return ClockState(cache, jnp.zeros((), jnp.int32), ref, jnp.zeros((), jnp.float32))


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    return jnp.isfinite(x).all()


def _check_frames(frames: Any, rank: int, what: str) -> None:
    """Raises ValueError unless `frames` is float `[T, H, W, 3]` (rank 4) or `[H, W, 3]` (rank
    3) with T, H, W >= 1 and no NaN or inf (not checked on tracers: nothing is concrete)."""
    shape = tuple(frames.shape)
    want = "[T, H, W, 3]" if rank == 4 else "[H, W, 3]"
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


def _scan(graphdef, staging, schedule, params, state: ClockState, frames: jax.Array):
    """Frames `[T, H, W, 3]` from `state`: `(state after them, RunOutput)`."""
    step = functools.partial(_frame_step, graphdef, staging, schedule, params)
    state, (scores, fired, change) = jax.lax.scan(step, state, frames)
    return state, RunOutput(scores, fired, change)


# The jitted entry points take the net's structure, staging and schedule as static
# arguments, so their compile caches are shared by every `run` and `Clockwork` of the
# same net structure: one compile per (schedule, dtype, frame shape), process-wide.
_STATIC = ("graphdef", "staging", "schedule")


@functools.partial(jax.jit, static_argnames=(*_STATIC, "frame_shape"))
def _init_jit(params, *, graphdef, staging, schedule, frame_shape) -> ClockState:
    return _init_state(graphdef, staging, schedule, params, frame_shape)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _step_jit(params, state, frame, *, graphdef, staging, schedule):
    return _frame_step(graphdef, staging, schedule, params, state, frame)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _scan_jit(params, state, frames, *, graphdef, staging, schedule):
    return _scan(graphdef, staging, schedule, params, state, frames)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "dtype"))
def _run(params, frames, *, graphdef, staging, schedule, dtype) -> RunOutput:
    params = cast_params(params, dtype)  # once per call, outside the scan
    state = _init_state(graphdef, staging, schedule, params, frames.shape[1:])
    return _scan(graphdef, staging, schedule, params, state, frames)[1]


def compile_counts() -> dict[str, int]:
    """How many executables each jitted entry point holds in this process: one per
    (net structure, schedule, dtype, frame or chunk shape) it has met; a retrace would
    add one. Keys: run, init, step, scan."""
    jitted = {"run": _run, "init": _init_jit, "step": _step_jit, "scan": _scan_jit}
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
    schedule = parse_schedule(schedule)
    staging = staging_of(net)
    _check_compatible(staging, schedule)
    dtype = compute_dtype(dtype)
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of frames or None, got {chunk}")
    _check_frames(frames, 4, "frames")
    if chunk is not None and len(frames) > chunk:
        parts = [jax.device_get(out) for out in
                 Clockwork(net, schedule, dtype=dtype).chunks(frames, chunk, checked=True)]
        return RunOutput(*(np.concatenate(leaf) for leaf in zip(*parts, strict=True)))
    graphdef, params = nnx.split(net)
    return _run(params, jnp.asarray(frames), graphdef=graphdef, staging=staging,
                schedule=schedule, dtype=dtype)


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
        self.schedule = parse_schedule(schedule)
        self.staging = staging_of(net)
        _check_compatible(self.staging, self.schedule)
        self.dtype = compute_dtype(dtype)
        self.graphdef, params = nnx.split(net)
        self.params = cast_params(params, self.dtype)
        self._cache_shapes: dict[tuple, list] = {}  # frame shape -> cache leaf shapes
        self._static = {"graphdef": self.graphdef, "staging": self.staging,
                        "schedule": self.schedule}

    def init(self, frame_shape: tuple[int, int, int]) -> ClockState:
        """The state before the first frame, for frames of shape `(H, W, 3)`."""
        frame_shape = tuple(int(d) for d in frame_shape)
        if len(frame_shape) != 3 or frame_shape[-1] != 3:
            raise ValueError(f"frame_shape must be (H, W, 3), got {frame_shape}")
        state = _init_jit(self.params, frame_shape=frame_shape, **self._static)
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
        _check_frames(frame, 3, "frame")
        self._check_state(state, frame.shape)
        state, (scores, fired, _) = _step_jit(self.params, state, frame, **self._static)
        return state, scores, fired

    def run_chunk(self, state: ClockState, frames: jax.Array) -> tuple[ClockState, RunOutput]:
        """Processes a block of frames in one scan, carrying the clock state.

        Args:
          state: from `init` or the previous `run_chunk` / `step`.
          frames: float32 `[t, H, W, 3]`, preprocessed, of the frame shape given to `init`.

        Returns:
          `(state, RunOutput(scores [t, H, W, C], fired [t, N], change [t]))`.
        """
        _check_frames(frames, 4, "frames")
        self._check_state(state, frames.shape[1:])
        return _scan_jit(self.params, state, jnp.asarray(frames), **self._static)

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
        """
        if not checked:
            _check_frames(frames, 4, "frames")
        state = self.init(frames.shape[1:])
        for start in range(0, len(frames), chunk):
            part = frames[start : start + chunk]
            n = len(part)
            if start and n < chunk:  # padded on the host: no op of its own to compile
                part = np.asarray(part)
                part = np.concatenate([part, np.repeat(part[-1:], chunk - n, 0)])
            state, out = _scan_jit(self.params, state, jnp.asarray(part), **self._static)
            yield RunOutput(*(leaf[:n] for leaf in out))
