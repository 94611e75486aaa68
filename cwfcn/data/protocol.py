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
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from cwfcn.data.files import IGNORE_LABEL

PHASES = ("clip", "all", "coin", "fixed:K")
PHASE_HELP = ("clip (from the clip's first frame), all (every phase, summed), coin (a "
              "seeded coin per labelled frame), fixed:K (K frames after the last full firing)")
# cityscapes-clockwork-exp cell 0: `random.seed(0xCAFFE)`, once for the whole notebook.
COIN_SEED = 0xCAFFE


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
      key: what the clip is (a shot, a labelled frame and its phase), for journals and
        plots.
    """

    frames: np.ndarray
    labels: np.ndarray
    scored: tuple[int, ...]
    counted: tuple[int, ...]
    denominator: int
    key: str = ""

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


def whole_videos(videos: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
                 scored: slice) -> Callable[[Any, str], Iterator[Clip]]:
    """A clip maker (`datasets.ClipMaker`) of whole videos, the same for every schedule, each
    scoring `scored` of its frames; `videos()` gives (frames, labels) pairs."""
    def make(schedule, phase):
        del schedule, phase
        return (whole(frames, labels, scored, key=str(i))
                for i, (frames, labels) in enumerate(videos()))
    return make


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
