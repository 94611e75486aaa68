"""YouTube-Objects with the pixelwise masks of Jain & Grauman (ECCV 2014), as the paper scores it.

The masks cover 10 classes, all VOC classes; each shot is one object class on background.
The protocol is the authors' (clockwork-fcn datasets/youtube.py and the notebooks
youtube-clockwork-exp, youtube-pipeline-exp):
- labels are 11 classes, background then the ten (`CLASSES`); the VOC-trained net's 21-class
  predictions are mapped to them, every other VOC class to background (`VOC_TO_YOUTUBE`;
  youtube-clockwork-exp cell 8: ``out_yt[out == PV.classes.index(c)] = YT.classes.index(c)``
  on zeros), and scored with ``n_cl = 11``;
- frames and masks are resized so that the longer side is 500 px, the other side truncated
  (``int(dim * 500 / max)``), frames bilinear and masks nearest; then a mask pixel is the
  object when its grey value is > 15 (`youtube.resize`, `make_label`);
- only labelled frames f >= 21 are scored (``if f < 2*CR + 1: continue``, CR = 10), and the
  frames before a scored one are taken 10 raw frames apart (f - 10, f - 20);
- each schedule runs its own clips (`clips`): see that function.

Layout (Jain & Grauman's ``youtube_masks`` release; get it, after registering, from
http://vision.cs.utexas.edu/projects/videoseg/, so there is no `download` here):

    <root>/youtube_masks/<class>/data/<video>/shots/<shot>/labels/<n>.jpg   mask of frame n
    the frame n itself, the first of these that exists:
        <root>/v1/<class>/data/<video>/shots/<shot>/frame<n:04d>.jpg   (YouTube-Objects v1,
                                                   every raw frame: the reference's layout)
        <shot dir>/images/frame<n:04d>.jpg        (the "full" release, frames beside masks)
        <shot dir>/images/<n:05d>.jpg, .png

where ``<shot dir>`` is ``<root>/youtube_masks/<class>/data/<video>/shots/<shot>`` and
``<n>`` is the mask file's integer name (``00001.jpg`` is frame 1). About every 10th frame of
a shot has a mask.

Videos (`videos`): one per shot, over its masked frames only, in frame order, as in the paper
("effectively 10X subsampling"); every frame of these videos is labelled. They follow the
package-wide contract ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])`` in which frames
without ground truth would carry labels filled with 255. Labels are 0 (background) or the
class's index in `CLASSES`. `full_rate_shot` gives every raw frame of a shot from its first
labelled one on (Table 1, Fig. 2 and Fig. 7 run on those).

There is no official split: shots are named ``<class>/<video>/<shot>`` (see `shot_ids`), and
a split file listing such ids, one a line, can be read with `cwfcn.data.files.read_ids`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cwfcn.data import datasets, protocol, voc
from cwfcn.data.files import IGNORE_LABEL, MissingFileError, require
from cwfcn.data.voc import VOC_CLASSES

YOUTUBE_CLASSES = (
    "aeroplane",
    "bird",
    "boat",
    "car",
    "cat",
    "cow",
    "dog",
    "horse",
    "motorbike",
    "train",
)
# The label classes scored (datasets/youtube.py `self.classes`): background, then the ten.
CLASSES = ("background", *YOUTUBE_CLASSES)
NUM_CLASSES = len(CLASSES)
# Each class's id in VOC_CLASSES: aeroplane 1, bird 3, boat 4, car 7, cat 8, cow 10, dog 12,
# horse 13, motorbike 14, train 19.
VOC_ID = {name: VOC_CLASSES.index(name) for name in YOUTUBE_CLASSES}
# A VOC prediction's YouTube label: the ten classes to theirs, every other VOC class to 0.
VOC_TO_YOUTUBE = tuple(CLASSES.index(c) if c in CLASSES else 0 for c in VOC_CLASSES)

DEFAULT_THRESHOLD = 15
MAX_DIM = 500  # the longer side after resizing ("match PASCAL VOC training data")
SUBSAMPLE = 10  # raw frames between the frames a clip takes (CR in the notebooks)
FIRST_SCORED = 2 * SUBSAMPLE + 1  # "skip the first 2 frames to align with pipeline"

_FIX = (
    "get the YouTube-Objects masks of Jain & Grauman (youtube_masks, from "
    "http://vision.cs.utexas.edu/projects/videoseg/) and unpack them so that "
    "<root>/youtube_masks/<class>/data exists, with the frames laid out as the "
    "cwfcn.data.youtube module docstring says, or pass the directory holding youtube_masks/ as "
    "root"
)
_MASK_RE = re.compile(r"(\d+)\.(jpg|png)")
_FRAME_RE = re.compile(r"(?:frame)?(\d+)\.(jpg|png)")


def _masks_dir(root: str | os.PathLike[str]) -> Path:
    return require(Path(root) / "youtube_masks", _FIX)


def _parse_shot_id(shot_id: str) -> tuple[str, str, str]:
    parts = shot_id.split("/")
    if len(parts) != 3 or parts[0] not in VOC_ID:
        raise ValueError(
            f"bad shot id {shot_id!r}: expected '<class>/<video>/<shot>' with class one of "
            f"{', '.join(YOUTUBE_CLASSES)}, e.g. 'cat/0001/001'"
        )
    return parts[0], parts[1], parts[2]


def shot_dir(root: str | os.PathLike[str], shot_id: str) -> Path:
    """``<root>/youtube_masks/<class>/data/<video>/shots/<shot>`` for ``<class>/<video>/<shot>``."""
    cls, video, shot = _parse_shot_id(shot_id)
    return _masks_dir(root) / cls / "data" / video / "shots" / shot


def mask_paths(root: str | os.PathLike[str], shot_id: str) -> dict[int, Path]:
    """The shot's mask files by frame number, in frame order.

    Raises:
      MissingFileError: the shot has no ``labels/`` directory or no mask in it.
    """
    labels = require(shot_dir(root, shot_id) / "labels", _FIX)
    numbered = sorted(
        (int(match.group(1)), path)
        for path in labels.iterdir()
        if (match := _MASK_RE.fullmatch(path.name))
    )
    if not numbered:
        raise MissingFileError(f"{labels} holds no <n>.jpg mask; {_FIX}")
    return dict(numbered)


def shot_ids(root: str | os.PathLike[str], classes: Iterable[str] = YOUTUBE_CLASSES) -> list[str]:
    """All shots with at least one mask, as sorted ``<class>/<video>/<shot>`` ids.

    Args:
      root: the directory holding ``youtube_masks/``.
      classes: which of `YOUTUBE_CLASSES` to list.
    """
    base = _masks_dir(root)
    ids = []
    for cls in classes:
        if cls not in VOC_ID:
            raise ValueError(f"unknown class {cls!r}; choose from {', '.join(YOUTUBE_CLASSES)}")
        for labels in sorted((base / cls / "data").glob("*/shots/*/labels")):
            if any(_MASK_RE.fullmatch(p.name) for p in labels.iterdir()):
                shot = labels.parent
                ids.append(f"{cls}/{shot.parent.parent.name}/{shot.name}")
    return ids


def _v1_dir(root: str | os.PathLike[str], shot_id: str) -> Path:
    cls, video, shot = _parse_shot_id(shot_id)
    return Path(root) / "v1" / cls / "data" / video / "shots" / shot


def frame_numbers(root: str | os.PathLike[str], shot_id: str) -> list[int]:
    """The shot's raw frame numbers, sorted: from the v1 tree if it has the shot, else from
    ``<shot dir>/images`` (datasets/youtube.py `list_frames`).

    Raises:
      MissingFileError: neither holds a frame.
    """
    for directory in (_v1_dir(root, shot_id), shot_dir(root, shot_id) / "images"):
        if directory.is_dir():
            numbers = sorted({int(m.group(1)) for p in directory.iterdir()
                              if (m := _FRAME_RE.fullmatch(p.name))})
            if numbers:
                return numbers
    raise MissingFileError(f"no frames of shot {shot_id} in {_v1_dir(root, shot_id)} or "
                           f"{shot_dir(root, shot_id) / 'images'}; {_FIX}")


def frame_path(root: str | os.PathLike[str], shot_id: str, frame: int) -> Path:
    """Where frame ``frame`` of a shot is: the first existing candidate of the module docstring.

    Raises:
      MissingFileError: none exists; the message names them all.
    """
    images = shot_dir(root, shot_id) / "images"
    candidates = [
        _v1_dir(root, shot_id) / f"frame{frame:04d}.jpg",  # the reference's (load_frame)
        images / f"frame{frame:04d}.jpg",
        images / f"{frame:05d}.jpg",
        images / f"{frame:05d}.png",
    ]
    for path in candidates:
        if path.exists():
            return path
    raise MissingFileError(
        f"frame {frame} of shot {shot_id} not found; looked for {', '.join(map(str, candidates))}"
        f"; {_FIX}"
    )


def resized_size(shape: tuple[int, ...], max_dim: int = MAX_DIM) -> tuple[int, int]:
    """(H, W) after resizing the longer side to `max_dim`, the other truncated, as
    datasets/youtube.py `resize`: ``int(dim * 500.0 / max(H, W))``."""
    h, w = shape[:2]
    scale = float(max_dim) / max(h, w)
    return int(h * scale), int(w * scale)


def _resize(array: np.ndarray, resample: Image.Resampling, max_dim: int) -> np.ndarray:
    h, w = resized_size(array.shape, max_dim)
    if (h, w) == array.shape[:2]:
        return array
    return np.asarray(Image.fromarray(array).resize((w, h), resample=resample), np.uint8)


def read_frame(root: str | os.PathLike[str], shot_id: str, frame: int,
               max_dim: int = MAX_DIM) -> np.ndarray:
    """Raw frame `frame` of a shot, resized (bilinear) to the longer side `max_dim` (the
    reference's 500): uint8 RGB `[H, W, 3]`."""
    path = frame_path(root, shot_id, frame)
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), np.uint8)
    return _resize(rgb, Image.Resampling.BILINEAR, max_dim)


def mask_to_labels(mask: np.ndarray, cls: str, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Binary grey mask -> labels: ``cls``'s index in `CLASSES` where ``mask > threshold``, else 0.

    Args:
      mask: ``[H, W]`` grey values (any integer dtype; JPEG masks are 0..255).
      cls: one of `YOUTUBE_CLASSES`.
      threshold: grey value above which a pixel is the object.

    Returns:
      uint8 ``[H, W]`` labels.
    """
    return np.where(np.asarray(mask) > threshold, CLASSES.index(cls), 0).astype(np.uint8)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask file as uint8 ``[H, W]`` grey values, as stored."""
    with Image.open(require(path, _FIX)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def read_label(root: str | os.PathLike[str], shot_id: str, frame: int,
               threshold: int = DEFAULT_THRESHOLD, max_dim: int = MAX_DIM) -> np.ndarray:
    """The labels of masked frame `frame`: the mask resized (nearest) to the longer side
    `max_dim`, then thresholded (`mask_to_labels`), as the reference's `load_label` +
    `make_label`: uint8 `[H, W]`."""
    cls, _, _ = _parse_shot_id(shot_id)
    path = mask_paths(root, shot_id).get(frame)
    if path is None:
        raise MissingFileError(f"shot {shot_id} has no mask of frame {frame}; {_FIX}")
    mask = _resize(read_mask(path), Image.Resampling.NEAREST, max_dim)
    return mask_to_labels(mask, cls, threshold)


def _check_pair(frame: np.ndarray, label: np.ndarray, shot_id: str, number: int) -> np.ndarray:
    if frame.shape[:2] != label.shape:
        raise ValueError(
            f"frame {number} of shot {shot_id} is {frame.shape[0]}x{frame.shape[1]} after "
            f"resizing but its mask is {label.shape[0]}x{label.shape[1]} (HxW): the frame and "
            "its mask have different aspect ratios; fix the files")
    return frame


def read_shot(
    root: str | os.PathLike[str], shot_id: str, threshold: int = DEFAULT_THRESHOLD,
    max_dim: int = MAX_DIM,
) -> tuple[np.ndarray, np.ndarray]:
    """The masked frames of one shot and their labels, resized to the longer side 500.

    Args:
      root: the directory holding ``youtube_masks/``.
      shot_id: ``<class>/<video>/<shot>``, e.g. ``cat/0001/001``.
      threshold: grey value above which a mask pixel is the object.
      max_dim: the longer side after resizing (500 in the paper).

    Returns:
      ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])`` over the T masked frames, in
      frame order; labels are 0 or the class's index in `CLASSES`.

    Raises:
      MissingFileError: the shot, a mask or a frame is missing.
      ValueError: a bad shot id, or a frame whose resized size differs from its mask's.
    """
    frames, labels = [], []
    for number in mask_paths(root, shot_id):
        label = read_label(root, shot_id, number, threshold, max_dim)
        frames.append(_check_pair(read_frame(root, shot_id, number, max_dim), label, shot_id,
                                  number))
        labels.append(label)
    shapes = {label.shape for label in labels}
    if len(shapes) > 1:
        raise ValueError(f"masks of shot {shot_id} differ in size: {sorted(shapes)}; fix them")
    return np.stack(frames), np.stack(labels)


def _ids(root: str | os.PathLike[str], ids: Iterable[str] | None) -> list[str]:
    ids = shot_ids(root) if ids is None else list(ids)
    _masks_dir(root)  # a wrong root raises now
    for shot_id in ids:
        _parse_shot_id(shot_id)  # reject bad ids now, not halfway through
    return ids


def videos(
    root: str | os.PathLike[str],
    ids: Iterable[str] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    max_dim: int = MAX_DIM,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `read_shot` videos, one per shot.

    Args:
      root: the directory holding ``youtube_masks/``.
      ids: shot ids to read, in this order; all shots (`shot_ids`) if None.
      threshold: grey value above which a mask pixel is the object.
      max_dim: the longer side after resizing.

    Returns:
      An iterator of ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])``; the shots are
      listed now (a missing root raises here), read lazily.
    """
    ids = _ids(root, ids)
    return (read_shot(root, shot_id, threshold, max_dim) for shot_id in ids)


def scored_frames(root: str | os.PathLike[str], shot_id: str) -> list[int]:
    """The masked frames of a shot that the reference scores: f >= `FIRST_SCORED`."""
    return [f for f in mask_paths(root, shot_id) if f >= FIRST_SCORED]


def _loader(frame_of: Callable[[int], np.ndarray], shot_id: str, frame: int):
    """`back -> frame f - 10 * back` of a shot (`frame_of(number)`), for `protocol.phase_clip`."""
    def load(back: int) -> np.ndarray:
        number = frame - SUBSAMPLE * back
        if number < 1:
            raise ValueError(
                f"shot {shot_id}: scoring frame {frame} {back} steps after the last full run "
                f"needs frame {number}, before the shot starts; the reference scores frames "
                f">= {FIRST_SCORED}, i.e. at most 2 steps back: use a phase <= 2 "
                "(--phase fixed:K) or a schedule of cycle <= 3")
        return frame_of(number)
    return load


def shot(root: str | os.PathLike[str], shot_id: str, masks: dict[int, Path] | None = None,
         threshold: int = DEFAULT_THRESHOLD, max_dim: int = MAX_DIM) -> protocol.Video:
    """One shot as the protocol runs it, as a `protocol.Video`, nothing read yet.

    It holds the frames the reference's clips take: every labelled frame f >= 21
    (`scored_frames`, scored) and the frames 10, 20, ... raw frames before each, down to
    frame 1 (f - 10 and f - 20 for the fixed schedules' phases and the pipelines, f0 - 10
    for the adaptive warm-up; deeper ones for phases > 2). Its times are the raw frame
    numbers; its labelled frames are those of them with a mask.

    Args:
      root: the directory holding ``youtube_masks/`` and ``v1/``.
      shot_id: ``<class>/<video>/<shot>``.
      masks: the shot's `mask_paths`, if listed already.
      threshold: the mask threshold.
      max_dim: the longer side after resizing.

    Returns:
      A video keyed ``shot_id``: frames uint8 ``[H, W, 3]`` resized (a `protocol.Lazy`, a
      scored frame checked against its mask's size when read), labels uint8 ``[H, W]``
      (0 or the class's index in `CLASSES`).

    Raises:
      MissingFileError: the shot has no mask (now); a frame or mask is missing (when read).
    """
    masks = mask_paths(root, shot_id) if masks is None else masks
    scored_numbers = [f for f in masks if f >= FIRST_SCORED]
    times = sorted({f - SUBSAMPLE * k for f in scored_numbers
                    for k in range((f - 1) // SUBSAMPLE + 1)})
    labelled = [j for j, n in enumerate(times) if n in masks]
    scored = [j for j, n in enumerate(times) if n >= FIRST_SCORED and n in masks]
    labels = protocol.Lazy(len(labelled), lambda i: read_label(
        root, shot_id, times[labelled[i]], threshold, max_dim))

    def frame(j: int) -> np.ndarray:
        image = read_frame(root, shot_id, times[j], max_dim)
        if j in scored:
            _check_pair(image, labels[labelled.index(j)], shot_id, times[j])
        return image

    return protocol.Video(shot_id, protocol.Lazy(len(times), frame), tuple(times),
                          tuple(labelled), labels, tuple(scored))


def shots(
    root: str | os.PathLike[str],
    ids: Iterable[str] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    max_dim: int = MAX_DIM,
) -> Sequence[protocol.Video]:
    """READ of `--data youtube`: the `shot` of each shot with a labelled frame f >= 21 (the
    others have nothing the reference scores).

    Args:
      root: the directory holding ``youtube_masks/`` and ``v1/``.
      ids: shot ids, in this order; all shots (`shot_ids`) if None.
      threshold: the mask threshold.
      max_dim: the longer side after resizing.

    Returns:
      The videos, in id order: the shots and their masks are listed (a missing root or shot
      raises here) now, the frames read when used.
    """
    listed = [(shot_id, mask_paths(root, shot_id)) for shot_id in _ids(root, ids)]
    kept = [(shot_id, masks) for shot_id, masks in listed if max(masks) >= FIRST_SCORED]
    return protocol.Lazy(len(kept), lambda i: shot(root, *kept[i], threshold, max_dim),
                         keep=False)


def form(videos: Sequence[protocol.Video], schedule, phase: str = "all"
         ) -> protocol.ClipsOf:
    """FORM of YouTube-Objects: the clips a schedule runs, as the reference notebooks run them.

    Per shot (a `shots` video), over its scored frames f >= 21, by the schedule's kind:
      - stateless (oracle, truncated baselines): one clip of those frames, all scored
        (youtube-clockwork-exp cell 8, pascal-translate-exp's baselines);
      - fixed (skip, alternating, ...): per labelled frame and phase k of `phase`
        (`protocol.phases`; the reference's "all": phases 0 and 1, summed: cells 10 and
        12): the frames f - 10k, ..., f - 10, f, scoring f;
      - adaptive: one clip per shot, a warm-up frame f0 - 10 before its first scored frame
        f0 (a full run, not scored or counted), then every scored frame (cell 14);
      - pipeline2: f - 10, f (cell 10 of youtube-pipeline-exp: a full run on f - 10, then a
        2-stage step on f); pipeline3: f - 20, f - 20, f - 10, f (cell 12: a full run on
        f - 20, then 3-stage steps on f - 10 and f; the engine's fill step on the repeated
        f - 20 leaves exactly the state of that full run).

    Args:
      videos: the shots (raw or prepared).
      schedule: a `clockwork.Schedule` (or anything with its `theta`, `pipelined`, `cycle`
        and `lags`, as the evaluator's baselines).
      phase: the fixed schedules' phase policy (`protocol.PHASES`; "clip" is not one here).

    Returns:
      The clips of each shot (`protocol.ClipsOf`), read lazily (the phase checked now).
    """
    del videos
    kind = protocol.kind(schedule)
    if kind == "fixed":
        phase = protocol.check_phase(phase)
        if phase == "clip":
            raise ValueError("YouTube-Objects has no clip to start a fixed schedule from: use "
                             "--phase all (the reference), coin or fixed:K")
    return functools.partial(_clips_of, schedule=schedule, kind=kind, phase=phase)


def _frame_of(video: protocol.Video) -> Callable[[int], np.ndarray]:
    """`number -> the frame of raw number` of a shot's video."""
    index = {n: j for j, n in enumerate(video.times)}

    def frame_of(number: int) -> np.ndarray:
        if number not in index:
            raise ValueError(f"shot {video.key}: frame {number} is not among the frames its "
                             f"video holds ({video.times[0]}..{video.times[-1]}); prepare it "
                             "again from the raw files")
        return video.frames[index[number]]
    return frame_of


def _clips_of(index: int, video: protocol.Video, schedule, kind: str, phase: str
              ) -> Iterator[protocol.Clip]:
    del index  # a shot's phases are drawn per shot
    if not video.scored:
        return
    numbers = [video.times[j] for j in video.scored]
    label = {video.times[j]: video.label(j) for j in video.scored}
    frame_of = _frame_of(video)
    scored = [frame_of(f) for f in numbers]
    if kind == "frame":
        yield protocol.whole(np.stack(scored), np.stack([label[f] for f in numbers]),
                             range(len(numbers)), key=video.key)
    elif kind == "adaptive":
        frames = np.stack([_loader(frame_of, video.key, numbers[0])(1), *scored])
        labels = np.full(frames.shape[:3], IGNORE_LABEL, np.uint8)
        labels[1:] = np.stack([label[f] for f in numbers])
        idx = tuple(range(1, len(frames)))
        yield protocol.Clip(frames, labels, idx, idx, len(idx), video.key)
    else:
        per_frame = (protocol.phases(phase, schedule.cycle, len(numbers))
                     if kind == "fixed" else None)
        for i, f in enumerate(numbers):
            load, key = _loader(frame_of, video.key, f), f"{video.key}/{f}"
            if kind == "pipeline":
                yield protocol.backs_clip(load, label[f], protocol.pipeline_backs(schedule),
                                          key=key)
            else:
                for k in per_frame[i]:
                    yield protocol.phase_clip(load, label[f], k, key=key)


def clips(
    root: str | os.PathLike[str],
    schedule,
    phase: str = "all",
    ids: Iterable[str] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    max_dim: int = MAX_DIM,
) -> Iterator[protocol.Clip]:
    """The clips a schedule runs (`form`) over the shots (`shots`).

    Args:
      root: the directory holding ``youtube_masks/`` and ``v1/``.
      schedule: a `clockwork.Schedule` (or anything with its `theta`, `pipelined`, `cycle`
        and `lags`, as the evaluator's baselines).
      phase: the fixed schedules' phase policy (`protocol.PHASES`; "clip" is not one here).
      ids: shot ids, in this order; all shots if None.
      threshold: the mask threshold.
      max_dim: the longer side after resizing.

    Returns:
      An iterator of `protocol.Clip`s, read lazily (the shots are listed, the arguments
      checked, now).
    """
    return protocol.clips(shots(root, ids, threshold, max_dim), form, schedule, phase)


def full_rate_video(
    root: str | os.PathLike[str], shot_id: str, threshold: int = DEFAULT_THRESHOLD,
    max_dim: int = MAX_DIM,
) -> protocol.Video:
    """Every raw frame of a shot from its first labelled frame on (youtube-differences cell 8:
    ``frames[first_label_idx:]``), as a `protocol.Video`: times the raw frame numbers,
    frames uint8 ``[H, W, 3]`` resized (a `protocol.Lazy`), the masked frames labelled and
    scored (labels uint8 ``[H, W]``). The masks and frames are listed now, read when used.
    """
    masks = mask_paths(root, shot_id)
    numbers = [n for n in frame_numbers(root, shot_id) if n >= min(masks)]
    labelled = [j for j, n in enumerate(numbers) if n in masks]
    labels = protocol.Lazy(len(labelled), lambda i: read_label(
        root, shot_id, numbers[labelled[i]], threshold, max_dim))
    frames = protocol.Lazy(len(numbers), lambda j: read_frame(root, shot_id, numbers[j],
                                                              max_dim))
    return protocol.Video(shot_id, frames, tuple(numbers), tuple(labelled), labels,
                          tuple(labelled))


def full_rate_shot(
    root: str | os.PathLike[str], shot_id: str, threshold: int = DEFAULT_THRESHOLD,
    max_dim: int = MAX_DIM,
) -> tuple[np.ndarray, np.ndarray]:
    """`full_rate_video` read: ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])``,
    255 on the frames without a mask."""
    video = full_rate_video(root, shot_id, threshold, max_dim)
    return video.stacked(), video.label_maps()


def full_rate_shots(root: str | os.PathLike[str], ids: Iterable[str] | None = None
                    ) -> Sequence[protocol.Video]:
    """READ of `--data youtube-full`: the `full_rate_video` of each shot (all if `ids` is
    None), listed now, each read when visited."""
    ids = _ids(root, ids)
    return protocol.Lazy(len(ids), lambda i: full_rate_video(root, ids[i]), keep=False)


def form_full_rate(videos: Sequence[protocol.Video], schedule, phase: str
                   ) -> protocol.ClipsOf:
    """FORM of `--data youtube-full`: one clip per shot, every schedule from the shot's first
    labelled frame; the masked frames scored, every frame after the first counted."""
    del videos, schedule, phase
    return lambda i, video: (protocol.after_full_run(video.stacked(), video.label_maps(),
                                                     video.scored, video.key),)


def full_rate_clips(root: str, ids: list[str], schedule, phase: str) -> Iterator[protocol.Clip]:
    """YouTube-Objects shots at full rate (`form_full_rate` of `full_rate_shots`)."""
    return protocol.clips(full_rate_shots(root, ids), form_full_rate, schedule, phase)


DATASET = datasets.DataSet(
    name="youtube",
    classes=CLASSES,
    mean_bgr=voc.DATASET.mean_bgr,  # the PASCAL net applied as is
    frame_size=f"resized so that the longer side is {MAX_DIM} px (frames bilinear, masks "
               "nearest)",
    pred_lut=VOC_TO_YOUTUBE,
    videos={
        "youtube": datasets.Videos(
            lambda request: shots(request.root), form,
            "labelled frames f >= 21, 11 classes, phases merged (youtube-clockwork-exp, "
            "youtube-pipeline-exp)",
            "youtube", phase="all", phases=protocol.PHASES[1:]),
        "youtube-full": datasets.Videos(
            lambda request: full_rate_shots(request.root, [request.arg] if request.arg else
                                            None),
            form_full_rate, "every raw frame of each shot from its first labelled one, the "
                             "labelled frames scored (Fig. 7; youtube-differences)",
            "youtube-full[:CLASS/VIDEO/SHOT] (every raw frame of the shots, Fig. 7)"),
    },
)
