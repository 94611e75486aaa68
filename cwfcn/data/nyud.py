"""NYUDv2 with the 40-class labels of Gupta et al., as FCN used it, plus raw-video clips.

Layout (FCN's ``nyud.tar.gz``, plus FCN's split files, plus this package's ``clips/``):

    <root>/{train,val,test}.txt               ids like 5001, one a line (FCN's data/nyud/*.txt)
    <root>/data/images/img_<id>.png           RGB photo (425x560 in FCN's data)
    <root>/segmentation/img_<id>.mat          field ``segmentation``: 0 void, 1..40 classes
        (or <root>/data/segmentation/img_<id>.mat: both places are looked in, in this order)
    <root>/<split>_rawImages.txt              raw frame of each id: ``<vid>/<raw file name>``,
                                              line by line with <split>.txt (to make clips)
    <root>/clips/<id>/frame_<k>.png           video clip of labelled frame <id>, see below

Labels follow FCN's NYUD layer: the .mat values 1..40 become classes 0..39 and the void 0
becomes 255 (`IGNORE_LABEL`).

Clips. The paper runs Clockwork on the raw NYUDv2 video, subsampled 10x, and scores the
labelled frames. A clip directory ``clips/<id>/`` holds raw frames up to and including the
labelled frame ``<id>``: ``frame_<k>.png`` where ``k`` is the frame's index in its raw video
in timestamp order (any zero padding; sorted by value), so the labelled frame has the largest
``k``. Frames are cropped to the labelled image's size (FCN's images are the 480x640 Kinect
frames cropped to ``[44:469, 40:600]``, 425x560), so every frame is ``[H, W, 3]`` like
``img_<id>.png``.

`prepare_clips` (or ``python -m cwfcn.data.nyud prepare-clips --raw RAW --root ROOT``) makes
them from the NYUDv2 raw dumps ``RAW/<vid>/r-<timestamp>-<n>.ppm`` (the RGB frames; the depth
``d-*.pgm`` and accelerometer ``a-*.dump`` files are ignored), following the authors'
``datasets/nyud_seg.py`` in shelhamer/clockwork-fcn: a video's frames are ordered by the
timestamp in their file names; each id of ``<split>.txt`` is matched with the raw frame on
the same line of ``<split>_rawImages.txt``; its clip is every ``skip``-th frame counting back
from it to the start of the video (``skip=10``, the paper's rate, by default), cropped.

`clip_videos` keeps the frames whose ``k`` is a multiple of ``stride`` back from the labelled
frame's (``(k_last - k) % stride == 0``; stride 10 is the paper's subsampling), so the
labelled frame is always the last, and a clip of every raw frame and one `prepare_clips`
wrote already subsampled 10x give the same frames with ``stride=10``. Videos follow the
package-wide contract ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])``: frames without
ground truth carry labels filled with 255, so here only ``labels[-1]`` is not all 255.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn

import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from cwfcn.data import datasets, protocol, training
from cwfcn.data import download as dl
from cwfcn.data.files import (
    IGNORE_LABEL,
    MissingFileError,
    check_same_size,
    read_ids,
    read_rgb,
    require,
)

# The 40 classes of Gupta et al. (CVPR 2013), in label order: the .mat values 1..40.
CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)
NUM_CLASSES = len(CLASSES)

NYUD_URL = "http://dl.caffe.berkeleyvision.org/nyud.tar.gz"
NYUD_SHA256: str | None = None  # not published: download() warns and prints the digest

_FIX = (
    "download nyud.tar.gz (FCN's NYUDv2 in this layout) from http://dl.caffe.berkeleyvision.org/ "
    "and unpack it so that <root>/data/images exists (cwfcn.data.nyud.download(data_dir) does "
    "both and returns the root), put FCN's data/nyud/{train,val,test}.txt in <root>, or pass "
    "the directory holding data/ as root"
)
_CLIP_FIX = (
    "make <root>/clips/<id>/frame_<k>.png from the NYUDv2 raw video with "
    "`python -m cwfcn.data.nyud prepare-clips --raw RAW_DIR --root <root>` "
    "(cwfcn.data.nyud.prepare_clips)"
)
_RAW_FIX = (
    "pass the directory of the unpacked NYUDv2 raw dumps (one <vid>/ directory per scene, "
    "holding r-<timestamp>-<n>.ppm RGB frames) from "
    "https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html as raw_dir / --raw"
)
_RAW_LIST_FIX = (
    "put the NYUDv2 list of each labelled frame's raw frame (lines <vid>/<raw file name>, in "
    "the order of <split>.txt; test_rawImages.txt for the test split) in <root>, or pass it "
    "as raw_list / --raw-list"
)
_FRAME_RE = re.compile(r"frame_(\d+)\.png")
_TIMESTAMP_RE = re.compile(r"-([0-9.]+)-")

# The labelled images are the raw 480x640 Kinect frames cropped to rows 44..468 and columns
# 40..599, 425x560: the reference's crop_frame, after the NYU toolbox's crop_image.m.
CROP_ROWS = (44, 469)
CROP_COLS = (40, 600)


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


# The labelled photos by split: what the NYUD config trains and validates on.
IMAGES = datasets.Images(split_ids, lambda root, split, image_id: read_example(root, image_id),
                         "test")
# `(image uint8 [H, W, 3], label uint8 [H, W])` of each id of a split (test by default).
examples = IMAGES.examples


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


def frame_index(path: str | os.PathLike[str]) -> int:
    """The raw frame index ``k`` of a clip frame ``frame_<k>.png``.

    Raises:
      ValueError: the name is not ``frame_<k>.png``.
    """
    match = _FRAME_RE.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named frame_<k>.png; {_CLIP_FIX}")
    return int(match.group(1))


def subsample(paths: list[Path], stride: int, num_frames: int | None) -> list[Path]:
    """The clip frames ``stride`` raw frames apart back from the last one, oldest first.

    Frames are chosen by their raw index ``k`` (``frame_<k>.png``), not by their position:
    ``frame_<k>`` is kept when ``(k_last - k) % stride == 0``. On a clip of every raw frame
    (contiguous ``k``) that is every ``stride``-th path; on a clip already subsampled by
    `prepare_clips` (``k`` spaced by its ``skip``) a ``stride`` of ``skip`` keeps them all.

    Args:
      paths: ``frame_<k>.png`` paths sorted by ``k``, the labelled frame last.
      stride: raw frames between kept frames.
      num_frames: keep at most this many (the latest), or all with None.
    """
    _check_clip_args(stride, num_frames)
    if not paths:
        return []
    last = frame_index(paths[-1])
    kept = [path for path in paths if (last - frame_index(path)) % stride == 0]
    return kept if num_frames is None else kept[-num_frames:]


def clip_video(
    root: str | os.PathLike[str], image_id: str, stride: int = 10, num_frames: int | None = None
) -> protocol.Video:
    """The clip of labelled frame ``image_id`` as a `protocol.Video`, nothing read yet.

    Args:
      root: the NYUD directory.
      image_id: a labelled frame id with a ``clips/<id>/`` directory.
      stride: keep the frames whose raw index is a multiple of ``stride`` back from the
        labelled frame's (see `subsample`).
      num_frames: keep at most this many frames (the latest), or all with None.

    Returns:
      A video keyed ``image_id``: T frames uint8 ``[H, W, 3]`` (a `protocol.Lazy`, each read
      and checked against the label's size when first used), times their raw indices ``k``,
      the last frame labelled (classes 0..39, void 255) and scored.

    Raises:
      MissingFileError: the clip directory is missing or empty (now); the label file or a
        frame (when read).
      ValueError: a bad stride / num_frames (now); a frame whose size differs from the
        label's (when read).
    """
    paths = subsample(clip_frame_paths(root, image_id), stride, num_frames)
    labels = protocol.Lazy(1, lambda i: read_label(root, image_id))

    def frame(i: int) -> np.ndarray:
        image = read_rgb(paths[i], _CLIP_FIX)
        check_same_size(image, labels[0], paths[i], label_path(root, image_id))
        return image

    last = len(paths) - 1
    return protocol.Video(image_id, protocol.Lazy(len(paths), frame),
                          tuple(frame_index(path) for path in paths), (last,), labels, (last,))


def read_clip(
    root: str | os.PathLike[str], image_id: str, stride: int = 10, num_frames: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The clip of labelled frame ``image_id`` (`clip_video`), labels on its last frame only.

    Returns:
      ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])`` with ``labels[:-1]`` all 255.

    Raises:
      MissingFileError: the clip or the label file is missing.
      ValueError: a frame's size differs from the label's, or a bad stride / num_frames.
    """
    video = clip_video(root, image_id, stride, num_frames)
    return video.stacked(), video.label_maps()


def clip_set(
    root: str | os.PathLike[str], split: str = "test", stride: int = 10,
    num_frames: int | None = None,
) -> Sequence[protocol.Video]:
    """READ of `--data nyud`: the `clip_video` of each id of a split, in split order.

    The split file is read (and the arguments checked) now; each clip is listed when its
    video is read, its frames when they are used. Every id of the split needs a clip.
    """
    ids = split_ids(root, split)
    _check_clip_args(stride, num_frames)  # now, not at the first video
    return protocol.Lazy(len(ids), lambda i: clip_video(root, ids[i], stride, num_frames),
                         keep=False)


def clip_videos(
    root: str | os.PathLike[str],
    split: str = "test",
    stride: int = 10,
    num_frames: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`read_clip` videos for each id of a split (`clip_set`), in split order: ``(frames
    uint8 [T, H, W, 3], labels uint8 [T, H, W])``. The split file is read now; clips are
    read lazily."""
    return protocol.pairs(clip_set(root, split, stride, num_frames))


def form(videos: Sequence[protocol.Video], schedule, phase: str = "clip"
         ) -> protocol.ClipsOf:
    """FORM of NYUDv2: the clips a schedule runs, labelled frame by labelled frame.

    The authors' code has no NYUD experiment; the paper (section 5): "Our pipelined and
    fixed-rate clockwork FCNs are run on the entire clips and accuracy is reported for those
    frames included in the segmentation test set". So by default (phase "clip") every
    schedule runs over the whole clip (`clip_set`: every 10th raw frame back to the video's
    start, datasets/nyud_seg.py `list_preceding_frames`), and scores its last frame, the
    labelled one; the fraction fired counts its frames after the first, the first (a forced
    full run) in the denominator, as the reference counts Cityscapes'. Stateless schedules
    (oracle, truncated baselines) run the labelled frame alone (reading only it). A fixed
    schedule under another phase policy (`protocol.PHASES`) runs the last k + 1 frames of
    the clip for each phase k.

    Args:
      videos: `clip_set`'s videos (or their prepared copies): the labelled frame last.
      schedule: a `clockwork.Schedule`, or the evaluator's baseline (`protocol.kind`).
      phase: the fixed schedules' phase policy.

    Returns:
      The clips of each video (`protocol.ClipsOf`), read lazily (the phases drawn now, by
      the video's index).
    """
    kind, phase = protocol.kind(schedule), protocol.check_phase(phase)
    per_frame = (protocol.phases(phase, schedule.cycle, len(videos))
                 if kind == "fixed" and phase != "clip" else None)
    return functools.partial(_clips_of, kind=kind, per_frame=per_frame)


def _clips_of(i: int, video: protocol.Video, kind: str, per_frame
              ) -> Iterator[protocol.Clip]:
    last = len(video.frames) - 1
    if kind == "frame":  # the labelled frame alone: read no more
        yield protocol.whole(np.stack([video.frames[last]]), np.stack([video.label(last)]),
                             (0,), key=video.key)
    elif per_frame is None:
        yield protocol.after_full_run(video.stacked(), video.label_maps(), (last,),
                                      video.key)
    else:
        for k in per_frame[i]:
            if k > last:
                raise ValueError(
                    f"NYUD clip {video.key} has {last + 1} frames: phase {k} needs "
                    f"{k + 1}; pick a smaller phase (--phase fixed:K) or --phase clip")
            yield protocol.phase_clip(lambda back: video.frames[last - back], video.label(last),
                                  k, key=video.key)


def clips(
    root: str | os.PathLike[str], schedule, phase: str = "clip", split: str = "test",
    stride: int = 10,
) -> Iterator[protocol.Clip]:
    """The clips a schedule runs on NYUDv2 (`form`) over the clips of a split (`clip_set`).

    Args:
      root: the NYUD directory with ``clips/`` (see `prepare_clips`).
      schedule: a `clockwork.Schedule`, or the evaluator's baseline (`protocol.kind`).
      phase: the fixed schedules' phase policy.
      split: the split whose labelled frames are scored.
      stride: the subsampling (10 in the paper).

    Returns:
      An iterator of `protocol.Clip`s, read lazily (the split is listed now).
    """
    return protocol.clips(clip_set(root, split, stride), form, schedule, phase)


# `--data nyud`: the test split's clips (`clips`), the directory checked when it opens.
VIDEOS = datasets.Videos(
    lambda request: clip_set(request.root, "test"), form,
    "whole clips, every 10th raw frame, the labelled one scored (the paper, section 5; "
    "datasets/nyud_seg.py)", "nyud", phase="clip", phases=protocol.PHASES)

DATASET = datasets.DataSet(
    "nyud", CLASSES, mean_bgr=(116.190, 97.203, 92.318), videos={"nyud": VIDEOS},
    training={"nyud": training.image_training(IMAGES, IMAGES)},
    frame_size="the labelled 425 x 560 crop of the 480 x 640 Kinect frames (`CROP_ROWS`, "
               "`CROP_COLS`), clip frames cropped alike")


# Making clips from the NYUDv2 raw dumps, after datasets/nyud_seg.py of the authors'
# shelhamer/clockwork-fcn.


def raw_timestamp(name: str) -> float:
    """The timestamp in a raw dump file name, the number between the first two dashes.

    ``r-1294439283.377657-2863109775.ppm`` -> 1294439283.377657 (the NYU toolbox's
    get_timestamp_from_filename.m). Frames are ordered by it.

    Raises:
      ValueError: the name holds no ``-<number>-``.
    """
    match = _TIMESTAMP_RE.search(name)
    if match is None:
        raise ValueError(
            f"raw frame name {name!r} has no timestamp between dashes (like "
            "r-1294439283.377657-2863109775.ppm); is this an NYUDv2 raw dump?"
        )
    try:
        return float(match.group(1))
    except ValueError:  # e.g. "1.2.3"
        raise ValueError(
            f"raw frame name {name!r}: {match.group(1)!r} is not a timestamp"
        ) from None


def list_raw_frames(raw_dir: str | os.PathLike[str], vid: str) -> list[str]:
    """The RGB frames (``*.ppm``) of raw video ``<raw_dir>/<vid>`` in timestamp order.

    Depth (``d-*.pgm``), accelerometer (``a-*.dump``) and other files are ignored. Ties in
    the timestamp (not expected) are broken by name, so the order is always the same.

    Returns:
      File names (with ``.ppm``); a frame's index in this list is its ``k``.

    Raises:
      MissingFileError: ``raw_dir`` or the video directory is missing, or it holds no .ppm.
      ValueError: a .ppm name holds no timestamp.
    """
    video = require(raw_dir, _RAW_FIX) / vid
    if not video.is_dir():
        raise MissingFileError(
            f"raw video {video} not found; is {raw_dir} the NYUDv2 raw dump directory, and "
            f"is scene {vid} unpacked there? {_RAW_FIX}"
        )
    names = [path.name for path in video.iterdir() if path.suffix == ".ppm" and path.is_file()]
    if not names:
        raise MissingFileError(f"raw video {video} holds no .ppm RGB frame; {_RAW_FIX}")
    return sorted(names, key=lambda name: (raw_timestamp(name), name))


def raw_list_path(
    root: str | os.PathLike[str],
    split: str = "test",
    raw_list: str | os.PathLike[str] | None = None,
) -> Path:
    """``raw_list`` if given, else ``<root>/<split>_rawImages.txt``.

    Raises:
      MissingFileError: the file is missing.
    """
    path = Path(root) / f"{split}_rawImages.txt" if raw_list is None else Path(raw_list)
    return require(path, _RAW_LIST_FIX)


def match_raw_frames(
    root: str | os.PathLike[str],
    split: str = "test",
    raw_list: str | os.PathLike[str] | None = None,
) -> list[tuple[str, str, str]]:
    """Pair each labelled id of a split with its raw frame, line by line.

    Line ``i`` of ``<root>/<split>.txt`` (an id) goes with line ``i`` of the raw list
    (``<vid>/<raw file name>``, see `raw_list_path`), as in the reference. (Its
    get_val2raw_frames calls ``get_dset('val')`` and ``get_dset('raw')``, but ``get_dset``
    takes only ``raw=False``, so both calls return the raw list; what is meant, and done
    here, is the ids of test.txt zipped with test_rawImages.txt.)

    Returns:
      ``(id, vid, raw file name)`` per id, in split order; the name gets ``.ppm`` if the
      line has no extension.

    Raises:
      MissingFileError: the split file or the raw list is missing.
      ValueError: the two files have different line counts, or a raw line is not
        ``<vid>/<name>``.
    """
    ids_path = Path(root) / f"{split}.txt"
    ids = read_ids(ids_path, f"is the split name right? {_FIX}")
    list_path = raw_list_path(root, split, raw_list)
    lines = read_ids(list_path, _RAW_LIST_FIX)
    if len(ids) != len(lines):
        raise ValueError(
            f"{ids_path} has {len(ids)} ids but {list_path} has {len(lines)} raw frames; they "
            "pair line by line, so they must be the same split's lists (e.g. test.txt and "
            "test_rawImages.txt)"
        )
    matches = []
    for number, (image_id, line) in enumerate(zip(ids, lines, strict=True), 1):
        vid, _, name = line.rpartition("/")
        if not vid or not name:
            raise ValueError(
                f"{list_path} line {number}: {line!r} is not <vid>/<raw file name> (like "
                "bedroom_0001/r-1294439283.377657-2863109775.ppm)"
            )
        matches.append((image_id, vid, name if Path(name).suffix else name + ".ppm"))
    return matches


def preceding_frames(frames: Sequence[str], labelled: str, skip: int = 10) -> list[int]:
    """Indices of every ``skip``-th frame back from ``labelled`` to the start, oldest first.

    The reference's list_preceding_frames: ``frames[i::-skip]`` reversed, with no cap on the
    length, so the last index is the labelled frame's and the first is below ``skip``.

    Args:
      frames: a video's frame names in timestamp order (`list_raw_frames`).
      labelled: the labelled frame's name, one of ``frames``.
      skip: raw frames between kept ones (10 in the paper).

    Raises:
      ValueError: ``labelled`` is not in ``frames``, or ``skip`` is not a positive int.
    """
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 1:
        raise ValueError(f"skip must be a positive int, got {skip!r}; the paper's is 10")
    try:
        last = list(frames).index(labelled)
    except ValueError:
        raise ValueError(f"raw frame {labelled} is not among the video's frames") from None
    return list(range(last, -1, -skip))[::-1]


def crop_frame(frame: np.ndarray, source: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Crop a raw ``[480, 640, 3]`` frame to the labelled images' ``[425, 560, 3]``.

    The reference's crop_frame: ``frame[44:469, 40:600]``.

    Args:
      frame: ``[H, W, ...]`` with ``H >= 469`` and ``W >= 600``.
      source: where the frame came from, for the error message.

    Raises:
      ValueError: the frame is too small for the crop.
    """
    frame = np.asarray(frame)
    (top, bottom), (left, right) = CROP_ROWS, CROP_COLS
    if frame.ndim < 2 or frame.shape[0] < bottom or frame.shape[1] < right:
        size = "x".join(map(str, frame.shape[:2])) if frame.ndim >= 2 else str(frame.shape)
        where = f"{source} is" if source is not None else "the frame is"
        raise ValueError(
            f"{where} {size} (HxW), too small for the crop [{top}:{bottom}, {left}:{right}] to "
            "the labelled images' 425x560: NYUDv2 raw RGB frames are 480x640; is this the raw "
            "dump?"
        )
    return np.ascontiguousarray(frame[top:bottom, left:right])


class PreparedClips(NamedTuple):
    """What `prepare_clips` did: the ids whose clip it wrote and those already complete."""

    written: list[str]
    existing: list[str]


def _is_complete(clip: Path, indices: list[int]) -> bool:
    """Whether directory ``clip`` holds ``frame_<k>.png`` for every ``k`` in ``indices``.

    Raises:
      ValueError: ``clip`` exists but lacks some of them (not a clip this function wrote,
        since those are renamed into place complete).
    """
    if not clip.exists():
        return False
    present = {
        int(match.group(1)) for path in clip.iterdir() if (match := _FRAME_RE.fullmatch(path.name))
    }
    missing = [k for k in indices if k not in present]
    if missing:
        raise ValueError(
            f"{clip} exists but lacks frame_<k>.png for k in {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} (made by hand, or with another skip?); "
            "delete it and prepare again"
        )
    return True


def _write_clip(raw_video: Path, names: list[str], indices: list[int], clip: Path) -> None:
    """Write the cropped frames into a temporary sibling of ``clip``, then rename it into place.

    A failure (or Ctrl-C) removes the temporary directory, so ``clip`` either does not exist
    or is complete. A killed process may leave a ``.<id>.partial-*`` sibling, which no reader
    looks at; it can be deleted.
    """
    partial = Path(tempfile.mkdtemp(prefix=f".{clip.name}.partial-", dir=clip.parent))
    try:
        for k in indices:
            path = raw_video / names[k]
            frame = crop_frame(read_rgb(path, _RAW_FIX), path)
            Image.fromarray(frame).save(partial / f"frame_{k}.png")
        os.rename(partial, clip)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def prepare_clips(
    raw_dir: str | os.PathLike[str],
    root: str | os.PathLike[str],
    split: str = "test",
    skip: int = 10,
    *,
    raw_list: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> PreparedClips:
    """Write ``<root>/clips/<id>/frame_<k>.png`` for every labelled id of a split.

    For each id of ``<root>/<split>.txt``, its raw frame (`match_raw_frames`) is found in its
    video's frames in timestamp order (`list_raw_frames`); the clip is every ``skip``-th
    frame back from it to the start of the video (`preceding_frames`), cropped to 425x560
    (`crop_frame`), each saved as ``frame_<k>.png`` with ``k`` its index in the video.
    Read them with `clip_videos` / `read_clip` and ``stride=skip`` (or a multiple of it).

    All ids are matched to their raw frames before anything is written, so bad lists fail
    at once. Each clip is written to a temporary sibling directory and renamed into place
    when complete: an interrupted run leaves no partial ``clips/<id>``, and a clip already
    there (with all its frames) is skipped, so running again finishes the job or does
    nothing.

    Args:
      raw_dir: the NYUDv2 raw dumps, one ``<vid>/`` directory per scene.
      root: the NYUD directory holding ``<split>.txt`` (and ``<split>_rawImages.txt``).
      split: the split whose ids get clips (the paper scores ``test``).
      skip: raw frames between clip frames (the paper's 10).
      raw_list: the raw frame list, if not ``<root>/<split>_rawImages.txt``.
      progress: show a tqdm progress bar on stderr.

    Returns:
      `PreparedClips`: the ids written now and those already complete.

    Raises:
      MissingFileError: a list, ``raw_dir``, a video or a listed raw frame is missing.
      ValueError: the lists' line counts differ, a raw frame is too small for the crop,
        a bad ``skip``, or an existing ``clips/<id>`` lacks frames.
    """
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 1:
        raise ValueError(f"skip must be a positive int, got {skip!r}; the paper's is 10")
    require(raw_dir, _RAW_FIX)
    raw_dir = Path(raw_dir)
    matches = match_raw_frames(root, split, raw_list)
    videos: dict[str, list[str]] = {}
    plans = []
    for image_id, vid, name in matches:
        if vid not in videos:
            videos[vid] = list_raw_frames(raw_dir, vid)
        if name not in videos[vid]:
            raise MissingFileError(
                f"raw frame {raw_dir / vid / name} (of id {image_id} in "
                f"{raw_list_path(root, split, raw_list)}) not found among the "
                f"{len(videos[vid])} RGB frames of {raw_dir / vid}; is the raw dump complete "
                "and the list the one of this dump?"
            )
        plans.append((image_id, vid, preceding_frames(videos[vid], name, skip)))

    clips = Path(root) / "clips"
    clips.mkdir(exist_ok=True)
    written, existing = [], []
    for image_id, vid, indices in tqdm(
        plans, desc=f"nyud {split} clips", unit="clip", file=sys.stderr, disable=not progress
    ):
        clip = clips / image_id
        if _is_complete(clip, indices):
            existing.append(image_id)
            continue
        _write_clip(raw_dir / vid, videos[vid], indices, clip)
        written.append(image_id)
    return PreparedClips(written, existing)


def download(data_dir: str | os.PathLike[str], *, url: str = NYUD_URL,
             sha256: str | None = NYUD_SHA256, progress: bool = True) -> Path:
    """Download and unpack FCN's nyud.tar.gz under ``data_dir``.

    No checksum is published for this archive, so by default it is not verified (a warning
    gives its sha256 to pin). If the split files are not in the archive, copy FCN's
    ``data/nyud/{train,val,test}.txt`` into the returned root.

    Returns:
      The directory holding ``data/images``, to pass as ``root``.
    """
    return dl.fetch_archive(data_dir, "nyud.tar.gz", "nyud", "data/images", url=url,
                            sha256=sha256, progress=progress)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``nyud: error: ...``, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see --help)")


def _fail(message: object) -> NoReturn:
    print(f"nyud: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m cwfcn.data.nyud",
        description="NYUDv2 tools for cwfcn.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prepare = commands.add_parser(
        "prepare-clips",
        help="make <root>/clips/<id>/ from the NYUDv2 raw video dumps",
        description=(
            "Write <root>/clips/<id>/frame_<k>.png for every labelled id of a split: every "
            "SKIP-th raw RGB frame (in timestamp order) back from the labelled one to the start "
            "of its video, cropped to 425x560 like the labelled images; k is the frame's index "
            "in its video. Ids are matched to raw frames line by line between <root>/<split>.txt "
            "and <root>/<split>_rawImages.txt. Complete clips are skipped, so running again "
            "finishes an interrupted run. Read the clips with stride SKIP "
            "(cwfcn.data.nyud.clip_videos)."
        ),
    )
    prepare.add_argument("--raw", required=True, metavar="RAW_DIR",
                         help="the unpacked NYUDv2 raw dumps: RAW_DIR/<vid>/r-<timestamp>-<n>.ppm")
    prepare.add_argument("--root", required=True, metavar="NYUD_ROOT",
                         help="the NYUD directory with <split>.txt; clips go to NYUD_ROOT/clips")
    prepare.add_argument("--split", default="test", help="the split to make clips of (test)")
    prepare.add_argument("--skip", type=_positive_int, default=10,
                         help="raw frames between clip frames (10, the paper's subsampling)")
    prepare.add_argument("--raw-list", metavar="FILE",
                         help="the <vid>/<raw file name> list (NYUD_ROOT/<split>_rawImages.txt)")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cwfcn.data.nyud prepare-clips ...``; bad input exits 2 with one line."""
    args = _parser().parse_args(argv)
    try:
        prepared = prepare_clips(args.raw, args.root, args.split, args.skip,
                                 raw_list=args.raw_list, progress=not args.no_progress)
    except (ValueError, OSError) as e:
        _fail(e)
    print(f"nyud: {len(prepared.written)} clips written, {len(prepared.existing)} already there, "
          f"in {Path(args.root) / 'clips'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
