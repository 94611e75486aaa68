"""How long an evaluation will take, said before it starts (evaluate.py prints it).

The estimate reads the videos this process runs for up to `SAMPLE_S` seconds (the first
always), each to its first frame only. Each schedule's clips of them are formed as the data
set's protocol forms them (`datasets.Videos.form`), but on stand-in frames of one pixel, so
their lengths are exact and nothing more is decoded. The net is timed once, on a frame of
the first video's size (`measure`). A clip's time is each stage's modelled firings times
its time, plus the fusion on every frame: a fixed schedule's stage fires on every
period-th frame from the clip's start; the oracle and the pipelines run every stage on
every frame; a truncated baseline runs its first stages; an adaptive clock is counted as
firing on every frame unless it holds a budget, where it fires on its target rate. That
is scaled by each video's pixels; the sampled videos' mean, times the videos and the
repeats, is the estimate, besides a compile per schedule, clip length and frame shape.
Decoding and scoring are not counted.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from cwfcn import clockwork, cost, schedules
from cwfcn.data import protocol, sources

# Above this, the line says how to shorten the run.
LONG_S = 3600.0
# The videos read for an estimate: as many as this many seconds allow, the first always.
SAMPLE_S = 1.0


@functools.partial(jax.jit, static_argnames=("graphdef", "staging", "size"))
def _full_frame(params, x, *, graphdef, staging, size):
    """The whole net on `x` [1, H, W, 3], stage by stage, then the fusion to `size`."""
    net, outs = nnx.merge(graphdef, params), []
    for stage in staging.stages:
        outs.append(stage(net, outs[-1] if outs else x))
    return staging.fuse(net, tuple(outs), size)


def measure(net: nnx.Module, frame_shape: tuple[int, int, int], dtype=None, *,
            split: bool = True) -> tuple[cost.StageFlops, float]:
    """The net's seconds on one frame, per stage and for the fusion, and one compile's.

    The whole net runs twice on the frame: the first run compiles it (unless the process or
    the persistent compilation cache has it already) and sets up what later runs reuse
    (it is several times slower than they are), the second is timed. The time is split
    between the stages by their FLOPs (`cost.stage_flops`, nothing run): timing each
    stage alone would take a compile each.

    Args:
      net: a staged net.
      frame_shape: (H, W, 3).
      dtype: the compute dtype.
      split: False: the whole time on the first stage, without counting FLOPs (for
        schedules that run every stage on every frame, whose time no split changes).

    Returns:
      (seconds of each stage and the fusion, the first run's seconds beyond the second's).
    """
    staging = clockwork.staging_of(net)
    graphdef, params = nnx.split(net)
    params = clockwork.cast_params(params, dtype)
    x = jax.numpy.zeros((1, *frame_shape), clockwork.compute_dtype(dtype))
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        jax.block_until_ready(_full_frame(params, x, graphdef=graphdef, staging=staging,
                                          size=tuple(frame_shape[:2])))
        seconds.append(time.perf_counter() - start)
    full, compile_s = seconds[1], max(0.0, seconds[0] - seconds[1])
    if not split:
        return cost.StageFlops((full,) + (0.0,) * (len(staging.stages) - 1), 0.0), compile_s
    flops = cost.stage_flops(net, tuple(frame_shape))
    share = full / flops.total
    return cost.StageFlops(tuple(share * f for f in flops.stages), share * flops.fuse), compile_s


def runs_every_stage(schedule: schedules.Schedule) -> bool:
    """Whether `clip_firings` counts every stage on every frame (the oracle, the pipelines,
    an open-loop adaptive clock)."""
    return (schedule.keep is None and all(p == 1 for p in schedule.periods)
            and (schedule.theta is None or schedule.target_rate is None))


def clip_firings(schedule: schedules.Schedule, length: int) -> np.ndarray:
    """float `[N]`: the frames each stage computes on, modelled, in a clip of `length`
    frames run from a clean clock state (see the module's docstring).

    Args:
      schedule: bound to the net's N stages (`Schedule.bind`).
      length: the clip's frames, >= 0.
    """
    if schedule.keep is not None:
        return np.array([length if s < schedule.keep else 0
                         for s in range(schedule.num_stages)], np.float64)
    fires = np.array([math.ceil(length / p) for p in schedule.periods], np.float64)
    if schedule.theta is not None:  # the adaptive clock gates the last stage
        fires[-1] = length if schedule.target_rate is None else min(
            length, math.ceil(1 + schedule.target_rate * (length - 1)))
    return fires


def clip_seconds(schedule: schedules.Schedule, length: int, took: cost.StageFlops) -> float:
    """A clip's modelled time: `clip_firings` by the stages' seconds, plus the fusion on
    each of its `length` frames."""
    return float(clip_firings(schedule, length) @ np.asarray(took.stages, np.float64)
                 + length * took.fuse)


def _stand_in(video: protocol.Video | protocol.StreamClip) -> protocol.Video | protocol.StreamClip:
    """`video` with frames and labels of one pixel, read from nothing (a file's stream,
    which is read only when run, as it is)."""
    if isinstance(video, protocol.StreamClip):
        return video
    pixel, label = np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8)
    return protocol.Video(video.key, protocol.Lazy(len(video.frames), lambda i: pixel),
                          video.times, video.labelled,
                          protocol.Lazy(len(video.labels), lambda i: label), video.scored)


def first_frame_shape(video: protocol.Video | protocol.StreamClip) -> tuple[int, int, int] | None:
    """(H, W, 3) of a video's first frame (reading it alone); None: it has no frames."""
    if isinstance(video, protocol.StreamClip):
        head = video.head(1)
        return tuple(head.shape[1:]) if len(head) else None
    return tuple(np.shape(video.frames[0])) if len(video.frames) else None


def clip_lengths(source: sources.Source, schedule: schedules.Schedule, phase: str,
                 video: protocol.Video | protocol.StreamClip, index: int) -> list[int | None]:
    """The frames of each clip `schedule` runs on video `index` of `source` (`video`), as
    its protocol forms them, without reading its frames; None: a stream of unknown length.
    """
    stand_in = _stand_in(video)  # a FORM may read the data set's length, not its videos
    clips_of = source.form(protocol.Lazy(len(source.videos), lambda i: stand_in), schedule,
                           source.check_phase(phase))
    return [len(clip.frames) if isinstance(clip, protocol.Clip) else clip.length
            for clip in clips_of(index, stand_in)]


class Sampled(NamedTuple):
    """A video read for an estimate: `source.videos[index]` and its first frame's shape."""

    video: protocol.Video | protocol.StreamClip
    index: int
    shape: tuple[int, int, int]


def sample_videos(source: sources.Source, shard: tuple[int, int] | None = None,
                  budget_s: float = SAMPLE_S) -> list[Sampled]:
    """The videos this process runs, in order, each with its first frame's shape, read until
    `budget_s` seconds have passed (the first always); videos without frames are left out.

    Args:
      source: the data set.
      shard: (process, processes): this process runs videos process, process + processes,
        ...; None: all.
      budget_s: how long to go on reading.
    """
    process, processes = shard or (0, 1)
    start, sampled = time.perf_counter(), []
    for i in range(process, len(source.videos), processes):
        video = source.videos[i]
        shape = first_frame_shape(video)
        if shape is not None:
            sampled.append(Sampled(video, i, shape))
        if time.perf_counter() - start > budget_s:
            break
    return sampled


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a run of schedules over a data set is expected to take.

    Attributes:
      run_s: seconds running the nets (all repeats); None: a clip of unknown length (a
        stream without a frame count).
      compile_s: seconds compiling: one compile per schedule, clip length and frame shape.
      schedules: how many schedules run.
      videos: the videos this process runs.
      sampled: the videos read for the estimate (the first `sampled` of them).
      frames: the frames the schedules run on those, in all (None: unknown).
      frame_shape: (H, W, 3) of the first video's frames, the net timed on.
      full_frame_s: the full net's seconds on one such frame.
      repeats: the timed runs of each clip.
      open_loop: an adaptive clock without a budget is among the schedules (its clips are
        counted as firing on every frame).
    """

    run_s: float | None
    compile_s: float
    schedules: int
    videos: int
    sampled: int
    frames: int | None
    frame_shape: tuple[int, int, int]
    full_frame_s: float
    repeats: int
    open_loop: bool

    @property
    def total_s(self) -> float | None:
        return None if self.run_s is None else self.run_s + self.compile_s


def estimate(source: sources.Source, to_run: Sequence[schedules.Schedule],
             sampled: Sequence[Sampled], videos: int, took: cost.StageFlops,
             compile_s: float, *, phase: str, repeats: int = 1, done: int = 0) -> Estimate:
    """The time `to_run` will take over `videos` videos of `source`, from a sample of them.

    Each sampled video's clips are formed for each schedule (`clip_lengths`, no frame
    read) and timed by `clip_seconds`, scaled by the video's pixels over the first's (the
    net's cost grows with the pixels); their mean, times the videos and the repeats, is
    the running time. A compile is counted per schedule, clip length and frame shape of the
    sample, and for the videos not sampled, as many more as the sampled videos after the
    first brought, per video.

    Args:
      source: the data set.
      to_run: the schedules.
      sampled: the videos read (`sample_videos`), at least one; the first's frame shape
        is the one `took` was measured on.
      videos: how many videos the run takes (this process's), >= len(sampled).
      took: the stages' and fusion's seconds on one frame (`measure`).
      compile_s: the seconds one compile takes (`measure`).
      phase: the fixed schedules' phase policy.
      repeats: the timed runs of each clip.
      done: the clips already run (a resumed run's journal): the estimate is of the rest,
        as a share of the clips expected.
    """
    stages = len(took.stages)
    bound = [schedule.bind(stages) for schedule in to_run]  # fired as the engine binds it
    pixels = np.prod(sampled[0].shape[:2])
    seconds, frames, clips, programs, first_programs = 0.0, 0, 0, set(), 0
    for n, (video, index, shape) in enumerate(sampled):
        for k, schedule in enumerate(to_run):
            lengths = clip_lengths(source, schedule, phase, video, index)  # formed as run
            programs.update((k, length, shape) for length in lengths)
            clips += len(lengths)
            if seconds is None or None in lengths:
                seconds = frames = None
                continue
            scale = np.prod(shape[:2]) / pixels
            seconds += scale * sum(clip_seconds(bound[k], t, took) for t in lengths)
            frames += sum(lengths)
        if n == 0:
            first_programs = len(programs)
    unsampled = videos - len(sampled)
    compiles = len(programs) + (unsampled * (len(programs) - first_programs) / (len(sampled) - 1)
                                if len(sampled) > 1 else 0)
    expected = clips * videos / len(sampled)
    left = max(0.0, 1.0 - done / expected) if expected else 1.0
    return Estimate(
        run_s=None if seconds is None else seconds / len(sampled) * videos * repeats * left,
        compile_s=compiles * compile_s if left else 0.0, schedules=len(to_run), videos=videos,
        sampled=len(sampled), frames=frames, frame_shape=tuple(sampled[0].shape),
        full_frame_s=sum(took.stages) + took.fuse, repeats=repeats,
        open_loop=any(s.theta is not None and s.target_rate is None for s in to_run))


def for_source(net: nnx.Module, source: sources.Source, to_run: Sequence[schedules.Schedule],
               *, phase: str, dtype=None, repeats: int = 1,
               shard: tuple[int, int] | None = None, done: int = 0) -> Estimate | None:
    """`estimate` from the videos `sample_videos` reads, the net timed on the first's frame
    size (`measure`): what evaluate.py prints before it starts.

    Args:
      net, source, to_run, phase, repeats, done: as `estimate`'s.
      dtype: the compute dtype.
      shard: as `sample_videos`'s.

    Returns:
      The estimate; None where this process has no video with frames to read.
    """
    process, processes = shard or (0, 1)
    sampled = sample_videos(source, shard)
    if not sampled:
        return None
    split = not all(runs_every_stage(s.bind(len(clockwork.staging_of(net).stages)))
                    for s in to_run)
    took, compile_s = measure(net, sampled[0].shape, dtype, split=split)
    return estimate(source, to_run, sampled, len(range(process, len(source.videos), processes)),
                    took, compile_s, phase=phase, repeats=repeats, done=done)


def duration(seconds: float) -> str:
    """`seconds` for a person: "under 1 s", "40 s", "12 min", "3.5 h", "2.1 days"."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def describe(guess: Estimate) -> str:
    """The line evaluate.py prints before the work starts."""
    h, w, _ = guess.frame_shape
    basis = (f"{_count(guess.schedules, 'schedule')} x {_count(guess.videos, 'video')} x "
             f"{_count(guess.repeats, 'repeat')}; "
             f"{1e3 * guess.full_frame_s:.1f} ms a full frame of {h}x{w} here")
    if guess.total_s is None:
        return (f"estimated time: unknown, the video's length is not in its header ({basis}); "
                "the progress bar gives it as the run goes")
    first = (f"{guess.sampled} of {guess.videos} videos read: {guess.frames} frames over all "
             "schedules")
    bound = "; the adaptive clocks counted as firing on every frame" if guess.open_loop else ""
    total = duration(guess.total_s)
    line = (f"estimated time: {'' if total.startswith('under') else 'about '}{total}"
            f"{f', {duration(guess.compile_s)} of it compiling' if guess.compile_s >= 1 else ''}"
            f" ({basis}; {first}{bound})")
    if guess.total_s > LONG_S:
        line += ("; to shorten it, run fewer schedules or thetas, fewer --repeats, or "
                 "--max_frames on a video")
    return line
