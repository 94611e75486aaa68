"""Named evaluation data: the embedded sample and the paper's data sets as labelled videos.

`open_source("pascal-translated:16", data_dir=...)` gives a `Source`: how many classes
its labels have, which mean its frames need, and, per schedule, the clips it runs and
scores as the authors' experiments do (`protocol.Clip`: frames uint8 RGB `[T, H, W, 3]`,
labels uint8 `[T, H, W]`, 255 = ignore, the scored frames; a video file's is a
`protocol.StreamClip`, decoded as it runs), read from disk lazily. The names and their
protocols come from the data-set records (`datasets.DataSet.videos`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from cwfcn import clockwork, metrics
from cwfcn.data import datasets, protocol

__all__ = ["SOURCE_HELP", "TFDS_PREFIX", "Source", "make_source", "open_source"]

# A spec naming a prepared (TFDS) data set: "tfds:NAME[/CONFIG][:SPLIT]".
TFDS_PREFIX = "tfds:"


def _source_help() -> str:
    """The `--data` specs of every record: those without a directory, then those with."""
    entries = [v for record in datasets.records() for v in record.videos.values()]
    free = [v.help for v in entries if not v.needs_dir]
    need_dir = [v.help for v in entries if v.needs_dir]
    return (f"{', '.join(free)}, {', '.join(need_dir)} (these need --data-dir), "
            f"{TFDS_PREFIX}NAME[/CONFIG][:SPLIT] (a prepared data set, --data-dir: its TFDS "
            "data dir)")


SOURCE_HELP = _source_help()


@dataclasses.dataclass(frozen=True)
class Source:
    """A labelled video data set and the protocol its experiments follow.

    Attributes:
      name: the spec it was opened from.
      num_classes: the label classes C scored (255 = ignore).
      mean_bgr: the mean its frames need, BGR (`model.preprocess`; `DataSet.mean_bgr`).
      videos: its videos (`protocol.Video`), read lazily on access.
      form: `(videos, schedule, phase) -> protocol.ClipsOf`: what a schedule runs and
        scores on each video (`datasets.Videos.form`).
      phase: the default phase policy of fixed schedules (the reference's).
      phases: the phase policies it takes.
      pred_lut: the net's class -> the scored class (YouTube-Objects maps VOC's 21 to its
        11), or None when the net predicts the label classes.
      protocol: the reference the protocol follows, for tables and results.
    """

    name: str
    num_classes: int
    mean_bgr: tuple[float, float, float]
    videos: Sequence[protocol.Video]
    form: datasets.Form
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

    def clips(self, schedule, phase: str | None = None, *,
              shard: tuple[int, int] | None = None) -> Iterator[protocol.Clip]:
        """The clips `schedule` runs (`protocol.clips`, each with its place), each checked:
        labels outside [0, C) other than 255 raise ValueError. With `shard` (process,
        processes), only the videos i with i % processes == process are read."""
        for clip in protocol.clips(self.videos, self.form, schedule, self.check_phase(phase),
                                   shard=shard):
            if isinstance(clip, protocol.Clip):  # a `StreamClip` has no labels
                metrics.check_labels(clip.labels, self.num_classes)
            yield clip

    def first_frames(self, n: int) -> np.ndarray:
        """uint8 RGB `[min(n, T), H, W, 3]`: the first `n` frames of its first clip as the
        stateless schedules (oracle) run it (a stream's start, read alone)."""
        return next(self.clips(clockwork.parse_schedule("oracle"))).head(n)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The videos, as the stateless schedules (oracle) run them: (frames, labels); a
        video file (`protocol.StreamClip`) is not held whole, so it has no such pair."""
        for clip in self.clips(clockwork.parse_schedule("oracle")):
            if not isinstance(clip, protocol.Clip):
                raise ValueError(f"{self.name}: a video file is run as it is read, never "
                                 "held whole; use Source.clips")
            yield clip.frames, clip.labels


def _need_dir(spec: str, data_dir: str | None) -> str:
    if not data_dir:
        raise ValueError(f"data {spec!r} needs --data-dir: the directory of the data set "
                         "(see README, 'Data sets')")
    return data_dir


def make_source(spec: str, record: datasets.DataSet, entry: datasets.Videos,
                videos: Sequence[protocol.Video], config=None) -> Source:
    """The `Source` of `videos` under `entry`'s protocol, `record`'s classes and mean (the
    config's net's where `entry.config_classes` and a config is given).

    Args:
      spec: the name it was opened from.
      record: the data set's record.
      entry: the `--data` entry of `record` whose READ made `videos` (its FORM, phases,
        protocol).
      videos: the videos, raw (`entry.read`) or prepared.
      config: the config, or None.
    """
    num_classes, mean_bgr = record.num_classes, record.mean_bgr
    if entry.config_classes and config is not None:
        num_classes, mean_bgr = datasets.net_classes(config), datasets.mean_bgr_of(config)
    return Source(spec, num_classes, mean_bgr, videos, entry.form, phase=entry.phase,
                  phases=entry.phases, pred_lut=record.pred_lut, protocol=entry.protocol)


def open_source(
    spec: str, *, data_dir: str | None = None, config=None, max_frames: int | None = None
) -> Source:
    """Opens a named data source.

    Args:
      spec: one of `SOURCE_HELP`; "tfds:NAME[/CONFIG][:SPLIT]" is a prepared data set
        (`cwfcn.data.prepared.open_prepared`), read from `data_dir`.
      data_dir: the data set's directory (not needed for sample and synthetic), or a
        prepared set's TFDS data dir.
      config: the config (`config.data` and the config's net's classes shape the synthetic
        videos; an unlabelled video takes the config's classes and mean).
      max_frames: read at most this many frames of a video:PATH.

    Returns:
      The `Source`.

    Raises:
      ValueError: an unknown spec, a missing --data-dir, or (`video.VideoError`) a video
        file that cannot be opened.
    """
    text = spec.strip()
    if text.lower().startswith(TFDS_PREFIX):
        from cwfcn.data import prepared  # TFDS only when asked for

        return prepared.open_prepared(text[len(TFDS_PREFIX):], data_dir=data_dir, config=config)
    head, _, arg = text.partition(":")
    name = head.lower()
    record = datasets.registry().get(name)
    if record is None or name not in record.videos:
        raise ValueError(f"unknown data {spec!r}; use one of: {SOURCE_HELP}")
    entry = record.videos[name]
    if entry.args is not None and arg not in entry.args:
        raise ValueError(f"bad data {spec!r}: {entry.args_help}")
    root = _need_dir(spec, data_dir) if entry.needs_dir else None
    videos = entry.read(datasets.Request(root, arg, config, max_frames))
    return make_source(spec, record, entry, videos, config)
