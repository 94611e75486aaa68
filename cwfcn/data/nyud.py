"""NYUDv2 with the 40-class labels of Gupta et al., as FCN used it, plus raw-video clips.

Layout (FCN's ``nyud.tar.gz``, plus FCN's split files, plus this package's ``clips/``):

    <root>/{train,val,test}.txt               ids like 5001, one a line (FCN's data/nyud/*.txt)
    <root>/data/images/img_<id>.png           RGB photo (425x560 in FCN's data)
    <root>/segmentation/img_<id>.mat          field ``segmentation``: 0 void, 1..40 classes
        (or <root>/data/segmentation/img_<id>.mat: both places are looked in, in this order)
    <root>/clips/<id>/frame_<k>.png           video clip of labelled frame <id>, see below

Labels follow FCN's NYUD layer: the .mat values 1..40 become classes 0..39 and the void 0
becomes 255 (`IGNORE_LABEL`).

Clips. The paper runs Clockwork on the raw NYUDv2 video, subsampled 10x, and scores the
labelled frames. A clip directory ``clips/<id>/`` holds the raw frames up to and including
the labelled frame ``<id>``: ``frame_<k>.png`` with integer ``k`` in temporal order (any
zero padding; sorted by value), the labelled frame having the largest ``k``. Frames must be
cropped to the labelled image's size (FCN's images are the 480x640 Kinect frames cropped to
425x560), so that every frame is ``[H, W, 3]`` like ``img_<id>.png``. Build clips from the
NYUDv2 raw dumps by ordering each scene's frames by their timestamps and cropping them.

`clip_videos` keeps every ``stride``-th frame counting back from the labelled one (stride 10
is the paper's subsampling), so the labelled frame is always the last. Videos follow the
package-wide contract ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])``: frames without
ground truth carry labels filled with 255, so here only ``labels[-1]`` is not all 255.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io

from cwfcn.data import download as dl
from cwfcn.data.files import (
    IGNORE_LABEL,
    MissingFileError,
    check_same_size,
    read_ids,
    read_rgb,
    require,
)

NUM_CLASSES = 40

NYUD_URL = "http://dl.caffe.berkeleyvision.org/nyud.tar.gz"
NYUD_SHA256: str | None = None  # not published: download() warns and prints the digest

_FIX = (
    "download nyud.tar.gz (FCN's NYUDv2 in this layout) from http://dl.caffe.berkeleyvision.org/ "
    "and unpack it so that <root>/data/images exists (cwfcn.data.nyud.download(data_dir) does "
    "both and returns the root), put FCN's data/nyud/{train,val,test}.txt in <root>, or pass "
    "the directory holding data/ as root"
)
_CLIP_FIX = (
    "make <root>/clips/<id>/frame_<k>.png from the NYUDv2 raw video as described in the "
    "cwfcn.data.nyud module docstring"
)
_FRAME_RE = re.compile(r"frame_(\d+)\.png")


def _root(root: str | os.PathLike[str]) -> Path:
    return require(Path(root) / "data" / "images", _FIX).parent.parent


def split_ids(root: str | os.PathLike[str], split: str) -> list[str]:
    """Ids of a split from ``<root>/<split>.txt`` (FCN ships train, val and test lists)."""
    return read_ids(_root(root) / f"{split}.txt", f"is the split name right? {_FIX}")


def read_image(root: str | os.PathLike[str], image_id: str) -> np.ndarray:
    """The labelled photo ``data/images/img_<id>.png`` as uint8 ``[H, W, 3]`` RGB."""
    return read_rgb(_root(root) / "data" / "images" / f"img_{image_id}.png", _FIX)


def label_path(root: str | os.PathLike[str], image_id: str) -> Path:
    """The first of ``segmentation/img_<id>.mat``, ``data/segmentation/img_<id>.mat`` existing.

    Raises:
        MissingFileError: neither exists; the message names both.
    """
    base = _root(root)
    name = f"img_{image_id}.mat"
    candidates = [base / "segmentation" / name, base / "data" / "segmentation" / name]
    for path in candidates:
        if path.exists():
            return path
    raise MissingFileError(f"neither {candidates[0]} nor {candidates[1]} exists; {_FIX}")


def to_train_ids(segmentation: np.ndarray) -> np.ndarray:
    """Map NYUD 40-class values (0 void, 1..40) to class ids 0..39 with void 255, uint8."""
    segmentation = np.asarray(segmentation)
    return np.where(segmentation == 0, IGNORE_LABEL, segmentation.astype(np.int64) - 1).astype(
        np.uint8
    )


def read_label(root: str | os.PathLike[str], image_id: str) -> np.ndarray:
    """Labels of ``img_<id>``: uint8 ``[H, W]``, classes 0..39, void 255.

    Raises:
        MissingFileError: the .mat file is missing.
        ValueError: it has no 2-D ``segmentation`` field, or values outside 0..40.
    """
    path = label_path(root, image_id)
    segmentation = scipy.io.loadmat(path).get("segmentation")
    if segmentation is None or segmentation.ndim != 2:
        raise ValueError(
            f"{path} has no 2-D 'segmentation' field; use the 40-class segmentation files of "
            "FCN's nyud.tar.gz"
        )
    if segmentation.min() < 0 or segmentation.max() > NUM_CLASSES:
        raise ValueError(
            f"{path}: segmentation values span {segmentation.min()}..{segmentation.max()}, "
            f"expected 0 (void) to {NUM_CLASSES}; is this the 40-class labelling?"
        )
    return to_train_ids(segmentation)


def read_example(root: str | os.PathLike[str], image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The labelled photo and its labels: uint8 ``[H, W, 3]`` and uint8 ``[H, W]``.

    Raises:
        MissingFileError: the photo or label file is missing.
        ValueError: the label's size differs from the photo's, or its values are invalid.
    """
    image = read_image(root, image_id)
    label = read_label(root, image_id)
    image_path = _root(root) / "data" / "images" / f"img_{image_id}.png"
    check_same_size(image, label, image_path, label_path(root, image_id))
    return image, label


def examples(
    root: str | os.PathLike[str], split: str = "test"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(image uint8 [H, W, 3], label uint8 [H, W])`` for each id of a split.

    The split file is read now (so a missing one raises here); images are read lazily.
    """
    ids = split_ids(root, split)
    return (read_example(root, image_id) for image_id in ids)


def clip_frame_paths(root: str | os.PathLike[str], image_id: str) -> list[Path]:
    """``clips/<id>/frame_<k>.png`` sorted by ``k``; the last is the labelled frame.

    Raises:
        MissingFileError: the clip directory is missing or holds no ``frame_<k>.png``.
    """
    directory = require(_root(root) / "clips" / image_id, _CLIP_FIX)
    numbered = [
        (int(match.group(1)), path)
        for path in directory.iterdir()
        if (match := _FRAME_RE.fullmatch(path.name))
    ]
    if not numbered:
        raise MissingFileError(f"{directory} holds no frame_<k>.png; {_CLIP_FIX}")
    return [path for _, path in sorted(numbered)]


def _check_clip_args(stride: int, num_frames: int | None) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}; pass e.g. stride=10")
    if num_frames is not None and (
        isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1
    ):
        raise ValueError(f"num_frames must be a positive int or None, got {num_frames!r}")


def subsample(paths: list[Path], stride: int, num_frames: int | None) -> list[Path]:
    """Every ``stride``-th path back from the last one, oldest first, at most ``num_frames``."""
    _check_clip_args(stride, num_frames)
    kept = paths[::-1][::stride][::-1]
    return kept if num_frames is None else kept[-num_frames:]


def read_clip(
    root: str | os.PathLike[str], image_id: str, stride: int = 10, num_frames: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The clip of labelled frame ``image_id``, labels on its last frame only.

    Args:
        root: the NYUD directory.
        image_id: a labelled frame id with a ``clips/<id>/`` directory.
        stride: keep every ``stride``-th raw frame counting back from the labelled one.
        num_frames: keep at most this many frames (the latest), or all with None.

    Returns:
        ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])`` with ``labels[:-1]`` all 255.

    Raises:
        MissingFileError: the clip or the label file is missing.
        ValueError: a frame's size differs from the label's, or a bad stride / num_frames.
    """
    paths = subsample(clip_frame_paths(root, image_id), stride, num_frames)
    label = read_label(root, image_id)
    frames = []
    for path in paths:
        frame = read_rgb(path, _CLIP_FIX)
        check_same_size(frame, label, path, label_path(root, image_id))
        frames.append(frame)
    labels = np.full((len(frames), *label.shape), IGNORE_LABEL, np.uint8)
    labels[-1] = label
    return np.stack(frames), labels


def clip_videos(
    root: str | os.PathLike[str],
    split: str = "test",
    stride: int = 10,
    num_frames: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `read_clip` videos for each id of a split, in split order.

    The split file is read now; clips are read lazily. Every id of the split needs a clip.
    """
    ids = split_ids(root, split)
    _check_clip_args(stride, num_frames)  # now, not at the first video
    return (read_clip(root, image_id, stride, num_frames) for image_id in ids)


def download(
    data_dir: str | os.PathLike[str],
    *,
    url: str = NYUD_URL,
    sha256: str | None = NYUD_SHA256,
    progress: bool = True,
) -> Path:
    """Download and unpack FCN's nyud.tar.gz under ``data_dir``.

    No checksum is published for this archive, so by default it is not verified (a warning
    gives its sha256 to pin). If the split files are not in the archive, copy FCN's
    ``data/nyud/{train,val,test}.txt`` into the returned root.

    Returns:
        The directory holding ``data/images``, to pass as ``root``.
    """
    data_dir = Path(data_dir)
    archive = dl.download(url, data_dir / "nyud.tar.gz", sha256=sha256, progress=progress)
    unpacked = dl.extract(archive, data_dir / "nyud")
    return dl.find_root(unpacked, "data/images")
