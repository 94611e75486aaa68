"""YouTube-Objects with the pixelwise masks of Jain & Grauman (ECCV 2014), in VOC class ids.

The masks cover 10 classes, all VOC classes, so a VOC-trained FCN scores them directly:
each shot is one object class on background. The masks are binary JPEGs (object bright on
dark); a pixel is the object when its grey value exceeds ``threshold`` (default 15, the value
the Clockwork FCN reference code scored with).

Layout (Jain & Grauman's ``youtube_masks`` release; get it, after registering, from
http://vision.cs.utexas.edu/projects/videoseg/, so there is no `download` here):

    <root>/youtube_masks/<class>/data/<video>/shots/<shot>/labels/<n>.jpg   mask of frame n
    the frame n itself, the first of these that exists:
        <shot dir>/images/frame<n:04d>.jpg        (the "full" release, frames beside masks)
        <shot dir>/images/<n:05d>.jpg, .png
        <root>/v1/<class>/data/<video>/shots/<shot>/frame<n:04d>.jpg   (YouTube-Objects v1)

where ``<shot dir>`` is ``<root>/youtube_masks/<class>/data/<video>/shots/<shot>`` and
``<n>`` is the mask file's integer name (``00001.jpg`` is frame 1). About every 10th frame of
a shot has a mask.

Videos: one per shot, over its masked frames only, in frame order, as in the paper ("effectively
10X subsampling"); every frame of these videos is labelled. They follow the package-wide
contract ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])`` in which frames without ground
truth would carry labels filled with 255. Labels are 0 (background) or the class's VOC id.

There is no official split: shots are named ``<class>/<video>/<shot>`` (see `shot_ids`), and
a split file listing such ids, one a line, can be read with `cwfcn.data.files.read_ids`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from cwfcn.data.files import MissingFileError, read_rgb, require
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
# Each class's id in VOC_CLASSES: aeroplane 1, bird 3, boat 4, car 7, cat 8, cow 10, dog 12,
# horse 13, motorbike 14, train 19.
VOC_ID = {name: VOC_CLASSES.index(name) for name in YOUTUBE_CLASSES}

DEFAULT_THRESHOLD = 15

_FIX = (
    "get the YouTube-Objects masks of Jain & Grauman (youtube_masks, from "
    "http://vision.cs.utexas.edu/projects/videoseg/) and unpack them so that "
    "<root>/youtube_masks/<class>/data exists, with the frames laid out as the "
    "cwfcn.data.youtube module docstring says, or pass the directory holding youtube_masks/ as "
    "root"
)
_MASK_RE = re.compile(r"(\d+)\.(jpg|png)")


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


def frame_path(root: str | os.PathLike[str], shot_id: str, frame: int) -> Path:
    """Where frame ``frame`` of a shot is: the first existing candidate of the module docstring.

    Raises:
        MissingFileError: none exists; the message names them all.
    """
    cls, video, shot = _parse_shot_id(shot_id)
    images = shot_dir(root, shot_id) / "images"
    candidates = [
        images / f"frame{frame:04d}.jpg",
        images / f"{frame:05d}.jpg",
        images / f"{frame:05d}.png",
        Path(root) / "v1" / cls / "data" / video / "shots" / shot / f"frame{frame:04d}.jpg",
    ]
    for path in candidates:
        if path.exists():
            return path
    raise MissingFileError(
        f"frame {frame} of shot {shot_id} not found; looked for {', '.join(map(str, candidates))}"
        f"; {_FIX}"
    )


def mask_to_labels(mask: np.ndarray, cls: str, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Binary grey mask -> VOC labels: ``cls``'s VOC id where ``mask > threshold``, else 0.

    Args:
        mask: ``[H, W]`` grey values (any integer dtype; JPEG masks are 0..255).
        cls: one of `YOUTUBE_CLASSES`.
        threshold: grey value above which a pixel is the object.

    Returns:
        uint8 ``[H, W]`` labels.
    """
    return np.where(np.asarray(mask) > threshold, VOC_ID[cls], 0).astype(np.uint8)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask file as uint8 ``[H, W]`` grey values."""
    with Image.open(require(path, _FIX)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def _fit_frame(
    frame: np.ndarray, shape: tuple[int, int], path: Path, mask: Path, resize: bool
) -> np.ndarray:
    """Return ``frame`` at the mask's ``shape`` ``(H, W)``: resized if allowed, else checked."""
    if frame.shape[:2] == shape:
        return frame
    if not resize:
        raise ValueError(
            f"frame {path} is {frame.shape[0]}x{frame.shape[1]} but its mask {mask} is "
            f"{shape[0]}x{shape[1]} (HxW); pass resize_frames=True to resize frames to their "
            "masks, or fix the files"
        )
    resized = Image.fromarray(frame).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def read_shot(
    root: str | os.PathLike[str],
    shot_id: str,
    threshold: int = DEFAULT_THRESHOLD,
    resize_frames: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The masked frames of one shot and their labels.

    Args:
        root: the directory holding ``youtube_masks/``.
        shot_id: ``<class>/<video>/<shot>``, e.g. ``cat/0001/001``.
        threshold: grey value above which a mask pixel is the object.
        resize_frames: resize (bilinear) frames whose size differs from their mask's instead of
            raising; some releases store frames at twice the masks' resolution.

    Returns:
        ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])`` over the T masked frames, in
        frame order; labels are 0 or the class's VOC id.

    Raises:
        MissingFileError: the shot, a mask or a frame is missing.
        ValueError: a bad shot id, or a frame whose size differs from its mask's (unless
            ``resize_frames``).
    """
    cls, _, _ = _parse_shot_id(shot_id)
    frames, labels = [], []
    for number, path in mask_paths(root, shot_id).items():
        label = mask_to_labels(read_mask(path), cls, threshold)
        image_path = frame_path(root, shot_id, number)
        frame = read_rgb(image_path, _FIX)
        frames.append(_fit_frame(frame, label.shape, image_path, path, resize_frames))
        labels.append(label)
    shapes = {label.shape for label in labels}
    if len(shapes) > 1:
        raise ValueError(f"masks of shot {shot_id} differ in size: {sorted(shapes)}; fix them")
    return np.stack(frames), np.stack(labels)


def videos(
    root: str | os.PathLike[str],
    ids: Iterable[str] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    resize_frames: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `read_shot` videos, one per shot.

    Args:
        root: the directory holding ``youtube_masks/``.
        ids: shot ids to read, in this order; all shots (`shot_ids`) if None.
        threshold: grey value above which a mask pixel is the object.
        resize_frames: see `read_shot`.

    Returns:
        An iterator of ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])``; the shots are
        listed now (a missing root raises here), read lazily.
    """
    ids = shot_ids(root) if ids is None else list(ids)
    _masks_dir(root)  # a wrong root raises now
    for shot_id in ids:
        _parse_shot_id(shot_id)  # reject bad ids now, not halfway through
    return (read_shot(root, shot_id, threshold, resize_frames) for shot_id in ids)
