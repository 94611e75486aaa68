"""Scores clockwork schedules on labelled videos: the paper's metrics plus cost.

For each schedule: pixel acc / mean acc / mean IU / fw IU over one confusion
matrix summed across videos, the same on the boundary band, the temporal
difference of the predicted labels (mean and std across videos), the fraction of
frames each stage fired, the FLOP fraction of oracle and the measured ms/frame; beyond
the paper, VSPW's video consistency (mVC_8, mVC_16) and mean IU by the frames since the
last stage fired.

`evaluate_schedule` is two pieces: `ClipScorer.score` turns one clip into a record (JSON-able
once `record_on_host` fetches it: what a `results.Journal` holds), and `aggregate` turns the
records into the table's row. The metrics themselves are `metrics`' (their jax paths run on
the device). The truncated baselines are the registry's schedules ("pool4": `Schedule.keep`
= 2), scored with FCN-8s's own skip scores or with a `baseline_net` of their own.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from cwfcn import (
    clockwork,
    compilation,
    control,
    cost,
    distributed,
    hostmem,
    metrics,
    model,
    results,
    schedules,
    timing,
)
from cwfcn.data import protocol
from cwfcn.data.prefetch import prefetch
from cwfcn.data.translate import SCORED_FRAMES

Video = tuple[np.ndarray, np.ndarray]  # frames uint8 RGB [T, H, W, 3], labels uint8 [T, H, W]
# The layout of a clip's record (`ClipScorer.score`); a journal made with another is stale.
RECORD_FORMAT = 5
# What one part of a video file run as it is read may hold: its frames and the net's scores,
# float32 (768x576 and 21 classes: 6 frames a part; 720p: 3; 4000x3000: 1).
STREAM_PART_BYTES = 256 * 2**20
# VSPW's video consistency windows: the row's mvc_8 and mvc_16 (`metrics.video_consistency`).
VC_WINDOWS = (8, 16)
# Mean IU by the frames since the last stage fired: ages 0..AGE_BUCKETS-1, then one bucket
# for AGE_BUCKETS and more (and for frames before its first firing: a baseline's, never).
AGE_BUCKETS = 8
# What measures the machine rather than the net's outputs: a clip record's fields and a
# row's (two runs of the same evaluation differ in these alone).
RECORD_TIMING = frozenset({"seconds", "seconds_runs", "others_cpu_s"})
ROW_TIMING = frozenset({"ms_per_frame", "ms_per_frame_runs", "others_cores", "timing_disturbed",
                        "wall_s", "compile_s", "latency_model_time", "time_fraction",
                        "time_fraction_range", "time_fraction_disturbed"})


def row_name(schedule: clockwork.Schedule, baseline_net: nnx.Module | None = None) -> str:
    """The name of a schedule's row: its own, except that a truncated baseline scored with
    FCN-8s's own skip scores (no `baseline_net`) says so: "pool4 (fcn8s)"."""
    if schedule.keep is None or baseline_net is not None:
        return schedule.name
    return f"{schedule.name} (fcn8s)"


def _check_baseline_net(schedule: clockwork.Schedule, baseline_net: nnx.Module | None) -> None:
    if baseline_net is None:
        return
    if schedule.keep is None:
        raise ValueError(f"a baseline net is for the truncated baselines "
                         f"{sorted(clockwork.BASELINES)}, not schedule {schedule.name!r}")
    if getattr(baseline_net, "stages", None) != schedule.keep:
        raise ValueError(f"baseline {schedule.name} needs a model.TruncatedFCN with stages="
                         f"{schedule.keep}, got {type(baseline_net).__name__}")


def _num_stages(net: nnx.Module) -> int:
    return len(clockwork.staging_of(net).stages)


@functools.partial(jax.jit, static_argnames=("graphdef", "keep"))
def _whole_net_classes(params, frames, *, graphdef, keep: int | None) -> jax.Array:
    net = nnx.merge(graphdef, params)
    return jnp.argmax(net(frames) if keep is None else net.truncated(frames, keep), -1)


class _CompiledBaseline:
    """Class maps of a truncated baseline on every frame, a chunk of frames per call: its
    own net whole, or FCN-8s cut after `schedule.keep` stages; compiled ahead of time
    (`compile`)."""

    def __init__(self, net, schedule: clockwork.Schedule, baseline_net, dtype):
        module, keep = (net, schedule.keep) if baseline_net is None else (baseline_net, None)
        graphdef, params = nnx.split(module)
        self._params, self._dtype = clockwork.cast_params(params, dtype), dtype
        self._classes = compilation.Executables(_whole_net_classes, graphdef=graphdef, keep=keep)
        self._stages, self._keep = _num_stages(net), schedule.keep

    @property
    def compile_seconds(self) -> float:
        return self._classes.compile_seconds

    def _chunks(self, length: int) -> list[slice]:
        chunk = clockwork.DEFAULT_CHUNK
        return [slice(i, min(i + chunk, length)) for i in range(0, length, chunk)]

    def compile(self, shape: tuple[int, ...], *, stream: bool = False) -> None:
        """Compiles for videos of `shape` `[T, H, W, 3]` (with `stream`: parts of that
        shape, `advance`), running nothing."""
        for part in [slice(0, shape[0])] if stream else self._chunks(shape[0]):
            self._classes.compile(self._params, jax.ShapeDtypeStruct(
                (part.stop - part.start, *shape[1:]), self._dtype))

    def __call__(self, frames):
        preds = [self._classes(self._params, jnp.asarray(frames[part], self._dtype))
                 for part in self._chunks(len(frames))]
        return jnp.concatenate(preds), *self._clock(len(frames))

    def _clock(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(fired, change) of `length` frames: the stages kept fire on every one."""
        fired = np.zeros((length, self._stages), bool)  # one column per stage of the net
        fired[:, : self._keep] = True
        return fired, np.zeros(length, np.float32)

    def start(self, frame_shape: tuple[int, int, int]) -> None:
        """No state: every frame runs alone (`clockwork.CompiledRun.start`'s place)."""
        del frame_shape

    def advance(self, state: None, part) -> tuple[None, tuple]:
        """`(None, (preds, fired, change))` of `part` `[t, H, W, 3]` (`CompiledRun.advance`)."""
        preds = self._classes(self._params, jnp.asarray(part, self._dtype))
        return state, (preds, *self._clock(len(part)))


def _compiled_maps(net, schedule: clockwork.Schedule, dtype, baseline_net
                   ) -> clockwork.CompiledRun | _CompiledBaseline:
    """What computes a schedule's class maps: `(frames) -> (preds int32 [T, H, W], fired
    [T, N], change [T])` after `compile(shape)`."""
    if schedule.keep is not None:
        return _CompiledBaseline(net, schedule, baseline_net, dtype)
    return clockwork.CompiledRun(net, schedule, dtype=dtype, classes=True)


def predict(
    net: nnx.Module, frames: jax.Array, schedule: str | clockwork.Schedule, *, dtype=None,
    baseline_net: nnx.Module | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class maps of a video under a schedule.

    A video of up to `clockwork.DEFAULT_CHUNK` frames is one scan; a longer one runs
    chunk by chunk, same results, memory bounded by the chunk (`clockwork.CompiledRun`).
    A truncated baseline (`Schedule.keep`) runs its net whole on every frame.

    Args:
      net: a staged net.
      frames: float32 `[T, H, W, 3]`, preprocessed.
      schedule: a schedule or its name (`clockwork.parse_schedule`), a truncated baseline
        ("pool4", "pool3") included.
      dtype: compute dtype ("float32" or "bfloat16"; see `clockwork.run`).
      baseline_net: a truncated baseline's separately trained net (`model.TruncatedFCN`
        with `stages == schedule.keep`); None: `net`'s own skip scores (`FCN8s.truncated`).

    Returns:
      preds int `[T, H, W]`, fired bool `[T, N]` (N: `net`'s stages), change float32 `[T]`.

    Raises:
      ValueError: a bad schedule, or a `baseline_net` that does not fit it.
    """
    schedule = clockwork.parse_schedule(schedule, _num_stages(net))
    _check_baseline_net(schedule, baseline_net)
    maps = _compiled_maps(net, schedule, clockwork.compute_dtype(dtype), baseline_net)
    preds, fired, change = _split_maps(maps(frames))
    return np.asarray(preds), fired, change


def _split_maps(out) -> tuple[Any, np.ndarray, np.ndarray]:
    """(preds, fired, change) of a `CompiledRun` (class maps) or baseline output."""
    preds, fired, change = out
    return preds, np.asarray(fired), np.asarray(change)


def _age_buckets(fired_last: jax.Array) -> jax.Array:
    """int32 `[T]`: each frame's bucket of frames since the last stage last fired (0 on a
    frame where it fires), capped at `AGE_BUCKETS`; frames before its first firing go in
    the last bucket too (never fired: a truncated baseline's every frame)."""
    t = jnp.arange(fired_last.shape[0], dtype=jnp.int32)
    last = jax.lax.cummax(jnp.where(fired_last, t, -1))  # the latest firing at or before t
    return jnp.where(last >= 0, jnp.minimum(t - last, AGE_BUCKETS), AGE_BUCKETS)


@functools.partial(jax.jit, static_argnames="num_classes")
def _clip_statistics(labels, bands, scored, preds, fired_last, lut, num_classes: int):
    """One clip's sufficient statistics, on the device (`metrics`' jax paths).

    Args:
      labels: uint8 `[S, H, W]` of the scored frames; bands: bool `[S, H, W]`, their
        boundary bands; scored: int32 `[S]`, their indices; preds: int `[T, H, W]`, the
        net's classes on every frame; fired_last: bool `[T]`, where the last stage fired;
        lut: int32 `[K]`, net class -> scored class.

    Returns:
      confusion int32 `[C, C]`, the band's confusion int32 `[C, C]`, the temporal
      difference float32 `[]` of the (mapped) predictions on every frame, the video
      consistency counts int32 `[len(VC_WINDOWS), 2]` (consistent, total per window
      length, over the runs of consecutive scored frames), and by age (`_age_buckets`)
      the confusions int32 `[AGE_BUCKETS + 1, C, C]` and scored frames int32
      `[AGE_BUCKETS + 1]`.
    """
    preds = lut[preds]
    scored_preds = preds[scored]
    hist = metrics.confusion(labels, scored_preds, num_classes)
    band_hist = metrics.band_confusion(labels, scored_preds, bands, num_classes)
    vc = jnp.stack([jnp.stack(metrics.video_consistency_counts(labels, scored_preds, k, scored))
                    for k in VC_WINDOWS])
    buckets = _age_buckets(fired_last)[scored]  # [S]
    # One confusion of (bucket, label) rows: row b * C + l, column the prediction.
    labels = labels.astype(jnp.int32)
    rows = jnp.where(labels < num_classes, buckets[:, None, None] * num_classes + labels, -1)
    by_age = metrics.confusion(rows, scored_preds, (AGE_BUCKETS + 1) * num_classes)
    age_hist = by_age[:, :num_classes].reshape(AGE_BUCKETS + 1, num_classes, num_classes)
    age_frames = jnp.zeros(AGE_BUCKETS + 1, int).at[buckets].add(1)
    return hist, band_hist, metrics.temporal_difference(preds), vc, age_hist, age_frames


@jax.jit
def _part_changes(before, preds, lut, length):
    """The sum, over the first `length` frames of a part, of the fraction of pixels whose
    (mapped) class differs from the frame before: `metrics.temporal_difference`'s terms,
    a video read part by part (the padding after `length` left out).

    Args:
      before: int `[H, W]`, the frame before the part's first (the previous part's last;
        the first frame itself at a video's start: frame 0 counts 0); preds: int
        `[t, H, W]`, the net's classes; lut: int32 `[K]`; length: int32 `[]`.

    Returns:
      float32 `[]`.
    """
    preds = lut[preds]
    earlier = jnp.concatenate([lut[before][None], preds[:-1]])
    changed = jnp.mean(preds != earlier, axis=(1, 2))
    return jnp.sum(jnp.where(jnp.arange(len(preds)) < length, changed, 0.0))


def part_frames(frame_shape: tuple[int, int, int], num_classes: int) -> int:
    """The frames of one part of a stream (`ClipScorer.score`): `clockwork.DEFAULT_CHUNK`,
    or fewer where its frames and scores (float32) would pass `STREAM_PART_BYTES`."""
    per_frame = frame_shape[0] * frame_shape[1] * (3 + num_classes) * 4
    return max(1, min(clockwork.DEFAULT_CHUNK, STREAM_PART_BYTES // per_frame))


class LabelledClip(NamedTuple):
    """A clip ready for scoring: its labels checked, its scored frames' bands computed.

    Attributes:
      clip: the clip.
      labels: uint8 `[S, H, W]`, the label maps of its scored frames.
      bands: bool `[S, H, W]`, their boundary bands (`metrics.boundary_mask`).
    """

    clip: protocol.Clip
    labels: np.ndarray
    bands: np.ndarray


def label_clip(clip: protocol.Clip, num_classes: int, boundary_radius: int = 5) -> LabelledClip:
    """The host work of scoring a clip (the evaluator runs it in the decode thread).

    Raises:
      ValueError: a label outside [0, num_classes) other than 255.
    """
    metrics.check_labels(clip.labels, num_classes)
    labels = clip.labels[list(clip.scored)]
    bands = np.stack([metrics.boundary_mask(label, boundary_radius) for label in labels])
    return LabelledClip(clip, labels, bands)


def _placed(k: int, videos: Iterable[protocol.Clip | Video], scored: slice
            ) -> Iterator[tuple[protocol.Place, int, protocol.Clip]]:
    """Schedule k's clips as they come, as (place, k, clip): its own place
    (`protocol.clips`), or (i, 0) for the i-th item; a bare (frames, labels) video is a
    clip scoring `scored`."""
    for i, item in enumerate(videos):
        clip = (item if isinstance(item, protocol.Clip | protocol.StreamClip)
                else protocol.whole(*item, scored, str(i)))
        yield clip.place or (i, 0), k, clip


def _labelled_clips(clips: Iterable[tuple[protocol.Place, int, protocol.Clip]],
                    num_classes: int, boundary_radius: int,
                    skip: Callable[[int, protocol.Place], bool]
                    ) -> Iterator[tuple[int, protocol.Place, LabelledClip | None]]:
    """`label_clip` of each (place, schedule k, clip) (a `StreamClip`, unlabelled, as it
    is); None for the clips `skip(k, place)` names (not checked or banded)."""
    for place, k, clip in clips:
        if skip(k, place):
            yield k, place, None
        elif isinstance(clip, protocol.StreamClip):
            yield k, place, clip
        else:
            yield k, place, label_clip(clip, num_classes, boundary_radius)


@dataclasses.dataclass
class _ShapeCosts:
    """What one frame shape costs, counted once: per-frame FLOPs of what a schedule runs
    (executed and dense, as fractions of the full net's) and the pipelines' modelled
    latency."""

    executed: cost.StageFlops
    dense: cost.StageFlops
    baseline: tuple[float, float] | None  # a baseline net's (executed, dense) fraction
    latency: tuple[float, float] | None  # a pipeline's (dense FLOPs, measured time) model

    @classmethod
    def count(cls, net, frame_shape, schedule: clockwork.Schedule, dtype,
              baseline_net) -> _ShapeCosts:
        executed = cost.stage_flops(net, frame_shape)
        dense = cost.stage_flops(net, frame_shape, dense=True)
        baseline = latency = None
        if schedule.keep is not None:
            module = net if baseline_net is None else baseline_net
            keep = schedule.keep if baseline_net is None else None
            baseline = tuple(
                cost.net_flops(module, frame_shape, _baseline_call(keep, dense=is_dense),
                               dense=is_dense) / full.total
                for is_dense, full in ((False, executed), (True, dense)))
        elif schedule.pipelined:
            seconds = cost.stage_seconds(net, frame_shape, dtype)
            latency = tuple(cost.pipeline_latency(schedule.lags, per_stage.stages,
                                                  per_stage.fuse)
                            for per_stage in (dense, seconds))
        return cls(executed, dense, baseline, latency)

    def clip_flops(self, fired: np.ndarray) -> tuple[float, float]:
        """(executed, dense) FLOPs a clip took, in full-net frames.

        Args:
          fired: bool `[T, N]`, the stages that computed on each frame.
        """
        if self.baseline is not None:
            return tuple(fraction * len(fired) for fraction in self.baseline)
        return tuple(cost.flop_fraction(fired, flops) * len(fired)
                     for flops in (self.executed, self.dense))


def _baseline_call(keep: int | None, *, dense: bool):
    """`call(module, frames)` of a baseline for `cost.net_flops`: a TruncatedFCN (keep
    None) or FCN-8s cut after `keep` stages."""
    if keep is None:
        return lambda m, f: m(f, dense=dense)
    return lambda m, f: m.truncated(f, keep, dense=dense)


def scored_classes(net: nnx.Module, pred_lut: Sequence[int] | None = None) -> int:
    """The number of classes scored: the net's, or those `pred_lut` maps them to.

    Raises:
      ValueError: `pred_lut` does not map every class of the net.
    """
    if pred_lut is None:
        return net.num_classes
    if len(pred_lut) != net.num_classes:
        raise ValueError(f"pred_lut maps {len(pred_lut)} classes but the net predicts "
                         f"{net.num_classes}")
    return int(np.max(pred_lut)) + 1


class ClipScorer:
    """Scores the clips of one schedule, one clip at a time (`score`).

    What the first clip of each frame shape runs is compiled ahead of time, untimed
    (`clockwork.CompiledRun`, `compilation.Executables`): no clip is run just to compile
    it. The time spent so is `compile_seconds`.

    Attributes:
      schedule: the schedule, bound to the net's stages.
      name: the row's name (`row_name`), which also keys the journal.
      num_classes: the classes scored (`scored_classes`).
      compile_seconds: the time spent compiling so far.
      repeats: how many times each clip's run is timed (the first run's outputs count).
    """

    def __init__(self, net: nnx.Module, schedule: str | clockwork.Schedule, *,
                 mean_bgr: Sequence[float], pred_lut: Sequence[int] | None = None,
                 dtype=None, baseline_net: nnx.Module | None = None, repeats: int = 1):
        """See `evaluate_schedule` for the arguments.

        Raises:
          ValueError: a bad schedule, a `baseline_net` that does not fit it, or a
            `pred_lut` that does not fit the net.
        """
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1 (timed runs of each clip), got {repeats}")
        self.net, self.mean_bgr, self.baseline_net = net, mean_bgr, baseline_net
        self.repeats = repeats
        self.schedule = clockwork.parse_schedule(schedule, _num_stages(net))
        _check_baseline_net(self.schedule, baseline_net)
        self.name = row_name(self.schedule, baseline_net)
        self.num_classes = scored_classes(net, pred_lut)
        lut = np.arange(net.num_classes) if pred_lut is None else np.asarray(pred_lut)
        self.lut = jnp.asarray(lut, jnp.int32)
        self.dtype = clockwork.compute_dtype(dtype)
        self._maps = _compiled_maps(net, self.schedule, self.dtype, baseline_net)
        self._statistics = compilation.Executables(_clip_statistics,
                                                   num_classes=self.num_classes)
        self._changes = compilation.Executables(_part_changes)
        # One fused program, one float32 buffer a part (eager ops would make three).
        self._preprocess = jax.jit(functools.partial(model.preprocess, mean_bgr=mean_bgr))
        self._costs: dict[tuple[int, ...], _ShapeCosts] = {}

    @property
    def compile_seconds(self) -> float:
        """The time spent compiling so far."""
        return (self._statistics.compile_seconds + self._maps.compile_seconds
                + self._changes.compile_seconds)

    def score(self, labelled: LabelledClip | protocol.StreamClip,
              on_maps: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None
              ) -> dict:
        """One clip's record: its statistics (left on the device: `record_on_host` fetches
        them), its clock and its cost.

        A `protocol.StreamClip` (a video file) is run as it is decoded, `part_frames` at
        a time, its clock state carried: memory is bounded by a part, whatever
        the video's length, and the outputs are those of one run over the whole video.
        It has no labels: its confusions are zero, its frames all scored and counted.

        Args:
          labelled: the clip (`label_clip`), or a `protocol.StreamClip`.
          on_maps: called with the frames uint8 `[t, H, W, 3]`, their class maps int
            `[t, H, W]` (the net's classes) and firings bool `[t, N]`: once with the
            whole clip, or part by part, in order, for a stream (an overlay written as
            the run goes).

        Returns:
          A dict, the same keys as `record_on_host` gives: hist int `[C, C]` and band_hist
          (the band's) confusions, td (the temporal difference of the predictions on every
          frame), fired bool `[T, N]`, change float `[T]` (the adaptive clock's), frames
          (T), seconds (the net and the argmax: the fastest of `repeats` timed runs; a
          stream's parts each their fastest), seconds_runs (each run's), others_cpu_s (the
          CPU seconds other processes took meanwhile, `timing.time_runs`), flops ((executed,
          dense) FLOPs in full-net frames), fired_ref int `[N]` (firings on the frames the
          reference counts), denominator (the frames it divides by), latency (a pipeline's
          modelled (FLOPs, time) step latency, as fractions of the full net's; ()
          otherwise), vc int `[len(VC_WINDOWS), 2]` (video consistency counts (consistent,
          total) per window length of `VC_WINDOWS`, `metrics.video_consistency_counts`,
          windows of consecutive scored frames only), age_hist int `[AGE_BUCKETS + 1, C, C]`
          (the confusion of the scored frames by their frames since the last stage fired,
          `AGE_BUCKETS` and more, or never, last) and age_frames int `[AGE_BUCKETS + 1]`
          (their scored frames).
        """
        if isinstance(labelled, protocol.StreamClip):
            return self._score_stream(labelled, on_maps)
        clip, labels, bands = labelled
        frames = model.preprocess(clip.frames, self.mean_bgr)
        scored = jnp.asarray(clip.scored, jnp.int32)
        if frames.shape not in self._costs:  # compile outside the timed region
            self._compile(frames.shape)
            preds = jax.ShapeDtypeStruct(frames.shape[:3], jnp.int32)  # the class maps
            fired_last = jax.ShapeDtypeStruct(frames.shape[:1], jnp.bool_)
            self._statistics.compile(labels, bands, scored, preds, fired_last, self.lut)
        out, runs = timing.time_runs(lambda: self._maps(frames), self.repeats)
        preds, fired, change = _split_maps(out)
        if on_maps is not None:
            on_maps(clip.frames, np.asarray(preds), fired)
        hist, band_hist, td, vc, age_hist, age_frames = self._statistics(
            labels, bands, scored, preds, np.asarray(fired, bool)[:, -1], self.lut)
        shape_costs = self._costs[frames.shape]
        return {
            "hist": hist, "band_hist": band_hist, "td": td, "fired": fired, "change": change,
            "frames": len(frames), "seconds": min(runs.seconds),
            "seconds_runs": list(runs.seconds), "others_cpu_s": runs.others_cpu_s,
            "flops": shape_costs.clip_flops(fired),
            "fired_ref": np.asarray(fired)[list(clip.counted)].sum(0),
            "denominator": clip.denominator, "latency": shape_costs.latency or (),
            "vc": vc, "age_hist": age_hist, "age_frames": age_frames,
        }

    def _compile(self, shape: tuple[int, ...], *, stream: bool = False) -> None:
        """Compiles the class maps for videos (with `stream`: parts) of `shape` and counts
        what a frame of it costs."""
        self._maps.compile(shape, stream=stream)
        self._costs[shape] = _ShapeCosts.count(self.net, shape[1:], self.schedule, self.dtype,
                                               self.baseline_net)

    def _score_stream(self, clip: protocol.StreamClip, on_maps) -> dict:
        """`score` of a stream: decoded a part ahead in a thread, run part by part."""
        fired, change, fastest, runs_total, others = [], [], 0.0, np.zeros(self.repeats), 0.0
        td, before, state, shape = 0.0, None, None, None
        size = part_frames(clip.head(1).shape[1:], self.net.num_classes)
        bar = tqdm(total=clip.length, desc=self.name, unit="frame", file=sys.stderr,
                   leave=False)
        with prefetch(clip.chunks(size), size=1) as parts, bar:
            for part, length in parts:
                bar.update(length)
                frames = self._preprocess(part)
                if shape is None:  # compile outside the timed region
                    shape = frames.shape
                    if shape not in self._costs:
                        self._compile(shape, stream=True)
                    state = self._maps.start(shape[1:])
                (state, out), runs = timing.time_runs(
                    functools.partial(self._maps.advance, state, frames), self.repeats)
                preds, part_fired, part_change = out
                before = preds[0] if before is None else before
                td = td + self._changes(before, preds, self.lut, jnp.int32(length))
                before = preds[length - 1]
                fired.append(np.asarray(part_fired, bool)[:length])
                change.append(np.asarray(part_change)[:length])
                fastest += min(runs.seconds)
                runs_total += runs.seconds
                others += runs.others_cpu_s
                if on_maps is not None:
                    on_maps(part[:length], np.asarray(preds[:length]), fired[-1])
                del part, frames, out, preds  # before the next part is made: one at a time
                hostmem.release_freed()  # or the heap's peak creeps up with the length
        fired = np.concatenate(fired)
        c, length = self.num_classes, len(fired)
        ages = np.asarray(_age_buckets(jnp.asarray(fired[:, -1])))  # every frame is scored
        return {
            "hist": np.zeros((c, c), np.int64), "band_hist": np.zeros((c, c), np.int64),
            "td": td / length, "fired": fired, "change": np.concatenate(change),
            "frames": length, "seconds": fastest, "seconds_runs": runs_total.tolist(),
            "others_cpu_s": others, "flops": self._costs[shape].clip_flops(fired),
            "fired_ref": fired.sum(0), "denominator": length,
            "latency": self._costs[shape].latency or (),
            "vc": np.zeros((len(VC_WINDOWS), 2), np.int64),
            "age_hist": np.zeros((AGE_BUCKETS + 1, c, c), np.int64),
            "age_frames": np.bincount(ages, minlength=AGE_BUCKETS + 1),
        }


def record_on_host(record: dict) -> dict:
    """A clip's record with its device values fetched: plain JSON-able values (what a
    journal holds). A record on the host already comes back equal."""
    fetched = jax.device_get(record)
    return {"hist": np.asarray(fetched["hist"]).tolist(),
            "band_hist": np.asarray(fetched["band_hist"]).tolist(), "td": float(fetched["td"]),
            **{k: np.asarray(v).tolist() for k, v in fetched.items()
               if k not in ("hist", "band_hist", "td")}}


def _gather(payload) -> list:
    """Every process's JSON-able `payload`, in process order: exchanged as JSON bytes with
    `multihost_utils.process_allgather`, so floats and int64 counts cross exactly. Entered
    once every process has arrived (`distributed.all_arrived`: under `watch_peers`, a
    process that died meanwhile ends the others, named, instead of a wait without bound)."""
    distributed.all_arrived()
    data = np.frombuffer(json.dumps(payload).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int32))[:, 0]
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:n])) for row, n in zip(rows, sizes, strict=True)]


def evaluate_schedule(
    net: nnx.Module,
    videos: Iterable[protocol.Clip | Video],
    schedule: str | clockwork.Schedule,
    *,
    mean_bgr: Sequence[float],
    baseline_net: nnx.Module | None = None,
    on_first_clip: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    **options,
) -> dict:
    """Runs one schedule over every clip and scores it: `ClipScorer.score` per clip, then
    `aggregate` of the records.

    Decoding, the label check and the boundary bands run in a background thread, ahead
    of the net; the confusion matrices and temporal differences are computed on the
    device and fetched once at the end, so the host never waits on metrics.

    Args:
      net: a staged net with `num_classes` (e.g. `model.FCN8s`).
      videos: the clips the protocol runs for this schedule (`sources.Source.clips`), in
        their places' order; a plain (frames uint8 RGB `[T, H, W, 3]`, labels uint8
        `[T, H, W]`, 255 = ignore) video is a clip scoring `scored` of its frames, and the
        i-th item without a place has place (i, 0).
      schedule: a schedule or its name (`clockwork.parse_schedule`), the truncated
        baselines "pool4" / "pool3" included.
      mean_bgr: the data set's mean, BGR (`datasets.get(name).mean_bgr`).
      scored: the frames scored of plain videos (clips name their own).
      boundary_radius: radius of the boundary band.
      pred_lut: the net's class -> the labels' class (YouTube-Objects: VOC's 21 -> 11);
        None when the net predicts the label classes.
      dtype: compute dtype ("float32" or "bfloat16").
      baseline_net: a truncated baseline's separately trained net (`model.TruncatedFCN`
        with `stages == schedule.keep`), its row named as the schedule ("pool4"); None:
        FCN-8s's own skip scores stand in, and the row says so ("pool4 (fcn8s)").
      journal: where each clip's record goes as soon as it is done (then fetched per
        clip); clips it already holds for this row are not run again. Records are keyed
        by the clip's place, so with `shard` each process keeps its own journal.
      shard: (process index, process count) of a multi-process run (`jax.process_index()`,
        `jax.process_count()`): this process runs only the clips of videos i with
        i % count == index, its place's first part (the others are not checked or
        banded; `Source.clips(..., shard=)` does not even read them), then the per-clip
        records of every process are gathered, so every process returns the metrics of
        one process running them all (wall_s: the slowest process's).
      repeats: how many times each clip's run is timed, back to back (>= 1); its time is
        the fastest, and the row reports the spread over the runs (`add_speedups`).
      on_first_clip: `ClipScorer.score`'s `on_maps` for the clip at place (0, 0) (its
        frames, class maps and firings: at once, or part by part for a stream), if this
        process scores it (not when the journal holds it): an overlay video written from
        the scored run, as it goes.

    Returns:
      The table's row (`aggregate`), with compile_s: the time this process spent
      compiling.

    Raises:
      ValueError: no clips, labels outside [0, C) other than 255, a bad schedule or
        `baseline_net`, or a `shard` that is not (an index, `jax.process_count()`).
    """
    (row,) = evaluate_schedules(net, [videos], [schedule], mean_bgr=mean_bgr,
                                baseline_nets=[baseline_net], on_first_clip=on_first_clip,
                                **options)
    return row


def evaluate_schedules(
    net: nnx.Module,
    clips: Sequence[Iterable[protocol.Clip | Video]],
    schedules: Sequence[str | clockwork.Schedule],
    *,
    mean_bgr: Sequence[float],
    scored: slice = SCORED_FRAMES,
    boundary_radius: int = 5,
    pred_lut: Sequence[int] | None = None,
    dtype=None,
    baseline_nets: Sequence[nnx.Module | None] | None = None,
    journal: results.Journal | None = None,
    shard: tuple[int, int] | None = None,
    on_first_clip: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    repeats: int = 1,
    videos: int | None = None,
) -> list[dict]:
    """`evaluate_schedule` of several schedules at once, interleaved: video by video, each
    schedule runs its clips of that video in turn, so that a shared machine's changing
    load falls on every schedule alike and their times compare like for like.

    Args:
      net: as `evaluate_schedule`'s.
      clips: per schedule, its clips (`sources.Source.clips`), in their places' order.
      schedules: the schedules, one per entry of `clips`.
      baseline_nets: per schedule, its `baseline_net` (None: none for any).
      on_first_clip: as `evaluate_schedule`'s, for the last schedule.
      mean_bgr, scored, boundary_radius, pred_lut, dtype, journal, shard, repeats: as
        `evaluate_schedule`'s.
      videos: how many videos the clips come from: a progress bar on stderr (with the time
        to go) counts them; None: no bar.

    Returns:
      One row per schedule (`aggregate`, with compile_s), in order; each row's wall_s is
      the time spent on its own clips.

    Raises:
      ValueError: as `evaluate_schedule`, or not one clip stream per schedule.
    """
    if len(clips) != len(schedules):
        raise ValueError(f"{len(clips)} clip streams for {len(schedules)} schedules")
    process, processes = shard or (0, 1)
    if shard is not None and (processes != jax.process_count() or not 0 <= process < processes):
        raise ValueError(f"shard {shard} is not (process index, {jax.process_count()} processes)")
    scorers = [ClipScorer(net, schedule, mean_bgr=mean_bgr, pred_lut=pred_lut, dtype=dtype,
                          baseline_net=baseline, repeats=repeats)
               for schedule, baseline in zip(schedules, baseline_nets or [None] * len(schedules),
                                             strict=True)]
    last = len(scorers) - 1

    def journalled(k: int, place: protocol.Place) -> dict | None:
        return None if journal is None else journal.get(scorers[k].name, place)

    def runs_here(place: protocol.Place) -> bool:
        return place[0] % processes == process

    records = [[] for _ in scorers]  # per schedule: (place, record)
    walls = [0.0] * len(scorers)  # per schedule: its time in the loop, compiling included
    # Video by video; within a video, schedule by schedule, each its clips in order.
    merged = heapq.merge(*[_placed(k, stream, scored) for k, stream in enumerate(clips)],
                         key=lambda item: (item[0][0], item[1], item[0][1]))
    labelled = _labelled_clips(merged, scorers[0].num_classes, boundary_radius,
                               lambda k, p: not runs_here(p) or journalled(k, p) is not None)
    bar = tqdm(total=videos, desc="evaluate", unit="video", file=sys.stderr,
               disable=videos is None or process != 0)
    with prefetch(labelled) as labelled, bar:
        for k, place, item in labelled:
            bar.update(max(place[0] - bar.n, 0))  # the videos before this one are done
            if item is None:
                if runs_here(place):
                    records[k].append((place, journalled(k, place)))
                continue
            start = time.perf_counter()
            record = scorers[k].score(item, on_first_clip if (k, place) == (last, (0, 0))
                                      else None)
            if journal is not None:
                journal.add(scorers[k].name, place, record := record_on_host(record))
            records[k].append((place, record))
            walls[k] += time.perf_counter() - start
        bar.update(bar.total - bar.n if videos else 0)
    rows = []
    for scorer, mine, wall in zip(scorers, records, walls, strict=True):
        start = time.perf_counter()
        mine = [(p, record_on_host(r)) for p, r in mine]  # the one wait for the device
        wall += time.perf_counter() - start - scorer.compile_seconds
        if processes > 1:
            everyone = _gather({"wall": wall, "records": mine})
            wall = max(p["wall"] for p in everyone)
            mine = sorted(((tuple(place), r) for p in everyone for place, r in p["records"]),
                          key=lambda x: x[0])
        if not mine:
            raise ValueError("no clips to evaluate: the data source is empty")
        row = aggregate([r for _, r in mine], name=scorer.name, schedule=scorer.schedule,
                        dtype=scorer.dtype, wall_s=wall)
        row["compile_s"] = scorer.compile_seconds
        rows.append(row)
    return rows


def _scored(hist: np.ndarray) -> dict[str, float | None]:
    """`metrics.scores` with None for what no labelled pixel defines (unlabelled video: an
    all-zero confusion), so that the table shows "-" and the JSON null, never NaN."""
    return {k: None if math.isnan(v) else v for k, v in metrics.scores(hist).items()}


def aggregate(records: Sequence[dict], *, name: str, schedule: clockwork.Schedule,
              dtype: Any, wall_s: float) -> dict:
    """The table's row of a schedule from its clips' records (`record_on_host`).

    Args:
      records: one per clip, in clip order (at least one).
      name: the row's name (`row_name`).
      schedule: the schedule the records ran.
      dtype: the compute dtype they ran in.
      wall_s: the wall time of the whole loop, compiling excluded.

    Returns:
      A flat dict: schedule (the name), kind (`protocol.kind`), params
      (`Schedule.params`), dtype; pixel_acc, mean_acc, mean_iu, fw_iu over one confusion
      matrix summed across clips, and the same on the boundary band (bdry_*); the
      temporal difference's mean and std across clips of more than one frame
      (temporal_diff, temporal_diff_std; None without such clips); fired, the fraction of
      frames run on which each stage fired, and fired_ref, over the frames the protocol's
      reference counts; flop_fraction and flop_fraction_dense of oracle's; the
      pipelines' modelled latency (latency_model_flops, latency_model_time; None for
      others); ms_per_frame (the net and the argmax, each clip's fastest run) and
      ms_per_frame_runs (per repeat, over every clip); others_cores, the CPU (in cores)
      other processes took on average while it was timed, and timing_disturbed (over
      `timing.DISTURBED_CORES`); wall_s; frames and videos run; and the first clip's clock,
      timeline {change, fired (the last stage's)}. Beyond the paper: mvc_8 and mvc_16,
      VSPW's video consistency over windows of 8 and 16 consecutive scored frames, its
      counts pooled over every window of every clip (`metrics.video_consistency_counts`;
      None where no clip has such a window); mean_iu_by_age, the mean IU of the scored
      frames by the frames since the last stage fired (0, 1, ..., `AGE_BUCKETS` - 1, then
      `AGE_BUCKETS` and more or never, last; None for a bucket without labelled pixels),
      over one confusion per bucket summed across clips, and frames_by_age, the scored
      frames in each bucket.
    """
    frames_run = sum(r["frames"] for r in records)
    row = {"schedule": name, "kind": protocol.kind(schedule), "params": schedule.params(),
           "dtype": jnp.dtype(dtype).name,
           **_scored(sum(np.asarray(r["hist"], np.int64) for r in records))}
    band_hist = sum(np.asarray(r["band_hist"], np.int64) for r in records)
    row.update({f"bdry_{k}": v for k, v in _scored(band_hist).items()})
    tds = [r["td"] for r in records if r["frames"] > 1]  # a 1-frame clip has no change
    flops = np.sum([r["flops"] for r in records], axis=0)  # (executed, dense) full frames
    timed = [r for r in records if r["latency"]]  # pipelines: (dense FLOPs, time) models

    def latency(i: int) -> float | None:  # frame-weighted over the clips
        return (float(np.average([r["latency"][i] for r in timed],
                                 weights=[r["frames"] for r in timed])) if timed else None)

    vc = np.sum([np.asarray(r["vc"], np.int64) for r in records], axis=0)  # [K, 2]
    age_hists = sum(np.asarray(r["age_hist"], np.int64) for r in records)
    first = records[0]  # the first clip's clock, for timeline plots
    runs = np.sum([r["seconds_runs"] for r in records], axis=0)  # per repeat, every clip
    others = sum(r["others_cpu_s"] for r in records) / max(float(np.sum(runs)), 1e-9)
    row.update(
        temporal_diff=float(np.mean(tds)) if tds else None,
        temporal_diff_std=float(np.std(tds)) if tds else None,
        fired=np.concatenate([np.asarray(r["fired"]) for r in records]).mean(0).tolist(),
        fired_ref=(np.sum([r["fired_ref"] for r in records], axis=0)
                   / max(sum(r["denominator"] for r in records), 1)).tolist(),
        flop_fraction=float(flops[0]) / frames_run,
        flop_fraction_dense=float(flops[1]) / frames_run,
        latency_model_flops=latency(0),
        latency_model_time=latency(1),
        ms_per_frame=1e3 * sum(r["seconds"] for r in records) / frames_run,
        ms_per_frame_runs=(1e3 * runs / frames_run).tolist(),
        others_cores=others,
        timing_disturbed=others > timing.DISTURBED_CORES,
        wall_s=wall_s,
        frames=frames_run,
        videos=len(records),
        timeline={"change": list(first["change"]),
                  "fired": [bool(f[-1]) for f in first["fired"]]},
        **{f"mvc_{k}": float(c / n) if n else None
           for k, (c, n) in zip(VC_WINDOWS, vc.tolist(), strict=True)},
        mean_iu_by_age=[metrics.scores(h)["mean_iu"] if h.sum() else None for h in age_hists],
        frames_by_age=np.sum([r["age_frames"] for r in records], axis=0).astype(int).tolist(),
    )
    row["window_rate"] = window_rate(records, schedule)
    return row


def window_rate(records: Sequence[dict], schedule: clockwork.Schedule) -> dict | None:
    """An adaptive row's last-stage firing rate over every W consecutive frames of its
    clips (W: its budget's window, else `schedules.DEFAULT_WINDOW`): {window, min, max,
    mean, within (the fraction of windows within the budget's band; None without one)};
    min/max/mean None when no clip has W frames. None for other schedules."""
    if schedule.theta is None:
        return None
    window = schedule.window or schedules.DEFAULT_WINDOW
    rates = np.concatenate([control.window_rates(np.asarray(r["fired"])[:, -1], window)
                            for r in records])
    within = None
    if schedule.target_rate is not None and len(rates):
        within = control.within_budget(rates, schedule)
    stats = ((float(rates.min()), float(rates.max()), float(rates.mean())) if len(rates)
             else (None, None, None))
    return {"window": window, **dict(zip(("min", "max", "mean"), stats, strict=True)),
            "within": within}


def add_speedups(rows: list[dict]) -> list[dict]:
    """Adds, where an oracle row exists, `time_fraction` (ms/frame over oracle's),
    `time_fraction_range` ([lowest, highest] over the repeats of the fraction of each
    repeat's time, repeat r against oracle's repeat r; None with one repeat), and
    `time_fraction_disturbed` (the row's timing or oracle's was disturbed); None, None,
    False without an oracle."""
    oracle = next((r for r in rows if r["schedule"] == "oracle"), None)
    for row in rows:
        row.update(time_fraction=None, time_fraction_range=None, time_fraction_disturbed=False)
        if oracle is None:
            continue
        mine, its = row["ms_per_frame_runs"], oracle["ms_per_frame_runs"]
        fractions = [a / b for a, b in zip(mine, its, strict=True)] if len(mine) == len(
            its) else []
        row.update(time_fraction=row["ms_per_frame"] / oracle["ms_per_frame"],
                   time_fraction_range=[min(fractions), max(fractions)]
                   if len(fractions) > 1 else None,
                   time_fraction_disturbed=row["timing_disturbed"] or oracle["timing_disturbed"])
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The paper-style results table, one row per schedule.

    "fired S1/.../SN" are the fractions of frames each stage fired on (N: the rows' stages);
    "SN ref" is the last stage's fraction as the data set's reference counts it; "FLOP frac"
    counts what XLA executes, "dense" the Caffe net (`cost`); "lat model" is a pipeline's
    step latency as the paper models it, from the measured stage times. "spread" is the
    time fraction's range over the repeated timings; a "*" after a time fraction marks a
    disturbed timing (other processes took CPU meanwhile), explained below the table.
    "mVC8" and "mVC16" are VSPW's video consistency (%, "-" without windows of so many
    consecutive scored frames).

    Args:
      rows: rows of `evaluate_schedule` (`aggregate`, `add_speedups`).

    Returns:
      The table, a header line, a rule and one line per row, then a line on the disturbed
      timings if any.
    """
    def num(fmt: str):
        return lambda v: "-" if v is None else fmt.format(v)

    stages = [f"S{k + 1}" for k in range(max((len(r["fired"]) for r in rows), default=0))]
    fired_header = f"fired {'/'.join(stages)}"
    fired_width = max(16, len(fired_header) + 2, 5 * len(stages) + 1)  # "0.50/" per stage
    last_ref = f"{stages[-1] if stages else 'last'} ref"
    pct = num("{:.1f}")
    cols = [
        ("schedule", 15, str), ("pix acc", 8, pct), ("mean acc", 9, pct), ("mean IU", 8, pct),
        ("fw IU", 7, pct), ("IU-bdry", 8, pct), ("fwIU-bdry", 10, pct),
        ("temp diff", 10, num("{:.3f}")), (fired_header, fired_width, str),
        (last_ref, max(7, len(last_ref) + 1), str), ("FLOP frac", 10, num("{:.2f}")),
        ("dense", 6, num("{:.2f}")),
        ("ms/frame", 9, num("{:.1f}")), ("time frac", 10, str),
        ("spread", 11, lambda v: "-" if v is None else f"{v[0]:.2f}-{v[1]:.2f}"),
        ("lat model", 10, num("{:.2f}")), ("mVC8", 7, pct), ("mVC16", 7, pct),
    ]
    lines = ["".join(f"{name:>{w}}" if i else f"{name:<{w}}" for i, (name, w, _) in
                     enumerate(cols))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        ref = r.get("fired_ref")
        values = [
            r["schedule"], *(None if r[k] is None else 100 * r[k] for k in (
                "pixel_acc", "mean_acc", "mean_iu", "fw_iu", "bdry_mean_iu", "bdry_fw_iu")),
            r["temporal_diff"], "/".join(f"{f:.2f}" for f in r["fired"]),
            "-" if ref is None else f"{ref[-1]:.2f}", r["flop_fraction"],
            r.get("flop_fraction_dense"), r["ms_per_frame"], _time_fraction(r),
            r.get("time_fraction_range"), r.get("latency_model_time"),
            *(None if r.get(k) is None else 100 * r[k] for k in ("mvc_8", "mvc_16")),
        ]
        lines.append("".join(
            (f"{fmt(v):<{w}}" if i == 0 else f"{fmt(v):>{w}}")
            for i, ((_, w, fmt), v) in enumerate(zip(cols, values, strict=True))))
    disturbed = [r for r in rows if r.get("time_fraction_disturbed")]
    if disturbed:
        cores = max(r["others_cores"] for r in rows)
        lines.append(f"* timing disturbed: other processes took up to {cores:.2f} CPU cores "
                     f"on average while a row was timed (more than {timing.DISTURBED_CORES}); "
                     "its time fraction may be off: rerun on a quieter machine")
    return "\n".join(lines)


def _time_fraction(row: dict) -> str:
    fraction = row.get("time_fraction")
    if fraction is None:
        return "-"
    return f"{fraction:.2f}{'*' if row.get('time_fraction_disturbed') else ''}"
