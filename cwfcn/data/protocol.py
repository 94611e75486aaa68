"""Evaluation protocols: which frames a schedule runs from a clean start, and which it scores.

A schedule's output on a scored frame depends on the frames since the clock state was last
fresh. The authors' experiments pin that down per data set (clockwork-fcn notebooks), and
cwfcn states it as data: a data set turns each schedule into `Clip`s, each run from frame 0
(every stage fires there) with its scored frames and the frames whose firings the reference
counts.

The phase of a fixed schedule. With a fixed schedule of cycle P (`Schedule.cycle`: skip and
alternating 2, exponential 4), a labelled frame scored k frames after the last full firing
is in phase k. Data sets whose labels are sparse run a short clip per labelled frame and
phase (the labelled frame last, k frames before it in the data set's time base), and the
policy (`PHASES`) says which phases are scored:
  clip     the schedule runs over the data set's own clip from its first frame; the phase
           is whatever the clip's length makes it (translated PASCAL; NYUD: "run on the
           entire clips", the paper's section 5);
  all      every phase 0..P-1, each scored, the confusions summed: the reference's merged
           histograms on YouTube-Objects (youtube-clockwork-exp cells 10 and 12:
           `hist_baseline + hist_perframe`);
  coin     one phase per labelled frame from a seeded coin: `random.seed(0xCAFFE)`, then one
           `random.random()` per labelled frame, < 0.5 meaning the previous frame ran in full
           (cityscapes-clockwork-exp cells 0, 9 and 11); for P > 2 the draw picks one of
           the P phases alike;
  fixed:K  phase K % P for every labelled frame.

A data set's code is in two parts. READ turns its raw files (or its prepared TFDS records)
into `Video`s: the frames it holds, their times, which are labelled, which are scored, with
the build-time protocol applied (label mapping, resizing, cropping). FORM turns videos, a
schedule and a phase policy into the clips of each video (`ClipsOf`, `datasets.Videos`).
Frames are read lazily (`Lazy`), so FORM reads only the frames its clips use, and `clips`
visits only the videos asked for: a process of a multi-host run reads only its own
(`shard`), each clip keeping its place in the whole data set's order.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from cwfcn.data.files import IGNORE_LABEL

PHASES = ("clip", "all", "coin", "fixed:K")
PHASE_HELP = ("clip (from the clip's first frame), all (every phase, summed), coin (a "
              "seeded coin per labelled frame), fixed:K (K frames after the last full firing)")
# cityscapes-clockwork-exp cell 0: `random.seed(0xCAFFE)`, once for the whole notebook.
COIN_SEED = 0xCAFFE
# A clip's place in a data set's order: (video, clip of that video).
Place = tuple[int, int]


class Lazy(collections.abc.Sequence):
    """`count` items, item i being `read(i)`, read on first access (and, with `keep`, kept).

    A video's frames are a `Lazy` so that a protocol reads only the frames a clip uses (the
    labelled frame alone for a stateless schedule) and a shot's clips, which share frames,
    read each once. A data set's videos are a `Lazy` with `keep=False`: each is read when it
    is visited and let go after.

    Args:
      count: the number of items, >= 0.
      read: `i -> item i`, for i in 0..count-1.
      keep: keep each item once read (a video's frames), or read it again on each access
        (a data set's videos, which would not all fit in memory).
    """

    def __init__(self, count: int, read: Callable[[int], object], *, keep: bool = True):
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise ValueError(f"Lazy: count must be an int >= 0, got {count!r}")
        if not callable(read):
            raise ValueError(f"Lazy: read must be a function i -> item, got {read!r}")
        self._count, self._read, self._keep = int(count), read, keep
        self._items: dict[int, object] = {}

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(self._count)[index]]
        i = index + self._count if index < 0 else index
        if not 0 <= i < self._count:
            raise IndexError(f"index {index} outside a sequence of {self._count} items")
        if i in self._items:
            return self._items[i]
        item = self._read(i)
        if self._keep:
            self._items[i] = item
        return item

    def __repr__(self) -> str:
        return f"Lazy({self._count} items, {len(self._items)} read)"


def _indices(value) -> tuple[int, ...]:
    return tuple(int(i) for i in value)


@dataclasses.dataclass(frozen=True)
class Video:
    """One video of a data set as its builder stores it and its protocol reads it.

    What a video holds is decided when it is read (the data set's READ, which applies its
    build-time protocol: label mapping, resizing, cropping, which frames it holds); how a
    schedule runs it is its FORM's (`datasets.Videos.form`).

    Attributes:
      key: what it is (an image id, a shot id, a labelled frame id).
      frames: T frames, each uint8 RGB `[H, W, 3]`: an np.ndarray `[T, H, W, 3]` or a `Lazy`.
      times: T ints, increasing: each frame's time in the data set's time base (YouTube,
        NYUD, Cityscapes: raw frame numbers; translated videos: 0..T-1).
      labelled: indices into `frames` that have ground truth, increasing.
      labels: `len(labelled)` label maps uint8 `[H, W]` (255 = ignore), aligned with
        `labelled`: an np.ndarray `[L, H, W]` or a `Lazy`.
      scored: indices into `frames` the protocol scores, increasing, a subset of `labelled`.

    Raises:
      ValueError: on construction, lengths or indices that do not fit (the frames and labels
        themselves are not read).
    """

    key: str
    frames: Sequence[np.ndarray]
    times: tuple[int, ...]
    labelled: tuple[int, ...]
    labels: Sequence[np.ndarray]
    scored: tuple[int, ...]

    def __post_init__(self):
        for name in ("times", "labelled", "scored"):
            object.__setattr__(self, name, _indices(getattr(self, name)))
        t = len(self.frames)
        problems = []
        if len(self.times) != t:
            problems.append(f"{len(self.times)} times for {t} frames")
        if any(b <= a for a, b in itertools.pairwise(self.times)):
            problems.append(f"times {self.times[:8]} not increasing")
        if len(self.labels) != len(self.labelled):
            problems.append(f"{len(self.labels)} label maps for {len(self.labelled)} labelled "
                            "frames")
        for name in ("labelled", "scored"):
            idx = getattr(self, name)
            if any(not 0 <= i < t for i in idx) or any(
                    b <= a for a, b in itertools.pairwise(idx)):
                problems.append(f"{name} {idx[:8]} not increasing indices in 0..{t - 1}")
        if not set(self.scored) <= set(self.labelled):
            problems.append(f"scored {self.scored[:8]} not all labelled {self.labelled[:8]}")
        if problems:
            raise ValueError(f"video {self.key!r}: {'; '.join(problems)}: a video needs a time "
                             "per frame and a label map per labelled frame, its scored frames "
                             "labelled")

    def label_maps(self) -> np.ndarray:
        """uint8 `[T, H, W]`: each frame's labels, 255 (ignore) on frames without them.

        Reads every label map (and, for a video without labels, its first frame's size).
        """
        size = (np.shape(self.labels[0]) if self.labelled else np.shape(self.frames[0])[:2])
        maps = np.full((len(self.frames), *size), IGNORE_LABEL, np.uint8)
        for i, label in zip(self.labelled, self.labels, strict=True):
            maps[i] = label
        return maps

    def label(self, index: int) -> np.ndarray:
        """uint8 `[H, W]`: the labels of frame `index`, one of `labelled` (reads only it)."""
        return self.labels[self.labelled.index(index)]

    def stacked(self) -> np.ndarray:
        """uint8 `[T, H, W, 3]`: every frame, read."""
        return stack(self.frames)


def labelled_video(key: str, frames: np.ndarray, labels: np.ndarray,
                   scored: Sequence[int] | slice) -> Video:
    """A video whose every frame is labelled (translated PASCAL, the sample's street clip,
    synthetic scenes; an unlabelled file's labels are all 255).

    Args:
      key: what it is.
      frames: uint8 RGB `[T, H, W, 3]`.
      labels: uint8 `[T, H, W]`.
      scored: the frames scored: indices, or a slice of 0..T-1.
    """
    t = len(frames)
    idx = range(t)[scored] if isinstance(scored, slice) else scored
    return Video(key, frames, tuple(range(t)), tuple(range(t)), labels, tuple(idx))


def stack(frames: Sequence[np.ndarray]) -> np.ndarray:
    """An array `[N, ...]` of a sequence of arrays (an np.ndarray as it is)."""
    return frames if isinstance(frames, np.ndarray) else np.stack(list(frames))


def pairs(videos: Sequence[Video]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])` of each video, read lazily: the
    package-wide video contract (255 on frames without ground truth)."""
    return ((video.stacked(), video.label_maps()) for video in videos)


@dataclasses.dataclass(frozen=True)
class Clip:
    """One run of a schedule from a clean clock state.

    Attributes:
      frames: uint8 RGB `[T, H, W, 3]`.
      labels: uint8 `[T, H, W]`; 255 (ignore) where a frame has no ground truth.
      scored: indices of the frames whose predictions are scored.
      counted: indices of the frames whose firings the reference counts in its fraction
        of frames fired.
      denominator: the frame count that fraction divides by (>= len(counted): Cityscapes
        counts the forced full run on the clip's first frame there, not in the firings).
      key: what the clip is (a shot, a labelled frame and its phase), for plots.
      place: (video, clip of that video) in the data set's order, set by `clips`; None for
        a clip made alone. Evaluation keys its records by it (journals, the gathered
        records of a multi-host run).
    """

    frames: np.ndarray
    labels: np.ndarray
    scored: tuple[int, ...]
    counted: tuple[int, ...]
    denominator: int
    key: str = ""
    place: Place | None = None

    def __post_init__(self):
        t = len(self.frames)
        if len(self.labels) != t or not self.scored:
            raise ValueError(f"clip {self.key!r}: {t} frames, {len(self.labels)} label maps, "
                             f"scored {self.scored}: a clip needs a label map per frame and "
                             "at least one scored frame")
        for name, idx in (("scored", self.scored), ("counted", self.counted)):
            if any(not 0 <= i < t for i in idx):
                raise ValueError(f"clip {self.key!r}: {name} frames {idx} outside 0..{t - 1}")
        if self.denominator < len(self.counted):
            raise ValueError(f"clip {self.key!r}: denominator {self.denominator} < "
                             f"{len(self.counted)} counted frames")

    def head(self, n: int) -> np.ndarray:
        """uint8 `[min(n, T), H, W, 3]`: its first `n` frames (as `StreamClip.head`)."""
        return np.asarray(self.frames[:n])


@dataclasses.dataclass(frozen=True)
class StreamClip:
    """An unlabelled clip read as it is run, never whole: a video file of any length
    (`--data video:PATH`). Every frame is scored and counted, as `whole` does with labels
    of 255; the evaluator runs it chunk by chunk, its clock state carried, so memory is
    bounded by a chunk, not by the video.

    Attributes:
      read: `() -> an iterator of uint8 RGB [H, W, 3] frames`, from the first; each call
        reads anew (each schedule runs its own pass).
      length: the frames it is said to hold (a container's header), for progress bars;
        None: not known.
      key, place: as `Clip`'s.
    """

    read: Callable[[], Iterator[np.ndarray]]
    length: int | None = None
    key: str = ""
    place: Place | None = None

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, int]]:
        """`(part uint8 [size, H, W, 3], frames it holds)`, `size` frames at a time. A short
        last part is padded with its last frame, so every part has one shape (one compiled
        program); what follows a part's frames is not part of the video."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"chunk size must be an int >= 1, got {size!r}")
        with _closing(self.read()) as frames:
            for first in frames:  # each part filled in place: no list of frames, no copy
                part = np.empty((size, *first.shape), first.dtype)
                part[0], length = first, 1
                for frame in itertools.islice(frames, size - 1):
                    part[length], length = frame, length + 1
                part[length:] = part[length - 1]
                yield part, length

    def head(self, n: int) -> np.ndarray:
        """uint8 `[min(n, T), H, W, 3]`: its first `n` frames."""
        with _closing(self.read()) as frames:
            return np.stack(list(itertools.islice(frames, n)))


@contextlib.contextmanager
def _closing(frames: Iterator[np.ndarray]) -> Iterator[Iterator[np.ndarray]]:
    """`frames`, closed on exit where it can be (a decoder generator closes its file)."""
    try:
        yield frames
    finally:
        getattr(frames, "close", lambda: None)()


def kind(schedule) -> str:
    """How a schedule's outputs depend on the past, which decides the clips it runs.

    Args:
      schedule: a `clockwork.Schedule` (a truncated baseline, `keep` set, is stateless).

    Returns:
      "adaptive", "pipeline", "fixed" (a cycle > 1), or "frame" (every frame computed
      afresh: oracle and the truncated baselines).
    """
    if schedule.keep is not None:
        return "frame"
    if schedule.theta is not None:
        return "adaptive"
    if schedule.pipelined:
        return "pipeline"
    return "fixed" if schedule.cycle > 1 else "frame"


def pipeline_backs(schedule) -> tuple[int, ...]:
    """The frames (steps back from the scored one) of a clip that scores a pipelined schedule
    in its steady state after a full run, as the reference warms up each scored frame
    (youtube-pipeline-exp cells 10, 12): d lags need the full run d steps back, then d steps.
    The engine fills one lag per step (`clockwork.fill_lags`), so the full run's frame is
    repeated d times: a fill step on the frame of the last full run leaves the state of that
    run. pipeline2 -> (1, 0); pipeline3 -> (2, 2, 1, 0).
    """
    depth = schedule.pipeline_depth
    return (depth,) * depth + tuple(range(depth - 1, -1, -1))


def whole(frames: np.ndarray, labels: np.ndarray, scored: Sequence[int] | slice,
          key: str = "") -> Clip:
    """A clip of a whole video, its scored frames counted (translated PASCAL, the sample)."""
    idx = tuple(range(len(frames))[scored]) if isinstance(scored, slice) else tuple(scored)
    return Clip(frames, labels, idx, idx, len(idx), key)


def form_whole(videos: Sequence[Video], schedule, phase: str) -> ClipsOf:
    """The FORM of whole videos, the same for every schedule and phase (translated PASCAL, the
    sample, synthetic scenes, a video file): each video one clip from its first frame, its
    `scored` frames scored and counted, named by its position ("0", "1", ...)."""
    del videos, schedule, phase
    return lambda i, video: (whole(video.stacked(), video.label_maps(), video.scored,
                                   key=str(i)),)


# What a FORM returns: `(i, video) -> the clips of video i` (its index in the data set), in
# order, read lazily.
ClipsOf = Callable[[int, Video], Iterable[Clip]]


def clips(videos: Sequence[Video], form: Callable[[Sequence[Video], object, str], ClipsOf],
          schedule, phase: str, *, shard: tuple[int, int] | None = None) -> Iterator[Clip]:
    """The clips a FORM gives `schedule` on `videos`, each with its `place`.

    Args:
      videos: the data set's videos, read on access.
      form: the data set's FORM, `(videos, schedule, phase) -> ClipsOf` (it checks the
        schedule and phase when called, before any video is read).
      schedule: a `clockwork.Schedule` (or the evaluator's baseline).
      phase: the phase policy (`PHASES`; the FORM checks it).
      shard: (process, processes): only videos i with i % processes == process are read
        and formed (the clips of one video run on one process); None: all.

    Returns:
      The clips, video by video, in data-set order.
    """
    process, processes = shard or (0, 1)
    if not 0 <= process < processes:
        raise ValueError(f"shard {shard}: not (process index, process count)")
    clips_of = form(videos, schedule, phase)
    return (dataclasses.replace(clip, place=(i, j))
            for i in range(process, len(videos), processes)
            for j, clip in enumerate(clips_of(i, videos[i])))


def after_full_run(frames: np.ndarray, labels: np.ndarray, scored: Sequence[int],
                   key: str = "") -> Clip:
    """A clip run from a forced full run on its first frame, as cityscapes-clockwork-exp
    cell 13 counts it: the firings of the frames after the first count, the first is in
    the denominator only (``num_frames += 1`` for it, no ``num_update_frames``)."""
    t = len(frames)
    return Clip(frames, labels, tuple(scored), tuple(range(1, t)), t, key)


def check_phase(spec: str) -> str:
    """A phase policy (`PHASES`), normalised; raises ValueError naming the forms."""
    spec = str(spec).strip().lower()
    head, _, arg = spec.partition(":")
    if spec in ("clip", "all", "coin"):
        return spec
    if head == "fixed" and arg.isdigit():
        return f"fixed:{int(arg)}"
    raise ValueError(f"bad phase {spec!r}; use one of: {PHASE_HELP}")


def phases(policy: str, cycle: int, count: int, *, coin_offset: int = 0) -> list[tuple[int, ...]]:
    """The phases scored for each of `count` labelled frames under a policy.

    Args:
      policy: "all", "coin" or "fixed:K" (`check_phase`; "clip" has no per-frame phases).
      cycle: the schedule's cycle P.
      count: the number of labelled frames, in data-set order.
      coin_offset: draws of the seeded stream used before this schedule's (the reference
        notebook draws for skip, then goes on drawing for alternating).

    Returns:
      Per labelled frame, its phases (each in 0..P-1).
    """
    policy = check_phase(policy)
    if policy == "all":
        return [tuple(range(cycle))] * count
    if policy.startswith("fixed:"):
        return [(int(policy.partition(":")[2]) % cycle,)] * count
    if policy != "coin":
        raise ValueError(f"phase {policy!r} has no per-frame phases: the clip sets the phase")
    rng = random.Random(COIN_SEED)
    for _ in range(coin_offset):
        rng.random()
    # r < 0.5 -> the previous frame ran in full (phase 1), else this one (phase 0); P > 2
    # splits [0, 1) into P equal parts alike.
    return [(cycle - 1 - int(rng.random() * cycle),) for _ in range(count)]


def backs_clip(load: Callable[[int], np.ndarray], label: np.ndarray, backs: Sequence[int], *,
               key: str) -> Clip:
    """A clip of the frames `backs` steps before a labelled frame (0: the labelled frame,
    last), scoring and counting the labelled frame.

    Args:
      load: `back -> uint8 [H, W, 3]`, the frame `back` steps before the labelled one in the
        data set's time base.
      label: uint8 `[H, W]`, the labelled frame's labels.
      backs: steps back, oldest first, ending with 0.
      key: the clip's name.
    """
    frames = np.stack([load(back) for back in backs])
    labels = np.full(frames.shape[:3], IGNORE_LABEL, np.uint8)
    labels[-1] = label
    last = (len(frames) - 1,)
    return Clip(frames, labels, last, last, 1, key)


def phase_clip(load: Callable[[int], np.ndarray], label: np.ndarray, phase: int, *,
               key: str) -> Clip:
    """The clip that scores a labelled frame in `phase` k: the k frames before it, then it
    (`backs_clip` of k, k - 1, ..., 0), named `key@k`."""
    return backs_clip(load, label, range(phase, -1, -1), key=f"{key}@{phase}")
