"""The data-set registry: one record per data set, each declared in its own module.

Every fact about a data set lives in its record (`DataSet`): the class names, the mean its
frames need, how its net's predictions map to its labels, its frame size, how it forms
videos for evaluation (`Videos`, by the `--data` spec name) and how it reads training and
validation examples (`Training`, by `config.data.name`). A module `cwfcn/data/<name>.py`
declares its record as the module attribute ``DATASET``; `get` finds them all, so adding a
data set is adding one file.

    datasets.get("voc").mean_bgr          # (104.00698793, 116.66876762, 122.67891434)
    datasets.get("youtube").net_classes   # 21: the VOC net, its predictions mapped to 11
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from cwfcn.data import protocol

# READ: `Request -> Sequence[protocol.Video]`, the videos a spec names.
Read = Callable[["Request"], Sequence[Any]]
# FORM: `(videos, schedule, phase) -> protocol.ClipsOf`: what a schedule runs and scores on
# each of `videos` (Sequence[protocol.Video]), the phase already checked.
Form = Callable[[Sequence[Any], Any, str], protocol.ClipsOf]
# `step -> (images uint8 RGB [N, H, W, 3], labels uint8 [N, H, W])`.
Batches = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Request:
    """What `sources.open_source` was asked to open, for `Videos.read`.

    Attributes:
      root: the data set's directory (`--data-dir`); None where `Videos.needs_dir` is False.
      arg: the spec's text after its ":" ("" if none).
      config: the config, or None.
      max_frames: read at most this many frames of a video file (None: all).
    """

    root: str | None
    arg: str = ""
    config: Any = None
    max_frames: int | None = None


@dataclasses.dataclass(frozen=True)
class Videos:
    """One evaluation source of a data set (a `--data` spec): how its raw files become videos
    (READ), how a schedule runs them (FORM), and which phase policies (`protocol.PHASES`) it
    takes. Raw reading is `protocol.clips(read(request), form, schedule, phase)`; a prepared
    (TFDS) set stores `read(request)` and is formed by the same `form`.

    Attributes:
      read: `Request -> Sequence[protocol.Video]`: lists the videos now (a wrong root or
        argument raises ValueError here, before any work) and reads each, and its frames,
        lazily on access. It applies the build-time protocol (label mapping, resizing,
        cropping, which frames a video holds) and sets each video's `scored` frames.
      form: `(videos, schedule, phase) -> protocol.ClipsOf`, `(i, video) -> the clips
        `schedule` runs on video i`: what depends on the schedule (phases, pipeline
        warm-ups, frames alone for the stateless ones, coin draws by the video's index);
        `phase` is already checked and defaulted. It checks the schedule and phase when
        called, and reads only the frames its clips use.
      protocol: the reference the protocol follows, for tables and results.
      help: the spec as `sources.SOURCE_HELP` lists it.
      phase: the default phase policy of fixed schedules (the reference's).
      phases: the phase policies it takes.
      needs_dir: whether it reads a data directory (`--data-dir`).
      args: the spec arguments it takes (the text after ":"), or None for any.
      args_help: what `args` are, for the error on another.
      config_classes: its classes and mean are the config's net's (`net_classes`,
        `mean_bgr_of`: synthetic scenes, an unlabelled video), not the record's.
    """

    read: Read
    form: Form
    protocol: str
    help: str
    phase: str = "clip"
    phases: tuple[str, ...] = ("clip",)
    needs_dir: bool = True
    args: tuple[str, ...] | None = None
    args_help: str = ""
    config_classes: bool = False


@dataclasses.dataclass(frozen=True)
class Images:
    """A data set's labelled still images, by split (whole images, as FCN trains).

    Attributes:
      ids: `(root, split) -> ids`, in split order; raises on a wrong root or split.
      read: `(root, split, id) -> (image uint8 RGB [H, W, 3], label uint8 [H, W])`.
      split: the split `examples` reads by default (the data set's test split).
      resolve_root: `root -> the directory to read` (e.g. VOC's "sample": the embedded one).
    """

    ids: Callable[[str, str], list[str]]
    read: Callable[[str, str, str], tuple[np.ndarray, np.ndarray]]
    split: str
    resolve_root: Callable[[str], str] = str

    def indexed(self, root: str, split: str | None = None
                ) -> Sequence[tuple[np.ndarray, np.ndarray]]:
        """`(image uint8 [H, W, 3], label uint8 [H, W])` of each id of `split` (None: the
        default `split`) under `root`, random access: the split is listed now (a missing one
        raises here), item i is read when asked for (and not kept)."""
        root, split = self.resolve_root(root), self.split if split is None else split
        ids = self.ids(root, split)
        return protocol.Lazy(len(ids), functools.partial(_read_id, self.read, root, split, ids),
                             keep=False)

    def examples(self, root: str, split: str | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The examples of `indexed`, one by one."""
        return iter(self.indexed(root, split))


def _read_id(read: Callable[[str, str, str], Any], root: str, split: str, ids: Sequence[str],
             i: int) -> Any:
    return read(root, split, ids[i])


@dataclasses.dataclass(frozen=True)
class Training:
    """What a `config.data.name` trains and validates on; `training.make_input` builds its
    grain pipeline from exactly one of `batches` and `examples`.

    Attributes:
      batches: `config -> Batches`: whole global batches by step, a pure function of
        (seed, step) (synthetic scenes); or None where `examples` is given.
      validation: `config -> iterator of (images uint8 [N, H, W, 3], labels uint8
        [N, H, W])`, the validation set.
      examples: `config -> Sequence of (image uint8 RGB [H, W, 3], label uint8 [H, W])`:
        the training examples, random access (len, [i] reads one); the pipeline shuffles
        them every epoch, flips, batches and shards them by host. None where `batches` is.
    """

    batches: Callable[[Any], Batches] | None
    validation: Callable[[Any], Iterator[tuple[np.ndarray, np.ndarray]]]
    examples: Callable[[Any], Sequence[tuple[np.ndarray, np.ndarray]]] | None = None

    def __post_init__(self):
        if (self.batches is None) == (self.examples is None):
            raise ValueError("a Training takes exactly one of batches (by step) and examples")


@dataclasses.dataclass(frozen=True)
class DataSet:
    """A data set's record: everything the library knows about it, in one place.

    Attributes:
      name: its name (`get`).
      classes: the label classes' names, in label order (255 = ignore).
      mean_bgr: the mean subtracted from its 0..255 pixels, BGR order (`model.preprocess`).
      pred_lut: the net's class -> the label class (YouTube-Objects maps VOC's 21 to its
        11), or None when the net predicts the label classes.
      frame_size: the frame size policy (how its frames are sized), for tables and docs.
      videos: `--data` spec name -> its `Videos` (`sources.open_source`).
      training: `config.data.name` -> its `Training` (`training.make_batches`).
    """

    name: str
    classes: tuple[str, ...]
    mean_bgr: tuple[float, float, float]
    frame_size: str
    pred_lut: tuple[int, ...] | None = None
    videos: Mapping[str, Videos] = dataclasses.field(default_factory=dict)
    training: Mapping[str, Training] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """The label classes C scored."""
        return len(self.classes)

    @property
    def net_classes(self) -> int:
        """The classes the net must predict."""
        return self.num_classes if self.pred_lut is None else len(self.pred_lut)


@functools.cache
def registry() -> dict[str, DataSet]:
    """Every record of `cwfcn.data`, by its name and by each spec and training name it
    answers (`DataSet.videos`, `DataSet.training`).

    Raises:
      ValueError: two records claim one name.
    """
    package = importlib.import_module("cwfcn.data")
    found: dict[str, DataSet] = {}
    for module in pkgutil.iter_modules(package.__path__):
        record = getattr(importlib.import_module(f"cwfcn.data.{module.name}"), "DATASET", None)
        if not isinstance(record, DataSet):
            continue
        for name in {record.name, *record.videos, *record.training}:
            if name in found and found[name] is not record:
                raise ValueError(f"data sets {found[name].name!r} and {record.name!r} both "
                                 f"claim the name {name!r}: rename one")
            found[name] = record
    return found


def get(name: str) -> DataSet:
    """The record of a data set, by its name or any spec or training name it answers, or
    of a prepared set "tfds:NAME[/CONFIG][:SPLIT]" (`cwfcn.data.prepared.record_of`).

    Raises:
      ValueError: no data set has that name.
    """
    if name.strip().lower().startswith("tfds:"):
        from cwfcn.data import prepared  # tensorflow_datasets only when asked for

        return prepared.record_of(name)
    records = registry()
    if name not in records:
        raise ValueError(f"unknown data set {name!r}; use one of {sorted(records)}")
    return records[name]


def records() -> list[DataSet]:
    """Each record once, in module order."""
    return list({id(record): record for record in registry().values()}.values())


def mean_bgr_of(config) -> tuple[float, float, float]:
    """The mean a config's net takes: `config.data.mean` (a data set's name) when the config
    sets it, else the mean of `config.data.name`'s record."""
    return get(config.data.get("mean") or config.data.name).mean_bgr


def net_classes(config) -> int:
    """The classes a config's net predicts: `config.model.num_classes` when set (not 0),
    else the record's (`DataSet.net_classes` of `config.data.name`)."""
    return config.model.get("num_classes") or get(config.data.name).net_classes
