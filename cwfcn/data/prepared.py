"""Prepared data sets: the records `cwfcn.data.builders` wrote, read back without TensorFlow.

A spec ``NAME[/CONFIG][:SPLIT]`` names a builder (`builders.BUILDERS`), one of its configs
(default: its first) and a split (default: the config's evaluation split, `Config.split`);
``data_dir`` is the TFDS data dir the builder was prepared into
(``python -m cwfcn.data.prepare NAME --data-dir DATA_DIR``). A leading ``tfds:`` is allowed.

    videos("cwfcn_nyud/clips", data_dir)[i]      # protocol.Video, read from disk on access
    open_prepared("cwfcn_nyud", data_dir)        # sources.Source: `--data tfds:cwfcn_nyud`
    images("cwfcn_pascal/images:train", data_dir)[i]   # (image uint8 [H, W, 3], label [H, W])
    record_of("tfds:cwfcn_pascal/images:train")  # datasets.DataSet: classes, mean

Reading goes through `tfds.data_source` (random access over array_record, records in the
builder's order), so every index can be read alone: per-host sharding and shuffling
(`grain`) index it. A data dir that is missing, not prepared, left partial by an interrupted
build (only ``incomplete.*``) or corrupt (unreadable records, a bad dataset_info.json, a
truncated or missing file) raises `PreparedDataError`, naming the directory and the command
that (re)builds it. TensorFlow-datasets is imported when a spec is first parsed, not with
this module.
"""

from __future__ import annotations

import collections.abc
import functools
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cwfcn.data import datasets, protocol

PREFIX = "tfds:"
SPEC_HELP = "NAME[/CONFIG][:SPLIT], e.g. cwfcn_pascal/shift16:seg11valid"


class PreparedDataError(ValueError):
    """Prepared data that cannot be read: missing, partial or corrupt. The message names the
    directory and the `python -m cwfcn.data.prepare` command that (re)builds it."""


def _builders():
    from cwfcn.data import builders  # imports tensorflow_datasets: only when used

    return builders


def parse_spec(spec: str) -> tuple[str, str, str]:
    """``[tfds:]NAME[/CONFIG][:SPLIT]`` -> (name, config, split), defaults filled in: the
    builder's first config, the config's evaluation split.

    Raises:
      ValueError: an unknown builder, config or split; the message lists the choices.
    """
    text = spec.strip()
    text = text[len(PREFIX):] if text.lower().startswith(PREFIX) else text
    head, _, split = text.partition(":")
    name, _, config = head.partition("/")
    name = name.strip().lower()
    builders = _builders()
    if name not in builders.BUILDERS:
        raise ValueError(f"unknown prepared data {spec!r}: use {SPEC_HELP}, NAME one of "
                         f"{', '.join(builders.BUILDERS)}")
    config = config.strip() or builders.BUILDERS[name].BUILDER_CONFIGS[0].name
    found = builders.config_of(name, config)
    split = split.strip() or found.split
    if split not in found.split_names:
        raise ValueError(f"{name}/{config} has no split {split!r}; use one of "
                         f"{', '.join(found.split_names)}")
    return name, config, split


def canonical(spec: str) -> str:
    """``tfds:NAME/CONFIG:SPLIT``, every part spelled out (`parse_spec`)."""
    name, config, split = parse_spec(spec)
    return f"{PREFIX}{name}/{config}:{split}"


def prepare_command(name: str, config: str, data_dir: str | None, *,
                    overwrite: bool = False) -> str:
    """The command that (re)builds ``name/config`` into `data_dir`."""
    manual = " --manual-dir RAW" if _builders().BUILDERS[name].MANUAL_DOWNLOAD_INSTRUCTIONS else ""
    return (f"python -m cwfcn.data.prepare {name}/{config}{manual} --data-dir "
            f"{data_dir or 'DATA_DIR'}{' --overwrite' if overwrite else ''}")


def _version_dir(name: str, config: str, data_dir: str | None) -> Path:
    """``data_dir/name/config/VERSION``, checked to hold a complete build.

    Raises:
      PreparedDataError: no data dir, or no complete build there (none, or only a partial
        ``incomplete.*`` one).
    """
    builders = _builders()
    if not data_dir:
        raise PreparedDataError(f"prepared data {name}/{config} needs --data-dir (the TFDS "
                                "data dir it was prepared into); prepare it with "
                                f"`{prepare_command(name, config, None)}`")
    config_dir = Path(data_dir) / name / config
    version_dir = config_dir / builders.VERSION
    if (version_dir / "dataset_info.json").is_file():
        return version_dir
    partial = sorted(config_dir.glob(f"incomplete.*_{builders.VERSION}"))
    overwrite = False
    if version_dir.is_dir():
        state, overwrite = "has no dataset_info.json: corrupt", True
    elif partial:
        state = (f"does not exist: {config_dir} holds only a partial build "
                 f"({partial[0].name}: interrupted, or still running)")
    elif others := sorted(p.name for p in config_dir.glob("*") if p.is_dir()):
        state = f"does not exist (its parent holds version(s) {others}): not prepared"
    else:
        state = "does not exist: not prepared"
    command = prepare_command(name, config, data_dir, overwrite=overwrite)
    raise PreparedDataError(f"prepared data {version_dir} {state}; build it with `{command}`")


class PreparedVideos(collections.abc.Sequence):
    """The videos of one prepared split: `protocol.Video`s decoded from the records on access.

    Random access: `videos[i]` reads record i alone (the last one read is kept: the clips
    of one video share its frames).
    """

    def __init__(self, source, where: Path, rebuild: str):
        self._source, self._where, self._rebuild = source, where, rebuild
        self._len = len(source)
        self._last: tuple[int, protocol.Video] | None = None  # swapped whole: thread-safe

    def __getstate__(self) -> dict[str, Any]:
        # picklable (grain's worker processes): the data source reopens its files there
        return {**self.__dict__, "_last": None}

    def __len__(self) -> int:
        return self._len

    def record(self, i: int) -> dict[str, Any]:
        """Record `i` as stored: {key bytes, frames uint8 [T, H, W, 3], times int32 [T],
        labelled int32 [L], labels uint8 [L, H, W], scored int32 [S]}.

        Raises:
          PreparedDataError: the record cannot be read or decoded.
          IndexError: `i` outside [-len, len).
        """
        if not -self._len <= i < self._len:
            raise IndexError(f"video {i} of {self._len}")
        try:
            return self._source[i % self._len]
        except Exception as e:  # array_record raises RuntimeError; decoding others
            raise _corrupt(self._where, self._rebuild, e, f": record {i} cannot be read") from e

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(self._len)[i]]
        i = int(i) % self._len if -self._len <= int(i) < self._len else int(i)
        last = self._last
        if last is not None and last[0] == i:
            return last[1]
        video = to_video(self.record(i), self._where, self._rebuild)
        self._last = (i, video)
        return video


def _corrupt(where: Path, rebuild: str, e: Exception, what: str = "") -> PreparedDataError:
    """The error of unreadable prepared data: the directory, `what` failed, the cause (cut
    short), and the command that rebuilds it."""
    cause = " ".join(str(e).split())[:200]
    return PreparedDataError(f"prepared data {where} is corrupt{what} ({type(e).__name__}: "
                             f"{cause}); rebuild it with `{rebuild}`")


def to_video(record: dict[str, Any], where: Path | str = "", rebuild: str = "") -> protocol.Video:
    """A record of `builders.features()` as a `protocol.Video` (frames uint8 [T, H, W, 3],
    labels uint8 [L, H, W]).

    Raises:
      PreparedDataError: the record is not a valid video (corrupt data).
    """
    key = record["key"]
    try:
        return protocol.Video(
            key=key.decode() if isinstance(key, bytes) else str(key),
            frames=np.asarray(record["frames"], np.uint8),
            times=tuple(int(t) for t in record["times"]),
            labelled=tuple(int(t) for t in record["labelled"]),
            labels=np.asarray(record["labels"], np.uint8),
            scored=tuple(int(t) for t in record["scored"]))
    except (ValueError, KeyError, TypeError) as e:
        raise PreparedDataError(f"prepared data {where} is corrupt: {e}; rebuild it with "
                                f"`{rebuild}`") from e


def videos(spec: str, data_dir: str | None) -> PreparedVideos:
    """The videos of a prepared split, random access (`PreparedVideos`).

    Args:
      spec: ``[tfds:]NAME[/CONFIG][:SPLIT]`` (`parse_spec`).
      data_dir: the TFDS data dir it was prepared into.

    Raises:
      ValueError: a bad spec.
      PreparedDataError: missing, partial or corrupt data (the first and last record of
        every shard are read now; any other that cannot be read raises when read).
    """
    import tensorflow_datasets as tfds

    name, config, split = parse_spec(spec)
    where = _version_dir(name, config, data_dir)
    rebuild = prepare_command(name, config, data_dir, overwrite=True)

    try:
        builder = tfds.builder(f"{name}/{config}", data_dir=str(data_dir))
        splits = builder.info.splits
        if split not in splits:
            raise PreparedDataError(
                f"prepared data {where} has no split {split!r} (it has "
                f"{', '.join(splits) or 'none'}): its raw files were not in the manual dir when "
                f"it was built; add them and rebuild with `{rebuild}`")
        missing = [p for p in splits[split].filepaths if not Path(p).is_file()]
        if missing:
            raise PreparedDataError(f"prepared data {where} is incomplete: {missing[0]} is "
                                    f"missing; rebuild it with `{rebuild}`")
        source = builder.as_data_source(split=split)
        prepared = PreparedVideos(source, where, rebuild)
        starts = np.cumsum([0, *splits[split].shard_lengths])
        for i in {int(j) for s, e in itertools.pairwise(starts) if e > s for j in (s, e - 1)}:
            prepared.record(i)  # opens each shard: a truncated file fails here
    except PreparedDataError:
        raise
    except Exception as e:  # tfds and array_record raise many kinds (ParseError, RuntimeError)
        raise _corrupt(where, rebuild, e) from e
    return prepared


def open_prepared(spec: str, data_dir: str | None, config=None):
    """The `sources.Source` of a prepared video config: ``--data tfds:SPEC``, scored as the
    raw layout's spec is (its `datasets.Videos` entry's FORM over the prepared videos).

    Args:
      spec: ``[tfds:]NAME[/CONFIG][:SPLIT]`` of a video config.
      data_dir: the TFDS data dir.
      config: the config (as `sources.open_source` takes it).

    Raises:
      ValueError: a bad spec, or an images config (training photos, not videos).
      PreparedDataError: missing, partial or corrupt data.
    """
    from cwfcn.data import sources  # sources imports this module for "tfds:" specs

    name, config_name, _ = parse_spec(spec)
    found = _builders().config_of(name, config_name)
    if found.is_images:
        video_configs = [c.name for c in _builders().BUILDERS[name].BUILDER_CONFIGS
                         if not c.is_images]
        raise ValueError(f"{name}/{config_name} holds training photos, not videos to "
                         f"evaluate: use {' or '.join(f'tfds:{name}/{c}' for c in video_configs)}")
    record = datasets.get(found.record)
    return sources.make_source(canonical(spec), record, record.videos[found.spec],
                               videos(spec, data_dir), config)


def _photo(videos: PreparedVideos, i: int) -> tuple[np.ndarray, np.ndarray]:
    video = videos[i]
    return np.asarray(video.frames[0]), np.asarray(video.labels[0])


def images(spec: str, data_dir: str | None) -> Sequence[tuple[np.ndarray, np.ndarray]]:
    """The labelled photos of a prepared images split, random access (for training).

    Args:
      spec: ``[tfds:]NAME/images[:SPLIT]``, e.g. ``cwfcn_pascal/images:train``.
      data_dir: the TFDS data dir.

    Returns:
      A sequence of ``(image uint8 [H, W, 3], label uint8 [H, W])``, in the reader's order.

    Raises:
      ValueError: a bad spec, or a video config.
      PreparedDataError: missing, partial or corrupt data.
    """
    name, config_name, _ = parse_spec(spec)
    if not _builders().config_of(name, config_name).is_images:
        image_configs = [c.name for c in _builders().BUILDERS[name].BUILDER_CONFIGS
                         if c.is_images]
        use = (" or ".join(f"tfds:{name}/{c}" for c in image_configs)
               or "a data set with an images config")
        raise ValueError(f"{name}/{config_name} holds videos to evaluate, not training photos: "
                         f"train on {use}")
    split = videos(spec, data_dir)
    return protocol.Lazy(len(split), functools.partial(_photo, split), keep=False)


def record_of(spec: str) -> datasets.DataSet:
    """The data-set record (classes, mean, prediction map) of a prepared spec.

    Raises:
      ValueError: a bad spec.
    """
    name, config_name, _ = parse_spec(spec)
    return datasets.get(_builders().config_of(name, config_name).record)
