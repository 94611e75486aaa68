"""PASCAL VOC2011 segmentation, SBD, and the paper's translated-PASCAL videos.

Layouts (as unpacked from the official archives):

    <voc_root>/VOC2011/JPEGImages/<id>.jpg
    <voc_root>/VOC2011/SegmentationClass/<id>.png      palette ('P') PNG: index = class id
    <voc_root>/VOC2011/ImageSets/Segmentation/{train,val,trainval}.txt

    <sbd_root>/dataset/img/<id>.jpg
    <sbd_root>/dataset/cls/<id>.mat                     struct GTcls, field Segmentation
    <sbd_root>/dataset/{train,val}.txt

``voc_root`` is the ``VOCdevkit`` directory (the VOC2011 archive unpacks to
``TrainVal/VOCdevkit/VOC2011``); ``sbd_root`` is ``benchmark_RELEASE``. `download` and
`download_sbd` fetch and unpack both and return these roots.

Labels are uint8 class ids: 0 background, 1..20 the `VOC_CLASSES`, 255 (`IGNORE_LABEL`) the
void border. VOC label PNGs are read as raw palette indices, never as RGB colours.

Splits: ``train``, ``val``, ``trainval`` from ImageSets, and ``seg11valid``: the 736 images of
VOC2011 segval that are not in SBD train, on which FCN and Clockwork FCN report results. The
list ships with this package (``seg11valid.txt``, from the FCN reference implementation).

Videos: `translated_videos` yields the paper's translated PASCAL: every frame is labelled.
All readers in `cwfcn.data` share one video contract: ``(frames uint8 [T, H, W, 3] RGB,
labels uint8 [T, H, W])``; a frame without ground truth has its labels filled with 255, so
scoring ignores it with no separate mask.

This module also holds the small file helpers (`read_rgb`, `read_ids`, `require`,
`check_same_size`) that the other readers share.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from cwfcn.data import datasets, protocol, training, translate
from cwfcn.data import download as dl
from cwfcn.data.files import IGNORE_LABEL, check_same_size, read_ids, read_rgb, require

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

VOC2011_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar"
VOC2011_SHA256 = "0a7f5f5d154f7290ec65ec3f78b72ef72c6d93ff6d79acd40dc222a9ee5248ba"
SBD_URL = (
    "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
    "benchmark.tgz"
)
SBD_SHA256 = "6a5a2918d5c73ce032fdeba876574d150d9d04113ab87540a1304cbcc715be53"

SEG11VALID_SIZE = 736

_VOC_FIX = (
    "download VOCtrainval_25-May-2011.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2011/ "
    "and unpack it so that <root>/VOC2011/JPEGImages exists (cwfcn.data.voc.download(data_dir) "
    "does both and returns the root), or pass the VOCdevkit directory as root"
)
_SBD_FIX = (
    "download benchmark.tgz (SBD) from "
    "http://home.bharathh.info/pubs/codes/SBD/download.html and unpack it so that "
    "<root>/dataset/cls exists (cwfcn.data.voc.download_sbd(data_dir) does both and returns "
    "the root), or pass the benchmark_RELEASE directory as root"
)


def _check_class_ids(label: np.ndarray, num_classes: int, path: Path) -> None:
    """Raise ValueError if ``label`` holds values outside ``0..num_classes-1`` and 255."""
    bad = (label >= num_classes) & (label != IGNORE_LABEL)
    if bad.any():
        raise ValueError(
            f"{path} holds values {sorted(np.unique(label[bad]).tolist())[:5]} outside the "
            f"class ids 0..{num_classes - 1} and {IGNORE_LABEL}; is it a class label map of this "
            "data set (not e.g. an instance map)?"
        )


# --- PASCAL VOC2011 -----------------------------------------------------------------------------


def voc_dir(root: str | os.PathLike[str]) -> Path:
    """``<root>/VOC2011``, checked to exist; or ``root`` itself if it holds ``JPEGImages``
    (a year folder, or a sample in the same layout such as `samples.fetch()['voc_images']`)."""
    if (Path(root) / "JPEGImages").is_dir():
        return Path(root)
    return require(Path(root) / "VOC2011" / "JPEGImages", _VOC_FIX).parent


def seg11valid_ids() -> list[str]:
    """The 736 seg11valid image ids (VOC2011 segval minus SBD train), in FCN's order."""
    resource = importlib.resources.files("cwfcn.data").joinpath("seg11valid.txt")
    ids = [line.strip() for line in resource.read_text().splitlines() if line.strip()]
    if len(ids) != SEG11VALID_SIZE:
        raise ValueError(
            f"cwfcn/data/seg11valid.txt has {len(ids)} ids, expected {SEG11VALID_SIZE}; "
            "reinstall the package"
        )
    return ids


def split_ids(root: str | os.PathLike[str], split: str) -> list[str]:
    """Image ids of a VOC2011 segmentation split.

    Args:
      root: the VOCdevkit directory.
      split: ``train``, ``val``, ``trainval`` (from ImageSets/Segmentation) or ``seg11valid``
        (shipped with this package).

    Returns:
      ids like ``2007_000033``, in file order.
    """
    directory = voc_dir(root)
    if split == "seg11valid":
        return seg11valid_ids()
    return read_ids(
        directory / "ImageSets" / "Segmentation" / f"{split}.txt",
        f"the split must be one of train, val, trainval, seg11valid; {_VOC_FIX}",
    )


def read_image(root: str | os.PathLike[str], image_id: str) -> np.ndarray:
    """VOC2011 photo ``<root>/VOC2011/JPEGImages/<id>.jpg`` as uint8 ``[H, W, 3]`` RGB."""
    return read_rgb(voc_dir(root) / "JPEGImages" / f"{image_id}.jpg", _VOC_FIX)


def read_label(root: str | os.PathLike[str], image_id: str) -> np.ndarray:
    """VOC2011 class labels from ``SegmentationClass/<id>.png`` as uint8 ``[H, W]``.

    The PNG's palette indices are the class ids (0..20, 255 void); the palette colours are
    ignored.

    Raises:
      MissingFileError: the PNG is missing.
      ValueError: the PNG is not a palette or greyscale image (e.g. a colour rendering of the
        labels), or holds values that are not VOC class ids.
    """
    path = require(voc_dir(root) / "SegmentationClass" / f"{image_id}.png", _VOC_FIX)
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(
                f"{path} has mode {image.mode!r}, but VOC labels are palette ('P') PNGs whose "
                "indices are the class ids; use the SegmentationClass PNGs from the VOC archive, "
                "not a colour rendering"
            )
        label = np.array(image, dtype=np.uint8)  # palette indices, not colours
    _check_class_ids(label, len(VOC_CLASSES), path)
    return label


def read_example(root: str | os.PathLike[str], image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """One VOC2011 photo and its labels: uint8 ``[H, W, 3]`` and uint8 ``[H, W]``.

    Raises:
      MissingFileError: the photo or label file is missing.
      ValueError: the label's size differs from the photo's, or the label is not a class map.
    """
    image = read_image(root, image_id)
    label = read_label(root, image_id)
    directory = voc_dir(root)
    check_same_size(
        image,
        label,
        directory / "JPEGImages" / f"{image_id}.jpg",
        directory / "SegmentationClass" / f"{image_id}.png",
    )
    return image, label


def resolve_root(root: str) -> str:
    """The VOC-layout directory ``root`` names: "sample" is the embedded sample's photos."""
    if root != "sample":
        return root
    from cwfcn.data import samples  # samples imports this module: import it when used

    return str(samples.fetch(["voc_images"])["voc_images"])


# VOC2011 photos by split; also the validation images of SBD training (FCN: seg11valid).
IMAGES = datasets.Images(split_ids, lambda root, split, image_id: read_example(root, image_id),
                         "seg11valid", resolve_root)
# `(image uint8 [H, W, 3], label uint8 [H, W])` of each id of a split (seg11valid by default).
examples = IMAGES.examples


def translated(
    root: str | os.PathLike[str], shift: int, num_frames: int = 6, split: str = "seg11valid"
) -> Sequence[protocol.Video]:
    """READ of the paper's translated PASCAL: one video per image of ``split``.

    Each video (`translate.translated_video`, keyed by the image id) is ``num_frames`` crops
    of one photo, slid ``shift`` pixels per frame along its longer axis: frames uint8
    ``[T, H', W', 3]`` at times 0..T-1, every frame labelled (uint8 ``[T, H', W']``), frames
    2.. scored.

    Args:
      root: the VOCdevkit directory.
      shift: pixels of translation between frames (the paper uses 16 and 32).
      num_frames: frames per video T (the paper uses 6).
      split: a VOC2011 split name (see `split_ids`).

    Returns:
      The videos in split order: the split file is read now, each image when its video is.
    """
    ids = split_ids(root, split)
    return protocol.Lazy(len(ids), lambda i: translate.translated_video(
        ids[i], *read_example(root, ids[i]), shift, num_frames), keep=False)


def translated_videos(
    root: str | os.PathLike[str], shift: int, num_frames: int = 6, split: str = "seg11valid"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The videos of `translated` as ``(frames uint8 [T, H', W', 3], labels uint8
    [T, H', W'])``, in split order; the split file is read now, the images lazily."""
    return protocol.pairs(translated(root, shift, num_frames, split))


def download(data_dir: str | os.PathLike[str], *, url: str = VOC2011_URL,
             sha256: str | None = VOC2011_SHA256, progress: bool = True) -> Path:
    """Download and unpack the VOC2011 train/val archive (about 1.7 GB) under ``data_dir``.

    Returns:
      The VOCdevkit directory to pass as ``root`` to this module's readers.
    """
    return dl.fetch_archive(data_dir, "VOCtrainval_25-May-2011.tar", "VOCtrainval_25-May-2011",
                            "VOC2011/JPEGImages", url=url, sha256=sha256, progress=progress)


# --- SBD (Hariharan et al. 2011): FCN's training set ---------------------------------------------


def sbd_dir(root: str | os.PathLike[str]) -> Path:
    """``<root>/dataset``, checked to exist."""
    return require(Path(root) / "dataset" / "cls", _SBD_FIX).parent


def sbd_split_ids(root: str | os.PathLike[str], split: str = "train") -> list[str]:
    """Ids of an SBD split from ``dataset/<split>.txt`` (``train``: 8498 ids, ``val``: 2857)."""
    return read_ids(sbd_dir(root) / f"{split}.txt", f"the split must be train or val; {_SBD_FIX}")


def read_sbd_label(root: str | os.PathLike[str], image_id: str) -> np.ndarray:
    """SBD class labels ``dataset/cls/<id>.mat`` (``GTcls.Segmentation``) as uint8 ``[H, W]``.

    Raises:
      MissingFileError: the .mat file is missing.
      ValueError: it has no ``GTcls.Segmentation`` 2-D field, or holds non-class values.
    """
    path = require(sbd_dir(root) / "cls" / f"{image_id}.mat", _SBD_FIX)
    mat = scipy.io.loadmat(path, simplify_cells=True)
    gt = mat.get("GTcls")
    segmentation = gt.get("Segmentation") if isinstance(gt, dict) else None
    if segmentation is None or np.ndim(segmentation) != 2:
        raise ValueError(
            f"{path} has no 2-D GTcls.Segmentation field; use the cls/ files of SBD "
            "(benchmark_RELEASE/dataset/cls), not inst/"
        )
    label = np.asarray(segmentation)
    if label.min() < 0:
        raise ValueError(f"{path}: GTcls.Segmentation has negative values; is it an SBD file?")
    _check_class_ids(label, len(VOC_CLASSES), path)
    return label.astype(np.uint8)


def read_sbd_example(root: str | os.PathLike[str], image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """One SBD photo and its labels: uint8 ``[H, W, 3]`` and uint8 ``[H, W]``."""
    directory = sbd_dir(root)
    image_path = directory / "img" / f"{image_id}.jpg"
    image = read_rgb(image_path, _SBD_FIX)
    label = read_sbd_label(root, image_id)
    check_same_size(image, label, image_path, directory / "cls" / f"{image_id}.mat")
    return image, label


SBD_IMAGES = datasets.Images(
    sbd_split_ids, lambda root, split, image_id: read_sbd_example(root, image_id), "train")
# `(image, label)` of each id of an SBD split (train by default).
sbd_examples = SBD_IMAGES.examples


def download_sbd(data_dir: str | os.PathLike[str], *, url: str = SBD_URL,
                 sha256: str | None = SBD_SHA256, progress: bool = True) -> Path:
    """Download and unpack SBD's benchmark.tgz (about 1.4 GB) under ``data_dir``.

    Returns:
      The directory holding ``dataset/`` (``benchmark_RELEASE``), to pass as ``root``.
    """
    return dl.fetch_archive(data_dir, "benchmark.tgz", "benchmark", "dataset/cls", url=url,
                            sha256=sha256, progress=progress)


def _read_translated(request: datasets.Request) -> Sequence[protocol.Video]:
    """READ of `--data pascal-translated:SHIFT`: seg11valid, 6 frames, SHIFT px a frame."""
    return translated(request.root, int(request.arg), 6, "seg11valid")


# `--data pascal-translated:16` (or :32): the paper's translated PASCAL.
TRANSLATED = datasets.Videos(
    _read_translated, protocol.form_whole, translate.PROTOCOL,
    "pascal-translated:16, pascal-translated:32", args=("16", "32"),
    args_help="the paper's shifts are pascal-translated:16 and pascal-translated:32")

DATASET = datasets.DataSet(
    "voc", VOC_CLASSES, mean_bgr=(104.00698793, 116.66876762, 122.67891434),
    videos={"pascal-translated": TRANSLATED},
    training={"voc": training.image_training(IMAGES, IMAGES),
              "sbd": training.image_training(SBD_IMAGES, IMAGES)},
    frame_size="whole photos, at most 500 x 500; translated videos crop them along the "
               "longer axis")
