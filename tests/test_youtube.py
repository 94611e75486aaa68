"""Tests for cwfcn.data.youtube on a tiny youtube_masks tree written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cwfcn.data import youtube

H, W = 8, 10

# VOC2011 class ids, from the VOC devkit's class list (background = 0).
EXPECTED_VOC_ID = {
    "aeroplane": 1,
    "bird": 3,
    "boat": 4,
    "car": 7,
    "cat": 8,
    "cow": 10,
    "dog": 12,
    "horse": 13,
    "motorbike": 14,
    "train": 19,
}


def mask(left_columns: int) -> np.ndarray:
    """Object (255) in the first ``left_columns`` columns, background (0) elsewhere."""
    out = np.zeros((H, W), np.uint8)
    out[:, :left_columns] = 255
    return out


def shot_path(root: Path, shot_id: str) -> Path:
    cls, video, shot = shot_id.split("/")
    return root / "youtube_masks" / cls / "data" / video / "shots" / shot


def write_shot(
    root: Path,
    shot_id: str,
    numbers: list[int],
    frame_name: str = "frame{:04d}.jpg",
    frame_size: tuple[int, int] = (H, W),
) -> None:
    """Masks labels/<n:05d>.jpg (object in the first n % 7 + 2 columns) and their frames.

    ``frame_name`` is a pattern under ``<shot>/images``, or "v1" for the YouTube-Objects v1 tree.
    Frame n is a solid grey of value 10 * n, to tell frames apart after JPEG.
    """
    labels = shot_path(root, shot_id) / "labels"
    labels.mkdir(parents=True)
    for n in numbers:
        Image.fromarray(mask(n % 7 + 2)).save(labels / f"{n:05d}.jpg", quality=100)
        if frame_name == "v1":
            cls, video, shot = shot_id.split("/")
            path = root / "v1" / cls / "data" / video / "shots" / shot / f"frame{n:04d}.jpg"
        else:
            path = shot_path(root, shot_id) / "images" / frame_name.format(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*frame_size, 3), 10 * n, np.uint8)).save(path)


def test_voc_ids():
    assert youtube.VOC_ID == EXPECTED_VOC_ID
    assert set(youtube.YOUTUBE_CLASSES) == set(EXPECTED_VOC_ID)


@pytest.mark.parametrize("frame_name", ["frame{:04d}.jpg", "{:05d}.png", "{:05d}.jpg", "v1"])
def test_read_shot(tmp_path, frame_name):
    write_shot(tmp_path, "cat/0001/001", [21, 1, 11], frame_name)  # numeric, not write, order
    frames, labels = youtube.read_shot(tmp_path, "cat/0001/001")
    assert frames.shape == (3, H, W, 3) and frames.dtype == np.uint8
    assert labels.shape == (3, H, W) and labels.dtype == np.uint8
    assert np.abs(frames.mean(axis=(1, 2, 3)) - [10, 110, 210]).max() < 3  # frames 1, 11, 21
    for labels_n, n in zip(labels, [1, 11, 21], strict=True):
        expected = np.where(mask(n % 7 + 2) > 0, 8, 0)  # cat is VOC class 8
        np.testing.assert_array_equal(labels_n, expected)


def test_videos_one_per_shot(tmp_path):
    write_shot(tmp_path, "horse/0002/003", [1, 11])
    write_shot(tmp_path, "cat/0001/001", [1])
    write_shot(tmp_path, "cat/0001/002", [5, 15, 25])
    (shot_path(tmp_path, "cat/0004/001") / "labels").mkdir(parents=True)  # no masks: skipped
    ids = youtube.shot_ids(tmp_path)
    assert ids == ["cat/0001/001", "cat/0001/002", "horse/0002/003"]
    lengths = [(len(f), int(lab.max())) for f, lab in youtube.videos(tmp_path)]
    assert lengths == [(1, 8), (3, 8), (2, 13)]
    assert youtube.shot_ids(tmp_path, classes=["horse"]) == ["horse/0002/003"]
    ((frames, _),) = list(youtube.videos(tmp_path, ids=["cat/0001/001"]))
    assert len(frames) == 1


def test_threshold(tmp_path):
    labels_dir = shot_path(tmp_path, "dog/0001/001") / "labels"
    labels_dir.mkdir(parents=True)
    grey = np.tile(np.array([0, 15, 16, 127, 128], np.uint8), (H, 2))
    Image.fromarray(grey).save(labels_dir / "00001.png")  # lossless, to test exact values
    images = labels_dir.parent / "images"
    images.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images / "frame0001.jpg")
    _, labels = youtube.read_shot(tmp_path, "dog/0001/001")
    assert labels[0, 0, :5].tolist() == [0, 0, 12, 12, 12]
    _, labels = youtube.read_shot(tmp_path, "dog/0001/001", threshold=127)
    assert labels[0, 0, :5].tolist() == [0, 0, 0, 0, 12]  # strictly above


def test_frame_size_mismatch(tmp_path):
    write_shot(tmp_path, "car/0001/001", [1], frame_size=(2 * H, 2 * W))
    with pytest.raises(ValueError, match=r"16x20.*8x10.*resize_frames=True"):
        youtube.read_shot(tmp_path, "car/0001/001")
    frames, labels = youtube.read_shot(tmp_path, "car/0001/001", resize_frames=True)
    assert frames.shape == (1, H, W, 3) and labels.shape == (1, H, W)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="youtube_masks"):
        youtube.shot_ids(tmp_path)
    write_shot(tmp_path, "boat/0001/001", [1, 11])
    (shot_path(tmp_path, "boat/0001/001") / "images" / "frame0011.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"frame 11 .*frame0011\.jpg.*00011\.png"):
        youtube.read_shot(tmp_path, "boat/0001/001")
    with pytest.raises(ValueError, match="bad shot id"):
        youtube.videos(tmp_path, ids=["person/0001/001"])
    with pytest.raises(FileNotFoundError, match="labels"):
        youtube.read_shot(tmp_path, "cow/0001/001")
