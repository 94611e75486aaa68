"""Cityscapes video snippets: 20 frames ending at each finely labelled frame.

Layout (the official ``leftImg8bit_sequence_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``
unzipped into one ``<root>``):

    <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame:06d>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame:06d>_gtFine_labelIds.png

Each 30-frame snippet of the sequence release has its fine label on its 20th frame (index 19),
so a labelled frame ``f`` has the 19 frames ``f-19 .. f-1`` before it. `videos` yields, for
every ``gtFine`` labelIds file of a split, the frames ``f-T+1 .. f`` (T = 20 by default) and
labels only on the last: the package-wide contract ``(frames uint8 [T, H, W, 3], labels uint8
[T, H, W])`` where a frame without ground truth has labels filled with 255.

Labels are the 19 evaluation classes (`CLASSES`, trainIds 0..18); every other labelId
(void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer, ...)
becomes 255. The table is the official one of cityscapesScripts'
``cityscapesscripts/helpers/labels.py``.

The files need a login at https://www.cityscapes-dataset.com (cityscapesScripts' ``csDownload``
fetches them with it), so this module has no ``download``. tensorflow-datasets' ``cityscapes``
builder is not used: it needs TensorFlow (hundreds of MB) only to read PNGs, has no
``leftImg8bit_sequence`` config (so no video), and would first convert the whole set to
TFRecords; reading the PNGs directly is a few lines.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cwfcn.data import datasets, protocol, training
from cwfcn.data.files import IGNORE_LABEL, MissingFileError, check_same_size, read_rgb, require

# Evaluation classes in trainId order (the network's output order).
CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# labelId -> trainId for the 19 evaluated labels (cityscapesScripts labels.py); all other
# labelIds (0-6, 9, 10, 14-16, 18, 29, 30, and license plate -1) map to 255.
LABEL_ID_TO_TRAIN_ID = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}

SNIPPET_LABELLED_INDEX = 19  # the labelled frame's index in its 30-frame snippet
DEFAULT_NUM_FRAMES = SNIPPET_LABELLED_INDEX + 1
# cityscapes-clockwork-exp seeds one stream once (cell 0); cell 9 (skip) draws a coin per
# labelled frame, then cell 11 (alternating) goes on drawing: its coins are the next ones.
COIN_ORDER = ("skip", "alternating")

_FIX = (
    "download gtFine_trainvaltest.zip and leftImg8bit_sequence_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ (login required; cityscapesScripts' "
    "csDownload can fetch them) and unzip both into <root>, so that <root>/gtFine/<split> and "
    "<root>/leftImg8bit_sequence/<split> exist, or pass the directory holding them as root"
)
_LABEL_RE = re.compile(r"(.+)_(\d+)_(\d+)_gtFine_labelIds\.png")


def train_id_lut() -> np.ndarray:
    """uint8 ``[256]`` lookup table labelId -> trainId, 255 for every non-evaluated id."""
    lut = np.full(256, IGNORE_LABEL, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelIds map (uint8 ``[H, W]``) to trainIds 0..18 and 255, uint8 ``[H, W]``."""
    return train_id_lut()[np.asarray(label_ids, dtype=np.uint8)]


def _split_dir(root: str | os.PathLike[str], kind: str, split: str) -> Path:
    return require(Path(root) / kind / split, f"is the split name (train, val) right? {_FIX}")


def parse_frame_id(frame_id: str) -> tuple[str, str, int]:
    """``<city>_<seq>_<frame>`` -> ``(city, seq, frame)``; e.g. ``frankfurt_000000_000294``."""
    parts = frame_id.rsplit("_", 2)  # city names could hold "_"; seq and frame cannot
    if len(parts) != 3 or not parts[0] or not (parts[1].isdigit() and parts[2].isdigit()):
        raise ValueError(
            f"bad frame id {frame_id!r}: expected '<city>_<seq:06d>_<frame:06d>', e.g. "
            "'frankfurt_000000_000294'"
        )
    return parts[0], parts[1], int(parts[2])


def labelled_frame_ids(root: str | os.PathLike[str], split: str = "val") -> list[str]:
    """Ids ``<city>_<seq>_<frame>`` of the split's gtFine labelIds files, sorted.

    Raises:
      MissingFileError: ``<root>/gtFine/<split>`` is missing or holds no labelIds file.
    """
    directory = _split_dir(root, "gtFine", split)
    ids = sorted(
        f"{match.group(1)}_{match.group(2)}_{match.group(3)}"
        for path in directory.glob("*/*_gtFine_labelIds.png")
        if (match := _LABEL_RE.fullmatch(path.name))
    )
    if not ids:
        raise MissingFileError(f"{directory} holds no <city>/*_gtFine_labelIds.png; {_FIX}")
    return ids


def label_path(root: str | os.PathLike[str], split: str, frame_id: str) -> Path:
    """``<root>/gtFine/<split>/<city>/<id>_gtFine_labelIds.png``."""
    city, _, _ = parse_frame_id(frame_id)
    return Path(root) / "gtFine" / split / city / f"{frame_id}_gtFine_labelIds.png"


def frame_path(root: str | os.PathLike[str], split: str, city: str, seq: str, frame: int) -> Path:
    """``<root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame:06d>_leftImg8bit.png``."""
    name = f"{city}_{seq}_{frame:06d}_leftImg8bit.png"
    return Path(root) / "leftImg8bit_sequence" / split / city / name


def read_label(root: str | os.PathLike[str], split: str, frame_id: str) -> np.ndarray:
    """The fine labels of ``frame_id`` as trainIds: uint8 ``[H, W]``, 0..18 and 255.

    Raises:
      MissingFileError: the labelIds PNG is missing.
      ValueError: it is not a single-channel image (e.g. the ``_color.png`` rendering).
    """
    path = require(label_path(root, split, frame_id), _FIX)
    with Image.open(path) as image:
        if image.mode not in ("L", "P"):
            raise ValueError(
                f"{path} has mode {image.mode!r}; labelIds PNGs are 8-bit single-channel. Use "
                "the *_gtFine_labelIds.png files, not *_color.png"
            )
        label_ids = np.array(image, dtype=np.uint8)
    return to_train_ids(label_ids)


def snippet(
    root: str | os.PathLike[str],
    split: str,
    frame_id: str,
    num_frames: int = DEFAULT_NUM_FRAMES,
) -> protocol.Video:
    """The ``num_frames`` sequence frames ending at labelled frame ``frame_id``, as a
    `protocol.Video`, nothing read yet.

    Args:
      root: the directory holding ``gtFine/`` and ``leftImg8bit_sequence/``.
      split: ``train`` or ``val``.
      frame_id: ``<city>_<seq>_<frame>`` of a gtFine-labelled frame.
      num_frames: T, 1..20: the labelled frame and the T-1 frames before it.

    Returns:
      A video keyed ``frame_id``: T frames uint8 ``[H, W, 3]`` (a `protocol.Lazy`, each read
      and checked against the label's size when first used) at times ``f-T+1 .. f`` (their
      sequence frame numbers), the last labelled (trainIds, uint8 ``[H, W]``) and scored.

    Raises:
      ValueError: a bad ``num_frames`` or frame id (now); a frame's size differs from the
        label's (when read).
      MissingFileError: a sequence frame or the label is missing (when read).
    """
    _check_num_frames(num_frames)
    city, seq, last = parse_frame_id(frame_id)
    times = tuple(range(last - num_frames + 1, last + 1))
    labels = protocol.Lazy(1, lambda i: read_label(root, split, frame_id))

    def frame(i: int) -> np.ndarray:
        path = frame_path(root, split, city, seq, times[i])
        image = read_rgb(path, _FIX)
        check_same_size(image, labels[0], path, label_path(root, split, frame_id))
        return image

    return protocol.Video(frame_id, protocol.Lazy(num_frames, frame), times,
                          (num_frames - 1,), labels, (num_frames - 1,))


def read_snippet(
    root: str | os.PathLike[str],
    split: str,
    frame_id: str,
    num_frames: int = DEFAULT_NUM_FRAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_frames`` sequence frames ending at labelled frame ``frame_id`` (`snippet`).

    Returns:
      ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])``; ``labels[:-1]`` are all 255.

    Raises:
      MissingFileError: a sequence frame or the label is missing.
      ValueError: a frame's size differs from the label's, or a bad ``num_frames``.
    """
    video = snippet(root, split, frame_id, num_frames)
    return video.stacked(), video.label_maps()


def read_example(
    root: str | os.PathLike[str], split: str, frame_id: str
) -> tuple[np.ndarray, np.ndarray]:
    """A labelled frame alone: uint8 ``[H, W, 3]`` RGB and its trainIds uint8 ``[H, W]``."""
    frames, labels = read_snippet(root, split, frame_id, num_frames=1)
    return frames[0], labels[0]


def _check_num_frames(num_frames: int) -> None:
    if (
        isinstance(num_frames, bool)
        or not isinstance(num_frames, int)
        or not 1 <= num_frames <= DEFAULT_NUM_FRAMES
    ):
        raise ValueError(
            f"num_frames must be an int in 1..{DEFAULT_NUM_FRAMES} (the sequence release has "
            f"{SNIPPET_LABELLED_INDEX} frames before each labelled one), got {num_frames!r}"
        )


def snippets(
    root: str | os.PathLike[str],
    split: str = "val",
    num_frames: int = DEFAULT_NUM_FRAMES,
    ids: Iterable[str] | None = None,
) -> Sequence[protocol.Video]:
    """READ of `--data cityscapes`: the `snippet` of each labelled frame of a split.

    Args:
      root: the directory holding ``gtFine/`` and ``leftImg8bit_sequence/``.
      split: ``train`` or ``val`` (test has no public labels).
      num_frames: frames per video T, 1..20.
      ids: labelled frame ids to read, in this order; all of the split's if None.

    Returns:
      The videos, in id order; the split is listed (a missing directory raises here) and
      the ids checked now, the frames read when used.
    """
    _check_num_frames(num_frames)
    _split_dir(root, "leftImg8bit_sequence", split)
    ids = labelled_frame_ids(root, split) if ids is None else list(ids)
    for frame_id in ids:
        parse_frame_id(frame_id)  # reject bad ids now, not halfway through
    return protocol.Lazy(len(ids), lambda i: snippet(root, split, ids[i], num_frames),
                         keep=False)


def videos(
    root: str | os.PathLike[str],
    split: str = "val",
    num_frames: int = DEFAULT_NUM_FRAMES,
    ids: Iterable[str] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The `snippets` of a split as ``(frames uint8 [T, H, W, 3], labels uint8 [T, H, W])``
    with labels on the last frame only; the split is listed now, the frames read lazily."""
    return protocol.pairs(snippets(root, split, num_frames, ids))


def form(videos: Sequence[protocol.Video], schedule, phase: str = "coin"
         ) -> protocol.ClipsOf:
    """FORM of Cityscapes: the clips a schedule runs, as cityscapes-clockwork-exp runs them.

    Per labelled frame (a `snippets` video, the labelled frame last), by the schedule's kind
    (`protocol.kind`):
      - stateless (oracle, truncated baselines): the labelled frame alone (cell 6), read
        alone;
      - fixed: the phase policy (`protocol.PHASES`) picks phase k; the clip is the last
        k + 1 frames of the snippet, scoring the labelled one. The reference's "coin"
        (cells 9 and 11): < 0.5 runs the full net on the previous frame, then the cached
        step on the labelled frame (k = 1), else the full net on it (k = 0); skip draws
        first and alternating continues the stream (`COIN_ORDER`); "clip" is the snippet's
        own start (k = 19);
      - adaptive (cell 13) and pipelines (no reference: their steady state): the whole
        20-frame snippet, scoring the labelled (last) frame; the fraction fired counts the
        19 frames after the first, whose forced full run is in the denominator only
        (``num_frames += 1`` for it, no ``num_update_frames``).

    Args:
      videos: the snippets (raw or prepared), in the reference's order.
      schedule: a `clockwork.Schedule`, or the evaluator's baseline.
      phase: the fixed schedules' phase policy ("coin", the reference's, by default).

    Returns:
      The clips of each snippet (`protocol.ClipsOf`), read lazily (the phases drawn now, by
      the snippet's index).
    """
    kind, phase = protocol.kind(schedule), protocol.check_phase(phase)
    if kind == "fixed" and phase == "clip":
        phase = "fixed:19"  # the snippet's own start: 19 frames after the full run
    name = getattr(schedule, "name", "")
    offset = COIN_ORDER.index(name) * len(videos) if name in COIN_ORDER else 0
    per_frame = (protocol.phases(phase, schedule.cycle, len(videos), coin_offset=offset)
                 if kind == "fixed" else None)
    deepest = max((k for ks in per_frame or () for k in ks), default=0)
    if deepest >= DEFAULT_NUM_FRAMES:
        raise ValueError(f"phase {deepest} needs {deepest} frames before the labelled one; the "
                         f"sequence release has {SNIPPET_LABELLED_INDEX}: pick a smaller phase")
    return functools.partial(_clips_of, kind=kind, per_frame=per_frame)


def _clips_of(i: int, video: protocol.Video, kind: str, per_frame
              ) -> Iterator[protocol.Clip]:
    t = len(video.frames)
    if kind == "frame":
        yield protocol.whole(np.stack([video.frames[t - 1]]),
                             np.stack([video.label(t - 1)]), (0,), key=video.key)
    elif per_frame is None:
        yield protocol.after_full_run(video.stacked(), video.label_maps(), (t - 1,),
                                      video.key)
    else:
        for k in per_frame[i]:
            frames = np.stack(list(video.frames[t - 1 - k:]))
            labels = np.full(frames.shape[:3], IGNORE_LABEL, np.uint8)
            labels[-1] = video.label(t - 1)
            yield protocol.Clip(frames, labels, (k,), (k,), 1, f"{video.key}@{k}")


def clips(
    root: str | os.PathLike[str], schedule, phase: str = "coin", split: str = "val",
    ids: Iterable[str] | None = None,
) -> Iterator[protocol.Clip]:
    """The clips a schedule runs on Cityscapes (`form`) over a split's `snippets`.

    Args:
      root: the directory holding ``gtFine/`` and ``leftImg8bit_sequence/``.
      schedule: a `clockwork.Schedule`, or the evaluator's baseline.
      phase: the fixed schedules' phase policy ("coin", the reference's, by default).
      split: ``val`` (the paper's) or ``train``.
      ids: labelled frame ids, in this order; all of the split's if None.

    Returns:
      An iterator of `protocol.Clip`s, read lazily (the split is listed, the phases drawn,
      now).
    """
    return protocol.clips(snippets(root, split, ids=ids), form, schedule, phase)


# The gtFine-labelled frames by split (2975 train, 500 val).
IMAGES = datasets.Images(labelled_frame_ids, read_example, "val")

# `--data cityscapes`: the val split's snippets (`clips`), the directory checked when it opens.
VIDEOS = datasets.Videos(
    lambda request: snippets(request.root, "val"), form,
    "val, 20-frame snippets, seeded coin phases (cityscapes-clockwork-exp)", "cityscapes",
    phase="coin", phases=protocol.PHASES)

DATASET = datasets.DataSet(
    "cityscapes", CLASSES, mean_bgr=(72.78044, 83.21195, 73.45286),
    frame_size="whole 1024 x 2048 frames", videos={"cityscapes": VIDEOS},
    training={"cityscapes": training.image_training(IMAGES, IMAGES)})
