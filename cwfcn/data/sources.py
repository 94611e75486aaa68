"""Named evaluation data: the embedded sample and the paper's data sets as labelled videos.

`open_source("pascal-translated:16", data_dir=...)` gives a `Source`: how many classes
its labels have, which mean its frames need, and, per schedule, the clips it runs and
scores as the authors' experiments do (`protocol.Clip`: frames uint8 RGB `[T, H, W, 3]`,
labels uint8 `[T, H, W]`, 255 = ignore, the scored frames), read from disk lazily. The
names and their protocols come from the data-set records (`datasets.DataSet.videos`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cwfcn import clockwork, metrics
from cwfcn.data import datasets, protocol
from cwfcn.data.protocol import whole_videos

__all__ = ["SOURCE_HELP", "Source", "open_source", "whole_videos"]


def _source_help() -> str:
    """The `--data` specs of every record: those without a directory, then those with."""
    entries = [v for record in datasets.records() for v in record.videos.values()]
    free = [v.help for v in entries if not v.needs_dir]
    need_dir = [v.help for v in entries if v.needs_dir]
    return f"{', '.join(free)}, {', '.join(need_dir)} (these need --data-dir)"


SOURCE_HELP = _source_help()


@dataclasses.dataclass(frozen=True)
class Source:
    """A labelled video data set and the protocol its experiments follow.

    Attributes:
      name: the spec it was opened from.
      num_classes: the label classes C scored (255 = ignore).
      mean_bgr: the mean its frames need, BGR (`model.preprocess`; `DataSet.mean_bgr`).
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
    mean_bgr: tuple[float, float, float]
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
      config: the config (`config.data` and the config's net's classes shape the synthetic
        videos; an unlabelled video takes the config's classes and mean).
      max_frames: read at most this many frames of a video:PATH.

    Returns:
      The `Source`.

    Raises:
      ValueError: an unknown spec, a missing --data-dir, or (`video.VideoError`) a video
        file that cannot be opened.
    """
    head, _, arg = spec.strip().partition(":")
    name = head.lower()
    record = datasets.registry().get(name)
    if record is None or name not in record.videos:
        raise ValueError(f"unknown data {spec!r}; use one of: {SOURCE_HELP}")
    videos = record.videos[name]
    if videos.args is not None and arg not in videos.args:
        raise ValueError(f"bad data {spec!r}: {videos.args_help}")
    root = _need_dir(spec, data_dir) if videos.needs_dir else None
    make_clips = videos.make_clips(datasets.Request(root, arg, config, max_frames))
    num_classes, mean_bgr, pred_lut = record.num_classes, record.mean_bgr, record.pred_lut
    if videos.config_classes and config is not None:
        num_classes, mean_bgr = datasets.net_classes(config), datasets.mean_bgr_of(config)
    return Source(spec, num_classes, mean_bgr, make_clips, phase=videos.phase,
                  phases=videos.phases, pred_lut=pred_lut, protocol=videos.protocol)
