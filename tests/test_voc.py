"""Tests for cwfcn.data.voc on tiny VOCdevkit and SBD trees written here."""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from cwfcn.data import protocol, voc

SEG11VALID_SHA256 = "4ca991bd72c251fd2485eaa9e29536502ea3800d1b1c17c151fd6a04bcfbc2cc"


def voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved class index), 256 RGB triples flattened."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def make_label(h: int, w: int, seed: int) -> np.ndarray:
    """Random class ids 0..20 with a 1-pixel 255 border, like VOC's void outlines."""
    label = np.random.default_rng(seed).integers(0, 21, size=(h, w)).astype(np.uint8)
    label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = 255
    return label


def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colours, so JPEG round trips stay within a few grey levels."""
    yy, xx = np.mgrid[:h, :w]
    base = np.random.default_rng(seed).integers(40, 200, size=3)
    return np.stack([(base[c] + 2 * yy + xx) % 256 for c in range(3)], -1).astype(np.uint8)


def save_palette_png(path: Path, label: np.ndarray) -> None:
    image = Image.fromarray(label, mode="P")
    image.putpalette(voc_palette())
    image.save(path)


def write_voc(
    root: Path, images: dict[str, tuple[int, int]], splits: dict[str, list[str]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A VOCdevkit under ``root``; returns {id: (image, label)} as written."""
    voc_dir = root / "VOC2011"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc_dir / sub).mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, (image_id, (h, w)) in enumerate(images.items()):
        image, label = make_image(h, w, seed), make_label(h, w, seed)
        Image.fromarray(image).save(voc_dir / "JPEGImages" / f"{image_id}.jpg", quality=95)
        save_palette_png(voc_dir / "SegmentationClass" / f"{image_id}.png", label)
        written[image_id] = (image, label)
    for split, ids in splits.items():
        (voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return written


@pytest.fixture
def devkit(tmp_path):
    root = tmp_path / "VOCdevkit"
    written = write_voc(
        root,
        {"2008_000001": (8, 10), "2008_000002": (10, 8), "2009_000003": (8, 10)},
        {"train": ["2008_000001", "2008_000002"], "val": ["2009_000003"]},
    )
    return root, written


def test_read_label_returns_palette_indices(devkit):
    root, written = devkit
    label = voc.read_label(root, "2008_000001")
    assert label.dtype == np.uint8 and label.shape == (8, 10)
    np.testing.assert_array_equal(label, written["2008_000001"][1])
    assert label[0, 0] == 255
    # The PNG's colours are not the ids: reading them as RGB would give other numbers.
    rgb = np.asarray(Image.open(root / "VOC2011/SegmentationClass/2008_000001.png").convert("RGB"))
    assert not np.array_equal(rgb[..., 0], label)


def test_read_image_and_examples(devkit):
    root, written = devkit
    pairs = list(voc.examples(root, "train"))
    assert len(pairs) == 2
    for (image, label), image_id in zip(pairs, ["2008_000001", "2008_000002"], strict=True):
        expected_image, expected_label = written[image_id]
        assert image.dtype == np.uint8 and image.shape == (*expected_label.shape, 3)
        assert np.abs(image.astype(int) - expected_image).mean() < 3  # JPEG is lossy
        np.testing.assert_array_equal(label, expected_label)


def test_split_ids(devkit):
    root, _ = devkit
    assert voc.split_ids(root, "train") == ["2008_000001", "2008_000002"]
    assert voc.split_ids(root, "val") == ["2009_000003"]
    with pytest.raises(FileNotFoundError, match=r"trainval\.txt"):
        voc.split_ids(root, "trainval")


def test_seg11valid_is_fcn_list():
    ids = voc.seg11valid_ids()
    assert len(ids) == 736 == len(set(ids))
    assert all(re.fullmatch(r"20(07|08|09|10|11)_\d{6}", i) for i in ids)
    assert ids[:2] == ["2007_000033", "2007_000042"] and ids[-1] == "2011_003271"
    data = importlib.resources.files("cwfcn.data").joinpath("seg11valid.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == SEG11VALID_SHA256


def test_missing_root_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        voc.split_ids(tmp_path / "nothing", "val")
    message = str(info.value)
    assert str(tmp_path / "nothing" / "VOC2011" / "JPEGImages") in message
    assert "VOCtrainval_25-May-2011.tar" in message


def test_missing_image_for_split_id(devkit):
    root, _ = devkit
    (root / "VOC2011/ImageSets/Segmentation/val.txt").write_text("2009_000003\n2010_999999\n")
    videos = voc.examples(root, "val")
    next(videos)
    with pytest.raises(FileNotFoundError, match=r"2010_999999\.jpg"):
        next(videos)


def test_size_mismatch_raises(devkit):
    root, _ = devkit
    save_palette_png(root / "VOC2011/SegmentationClass/2008_000001.png", make_label(9, 10, 0))
    with pytest.raises(ValueError, match=r"2008_000001\.png.*9x10.*8x10"):
        voc.read_example(root, "2008_000001")


def test_rgb_label_refused(devkit):
    root, _ = devkit
    path = root / "VOC2011/SegmentationClass/2008_000001.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(ValueError, match="palette"):
        voc.read_label(root, "2008_000001")


def test_non_class_values_refused(devkit):
    root, _ = devkit
    label = make_label(8, 10, 0)
    label[3, 3] = 42  # e.g. an instance map from SegmentationObject
    save_palette_png(root / "VOC2011/SegmentationClass/2008_000001.png", label)
    with pytest.raises(ValueError, match="42"):
        voc.read_label(root, "2008_000001")


@pytest.mark.parametrize(("shift", "rows"), [(16, 170 - 5 * 16), (32, 170 - 5 * 32)])
def test_translated_videos(tmp_path, shift, rows):
    root = tmp_path / "VOCdevkit"
    written = write_voc(root, {"2008_000007": (170, 120)}, {"val": ["2008_000007"]})
    (video,) = list(voc.translated_videos(root, shift, split="val"))
    frames, labels = video
    assert frames.shape == (6, rows, 120, 3) and frames.dtype == np.uint8
    assert labels.shape == (6, rows, 120) and labels.dtype == np.uint8
    label = written["2008_000007"][1]
    for k in range(6):  # portrait: the window slides down by `shift` rows a frame
        np.testing.assert_array_equal(labels[k], label[k * shift : k * shift + rows])
    decoded = np.asarray(Image.open(root / "VOC2011/JPEGImages/2008_000007.jpg"))
    np.testing.assert_array_equal(frames[5], decoded[5 * shift : 5 * shift + rows])


def test_translated_videos_default_split_is_seg11valid(tmp_path):
    root = tmp_path / "VOCdevkit"
    write_voc(root, {"2007_000033": (40, 50)}, {})
    frames, labels = next(voc.translated_videos(root, shift=2, num_frames=3))
    assert frames.shape == (3, 40, 46, 3)  # landscape: 50 - 2*2 columns
    assert labels.shape == (3, 40, 46)


# --- SBD -----------------------------------------------------------------------------------------


def write_sbd(root: Path, ids: list[str], h: int = 8, w: int = 10) -> dict[str, np.ndarray]:
    dataset = root / "dataset"
    (dataset / "img").mkdir(parents=True)
    (dataset / "cls").mkdir()
    labels = {}
    for seed, image_id in enumerate(ids):
        label = np.random.default_rng(seed).integers(0, 21, size=(h, w)).astype(np.uint8)
        Image.fromarray(make_image(h, w, seed)).save(dataset / "img" / f"{image_id}.jpg")
        gtcls = {
            "Segmentation": label,
            "Boundaries": np.zeros((20, 1), dtype=object),
            "CategoriesPresent": np.unique(label[label > 0]).astype(np.uint8),
        }
        scipy.io.savemat(dataset / "cls" / f"{image_id}.mat", {"GTcls": gtcls})
        labels[image_id] = label
    (dataset / "train.txt").write_text("\n".join(ids) + "\n")
    return labels


def test_sbd_round_trip(tmp_path):
    root = tmp_path / "benchmark_RELEASE"
    labels = write_sbd(root, ["2008_000002", "2008_000003"])
    assert voc.sbd_split_ids(root) == ["2008_000002", "2008_000003"]
    pairs = list(voc.sbd_examples(root, "train"))
    for (image, label), image_id in zip(pairs, ["2008_000002", "2008_000003"], strict=True):
        assert image.shape == (8, 10, 3) and image.dtype == np.uint8
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, labels[image_id])


def test_sbd_errors(tmp_path):
    root = tmp_path / "benchmark_RELEASE"
    write_sbd(root, ["2008_000002"])
    with pytest.raises(FileNotFoundError, match=r"benchmark\.tgz"):
        voc.sbd_split_ids(tmp_path / "elsewhere")
    scipy.io.savemat(root / "dataset/cls/2008_000002.mat", {"GTinst": {"Segmentation": [[1]]}})
    with pytest.raises(ValueError, match=r"GTcls\.Segmentation"):
        voc.read_sbd_label(root, "2008_000002")
    gtcls = {"Segmentation": np.zeros((9, 10), np.uint8)}
    scipy.io.savemat(root / "dataset/cls/2008_000002.mat", {"GTcls": gtcls})
    with pytest.raises(ValueError, match="9x10"):
        voc.read_sbd_example(root, "2008_000002")


def test_download_from_file_url(tmp_path):
    # An archive laid out like the real one: TrainVal/VOCdevkit/VOC2011/...
    staging = tmp_path / "staging"
    written = write_voc(staging / "TrainVal" / "VOCdevkit", {"2008_000001": (8, 10)}, {})
    archive = tmp_path / "voc.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(staging / "TrainVal", arcname="TrainVal")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = voc.download(tmp_path / "data", url=archive.as_uri(), sha256=sha, progress=False)
    assert root == tmp_path / "data" / "VOCtrainval_25-May-2011" / "TrainVal" / "VOCdevkit"
    np.testing.assert_array_equal(voc.read_label(root, "2008_000001"), written["2008_000001"][1])


def test_translated_read_scores_frames_2_on(tmp_path):
    root = tmp_path / "VOCdevkit"
    write_voc(root, {"2008_000007": (40, 30), "2008_000008": (30, 40)},
              {"val": ["2008_000007", "2008_000008"]})
    videos = voc.translated(root, 4, split="val")
    assert len(videos) == 2
    for video, image_id in zip(videos, ["2008_000007", "2008_000008"], strict=True):
        assert video.key == image_id and video.times == video.labelled == (0, 1, 2, 3, 4, 5)
        assert video.scored == (2, 3, 4, 5)  # the paper's frames 2..5
        assert video.frames.shape[0] == 6 and video.label_maps().shape == video.frames.shape[:3]
    (clip, _) = protocol.clips(videos, voc.DATASET.videos["pascal-translated"].form, None,
                                "clip")
    assert clip.key == "0" and clip.scored == clip.counted == (2, 3, 4, 5)
