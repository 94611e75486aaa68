"""Named evaluation data: the embedded sample and the paper's data sets as labelled videos.

`open_source("pascal-translated:16", data_dir=...)` gives a `Source`: how many classes
its labels have, which mean its frames need, and a re-iterable of
(frames uint8 RGB `[T, H, W, 3]`, labels uint8 `[T, H, W]`, 255 = ignore) videos that
reads from disk lazily each time it is iterated.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator

import numpy as np

from cwfcn import metrics
from cwfcn.data import cityscapes, nyud, samples, synthetic, translate, video, voc, youtube
from cwfcn.data.files import IGNORE_LABEL

SOURCE_HELP = ("sample, synthetic, pascal-translated:16, pascal-translated:32, nyud, youtube, "
               "cityscapes (these need --data-dir), or video:PATH (any video file, unlabelled)")


@dataclasses.dataclass(frozen=True)
class Source:
    """A labelled video data set.

    Attributes:
      name: the spec it was opened from.
      num_classes: the label classes C (255 = ignore).
      mean: key of `model.MEAN_BGR` for its frames.
      videos: a function returning a fresh iterator of (frames, labels) videos.
    """

    name: str
    num_classes: int
    mean: str
    videos: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The videos, each checked: labels outside [0, C) other than 255 raise ValueError."""
        for frames, labels in self.videos():
            metrics.check_labels(labels, self.num_classes)
            yield frames, labels


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
        return Source(spec, num_classes, mean,
                      functools.partial(unlabelled_video, path, max_frames))
    name, _, arg = spec.strip().lower().partition(":")
    if name == "sample":
        return Source(spec, 21, "voc", sample_videos)
    if name == "synthetic":
        if config is None:
            raise ValueError("data 'synthetic' needs a config (config.data, config.model)")
        d = config.data
        make = functools.partial(synthetic_videos, seed=config.seed, num_videos=d.num_videos,
                                 size=d.size, shift=d.shift, num_frames=d.num_frames,
                                 num_classes=config.model.num_classes)
        return Source(spec, config.model.num_classes, d.mean, make)
    if name == "pascal-translated":
        if arg not in ("16", "32"):
            raise ValueError(f"bad data {spec!r}: the paper's shifts are pascal-translated:16 "
                             "and pascal-translated:32")
        root = _need_dir(spec, data_dir)
        return Source(spec, 21, "voc",
                      functools.partial(voc.translated_videos, root, int(arg), 6, "seg11valid"))
    if name == "nyud":
        return Source(spec, 40, "nyud",
                      functools.partial(nyud.clip_videos, _need_dir(spec, data_dir), "test"))
    if name == "youtube":
        return Source(spec, 21, "voc", functools.partial(youtube.videos, _need_dir(spec, data_dir)))
    if name == "cityscapes":
        return Source(spec, 19, "cityscapes",
                      functools.partial(cityscapes.videos, _need_dir(spec, data_dir), "val"))
    raise ValueError(f"unknown data {spec!r}; use one of: {SOURCE_HELP}")
