"""Named evaluation data: the embedded sample and the paper's data sets as labelled videos.

`open_source("pascal-translated:16", data_dir=...)` gives a `Source`: how many classes
its labels have, which mean its frames need, and, per schedule, the clips it runs and
scores as the authors' experiments do (`protocol.Clip`: frames uint8 RGB `[T, H, W, 3]`,
labels uint8 `[T, H, W]`, 255 = ignore, the scored frames), read from disk lazily.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cwfcn import clockwork, metrics
from cwfcn.data import (
    cityscapes,
    nyud,
    protocol,
    samples,
    synthetic,
    translate,
    video,
    voc,
    youtube,
)
from cwfcn.data.files import IGNORE_LABEL

SOURCE_HELP = ("sample, synthetic, pascal-translated:16, pascal-translated:32, nyud, youtube, "
               "youtube-full[:CLASS/VIDEO/SHOT] (every raw frame of the shots, Fig. 7), "
               "cityscapes (these need --data-dir), or video:PATH (any video file, unlabelled)")


@dataclasses.dataclass(frozen=True)
class Source:
    """A labelled video data set and the protocol its experiments follow.

    Attributes:
      name: the spec it was opened from.
      num_classes: the label classes C scored (255 = ignore).
      mean: key of `model.MEAN_BGR` for its frames.
      make_clips: `(schedule, phase) -> iterator of protocol.Clip`: what a schedule runs
        and scores (`protocol`), read lazily each time.
      phase: the default phase policy of fixed schedules (the reference's).
      phases: the phase policies it takes.
      pred_lut: the net's class -> the scored class (YouTube-Objects maps VOC's 21 to its
        11), or None when the net predicts the label classes.
      protocol: the reference the protocol follows, for tables and results.
    """

    name: str
    num_classes: int
    mean: str
    make_clips: Callable[[Any, str], Iterator[protocol.Clip]]
    phase: str = "clip"
    phases: tuple[str, ...] = ("clip",)
    pred_lut: tuple[int, ...] | None = None
    protocol: str = "cwfcn: each video from its first frame"

    @property
    def net_classes(self) -> int:
        """The classes the net must predict."""
        return self.num_classes if self.pred_lut is None else len(self.pred_lut)

    def check_phase(self, phase: str | None) -> str:
        """`phase` (None: the default), checked against what this data set takes."""
        phase = self.phase if phase is None else protocol.check_phase(phase)
        kind = "fixed:K" if phase.startswith("fixed:") else phase
        if kind not in self.phases:
            raise ValueError(f"data {self.name!r} takes --phase {' or '.join(self.phases)}, "
                             f"not {phase!r} ({self.protocol})")
        return phase

    def clips(self, schedule, phase: str | None = None) -> Iterator[protocol.Clip]:
        """The clips `schedule` runs, each checked: labels outside [0, C) other than 255 raise
        ValueError."""
        for clip in self.make_clips(schedule, self.check_phase(phase)):
            metrics.check_labels(clip.labels, self.num_classes)
            yield clip

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The videos, as the stateless schedules (oracle) run them: (frames, labels)."""
        for clip in self.clips(clockwork.parse_schedule("oracle")):
            yield clip.frames, clip.labels


def whole_videos(videos: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
                 scored: slice) -> Callable[[Any, str], Iterator[protocol.Clip]]:
    """A `Source.make_clips` of whole videos, the same for every schedule, each scoring
    `scored` of its frames; `videos()` gives (frames, labels) pairs."""
    def make(schedule, phase):
        del schedule, phase
        return (protocol.whole(frames, labels, scored, key=str(i))
                for i, (frames, labels) in enumerate(videos()))
    return make


def sample_videos(shift: int = 16, num_frames: int = 6) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The embedded sample: its VOC photos as translated videos, then the street clip."""
    paths = samples.fetch(["voc_images", "street_clip"])
    yield from voc.translated_videos(paths["voc_images"], shift, num_frames, split="val")
    clip = paths["street_clip"]
    pairs = [voc.read_example(clip, i) for i in voc.split_ids(clip, "val")]
    yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def synthetic_videos(
    *, seed: int, num_videos: int, size: int, shift: int, num_frames: int, num_classes: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Translated videos of synthetic scenes (`synthetic.scene`), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    for _ in range(num_videos):
        image, label = synthetic.scene(rng, size + shift * (num_frames - 1), size, num_classes)
        yield translate.make_translated_frames(image, label, shift, num_frames)


def unlabelled_video(
    path: str, max_frames: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One video file as a video without ground truth (every label 255)."""
    frames = video.read_video(path, max_frames)
    yield frames, np.full(frames.shape[:3], IGNORE_LABEL, np.uint8)


def _full_rate(root: str, ids: list[str], schedule, phase: str) -> Iterator[protocol.Clip]:
    """YouTube-Objects shots at full rate, one clip each, every schedule from the shot's
    first labelled frame; the masked frames scored, every frame after the first counted."""
    del schedule, phase
    for shot_id in ids:
        frames, labels = youtube.full_rate_shot(root, shot_id)
        scored = tuple(int(i) for i in np.flatnonzero((labels != IGNORE_LABEL).any((1, 2))))
        yield protocol.after_full_run(frames, labels, scored, shot_id)


def _need_dir(spec: str, data_dir: str | None) -> str:
    if not data_dir:
        raise ValueError(f"data {spec!r} needs --data-dir: the directory of the data set "
                         "(see README, 'Data sets')")
    return data_dir


def open_source(
    spec: str, *, data_dir: str | None = None, config=None, max_frames: int | None = None
) -> Source:
    """Opens a named data source.

    Args:
      spec: one of `SOURCE_HELP`.
      data_dir: the data set's directory (not needed for sample and synthetic).
      config: the config (`config.data` and `config.model.num_classes` shape the
        synthetic videos; an unlabelled video takes the config's classes and mean).
      max_frames: read at most this many frames of a video:PATH.

    Returns:
      The `Source`.

    Raises:
      ValueError: an unknown spec, a missing --data-dir, or (`video.VideoError`) a video
        file that cannot be opened.
    """
    if spec.startswith("video:"):
        path = spec[len("video:"):]
        video.probe(path)  # a missing, empty or non-video file fails now, before any work
        num_classes, mean = (21, "voc") if config is None else (config.model.num_classes,
                                                                config.data.mean)
        return Source(spec, num_classes, mean, whole_videos(
            functools.partial(unlabelled_video, path, max_frames), slice(None)),
            protocol="unlabelled: the whole video, every frame counted")
    name, _, arg = spec.strip().partition(":")
    name = name.lower()
    translated = "translated videos of 6 frames, frames 2..5 scored (pascal-translate-exp)"
    if name == "sample":
        return Source(spec, 21, "voc", whole_videos(sample_videos, translate.SCORED_FRAMES),
                      protocol=translated)  # scored as translated PASCAL: frames 2..
    if name == "synthetic":
        if config is None:
            raise ValueError("data 'synthetic' needs a config (config.data, config.model)")
        d = config.data
        make = functools.partial(synthetic_videos, seed=config.seed, num_videos=d.num_videos,
                                 size=d.size, shift=d.shift, num_frames=d.num_frames,
                                 num_classes=config.model.num_classes)
        return Source(spec, config.model.num_classes, d.mean,
                      whole_videos(make, translate.SCORED_FRAMES), protocol=translated)
    if name == "pascal-translated":
        if arg not in ("16", "32"):
            raise ValueError(f"bad data {spec!r}: the paper's shifts are pascal-translated:16 "
                             "and pascal-translated:32")
        root = _need_dir(spec, data_dir)
        videos = functools.partial(voc.translated_videos, root, int(arg), 6, "seg11valid")
        return Source(spec, 21, "voc", whole_videos(videos, translate.SCORED_FRAMES),
                      protocol=translated)
    sparse = ("clip", "all", "coin", "fixed:K")
    if name == "nyud":
        root = _need_dir(spec, data_dir)
        nyud.split_ids(root, "test")  # a wrong directory fails now, before any work
        return Source(spec, nyud.NUM_CLASSES, "nyud",
                      lambda s, phase: nyud.clips(root, s, phase), phase="clip", phases=sparse,
                      protocol="whole clips, every 10th raw frame, the labelled one scored "
                               "(the paper, section 5; datasets/nyud_seg.py)")
    if name == "youtube":
        root = _need_dir(spec, data_dir)
        ids = youtube.shot_ids(root)  # a wrong directory fails now
        return Source(spec, youtube.NUM_CLASSES, "voc",
                      lambda s, phase: youtube.clips(root, s, phase, ids), phase="all",
                      phases=sparse[1:], pred_lut=youtube.VOC_TO_YOUTUBE,
                      protocol="labelled frames f >= 21, 11 classes, phases merged "
                               "(youtube-clockwork-exp, youtube-pipeline-exp)")
    if name == "youtube-full":
        root = _need_dir(spec, data_dir)
        ids = [arg] if arg else youtube.shot_ids(root)
        return Source(spec, youtube.NUM_CLASSES, "voc", functools.partial(_full_rate, root, ids),
                      pred_lut=youtube.VOC_TO_YOUTUBE,
                      protocol="every raw frame of each shot from its first labelled one, the "
                               "labelled frames scored (Fig. 7; youtube-differences)")
    if name == "cityscapes":
        root = _need_dir(spec, data_dir)
        ids = cityscapes.labelled_frame_ids(root, "val")  # a wrong directory fails now
        return Source(spec, len(cityscapes.CLASSES), "cityscapes",
                      lambda s, phase: cityscapes.clips(root, s, phase, "val", ids),
                      phase="coin",
                      phases=sparse,
                      protocol="val, 20-frame snippets, seeded coin phases "
                               "(cityscapes-clockwork-exp)")
    raise ValueError(f"unknown data {spec!r}; use one of: {SOURCE_HELP}")
