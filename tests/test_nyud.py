"""Tests for cwfcn.data.nyud on a tiny NYUD tree (FCN layout plus clips) written here."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from cwfcn.data import nyud

H, W = 8, 10


def segmentation(seed: int) -> np.ndarray:
    """NYUD 40-class values: 0 void, 1..40 classes, with both extremes present."""
    seg = np.random.default_rng(seed).integers(0, 41, size=(H, W)).astype(np.uint8)
    seg[0, 0], seg[0, 1], seg[0, 2] = 0, 1, 40
    return seg


def solid(value: int, h: int = H, w: int = W) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def write_nyud(
    root: Path, ids: list[str], label_dir: str = "segmentation"
) -> dict[str, np.ndarray]:
    (root / "data" / "images").mkdir(parents=True)
    (root / label_dir).mkdir(parents=True)
    segs = {}
    for seed, image_id in enumerate(ids):
        Image.fromarray(solid(10 + seed)).save(root / "data" / "images" / f"img_{image_id}.png")
        segs[image_id] = segmentation(seed)
        scipy.io.savemat(root / label_dir / f"img_{image_id}.mat", {"segmentation": segs[image_id]})
    (root / "test.txt").write_text("\n".join(ids) + "\n")
    return segs


def write_clip(root: Path, image_id: str, count: int, size: tuple[int, int] = (H, W)) -> None:
    """frame_0 .. frame_<count-1>, frame k a solid grey of value k (PNG keeps it exact)."""
    clip = root / "clips" / image_id
    clip.mkdir(parents=True)
    for k in range(count):
        Image.fromarray(solid(k, *size)).save(clip / f"frame_{k}.png")


def expected_labels(seg: np.ndarray) -> np.ndarray:
    """FCN's rule, spelled out: class c in 1..40 -> c-1, void 0 -> 255."""
    out = np.empty_like(seg)
    for (i, j), value in np.ndenumerate(seg):
        out[i, j] = 255 if value == 0 else value - 1
    return out


@pytest.mark.parametrize("label_dir", ["segmentation", "data/segmentation"])
def test_examples(tmp_path, label_dir):
    segs = write_nyud(tmp_path, ["5001", "5002"], label_dir)
    pairs = list(nyud.examples(tmp_path, "test"))
    assert len(pairs) == 2
    for (image, label), (seed, image_id) in zip(pairs, enumerate(["5001", "5002"]), strict=True):
        np.testing.assert_array_equal(image, solid(10 + seed))
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, expected_labels(segs[image_id]))
        assert label[0, 0] == 255 and label[0, 1] == 0 and label[0, 2] == 39


def test_label_errors(tmp_path):
    write_nyud(tmp_path, ["5001"])
    (tmp_path / "segmentation" / "img_5001.mat").unlink()
    with pytest.raises(FileNotFoundError) as info:
        nyud.read_label(tmp_path, "5001")
    assert "segmentation/img_5001.mat" in str(info.value)
    assert "data/segmentation/img_5001.mat" in str(info.value)
    scipy.io.savemat(tmp_path / "segmentation" / "img_5001.mat", {"segmentation": [[41]]})
    with pytest.raises(ValueError, match="40"):
        nyud.read_label(tmp_path, "5001")
    scipy.io.savemat(tmp_path / "segmentation" / "img_5001.mat", {"labels": [[1]]})
    with pytest.raises(ValueError, match="'segmentation'"):
        nyud.read_label(tmp_path, "5001")


def test_size_mismatch(tmp_path):
    write_nyud(tmp_path, ["5001"])
    Image.fromarray(solid(0, 9, 10)).save(tmp_path / "data" / "images" / "img_5001.png")
    with pytest.raises(ValueError, match=r"img_5001\.mat.*8x10.*9x10"):
        nyud.read_example(tmp_path, "5001")


def test_missing_root_and_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data/images.*nyud\.tar\.gz"):
        nyud.split_ids(tmp_path, "test")
    write_nyud(tmp_path, ["5001"])
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        nyud.split_ids(tmp_path, "val")


@pytest.mark.parametrize(
    ("stride", "num_frames", "kept"),
    [
        (10, None, [5, 15, 25]),  # counted back from the labelled frame 25
        (10, 2, [15, 25]),
        (1, 3, [23, 24, 25]),
        (30, None, [25]),
    ],
)
def test_clip_videos(tmp_path, stride, num_frames, kept):
    segs = write_nyud(tmp_path, ["5001"])
    write_clip(tmp_path, "5001", 26)  # frame_5 < frame_15 numerically, not as strings
    ((frames, labels),) = list(nyud.clip_videos(tmp_path, "test", stride, num_frames))
    assert frames.shape == (len(kept), H, W, 3) and frames.dtype == np.uint8
    assert labels.shape == (len(kept), H, W) and labels.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == kept
    assert (labels[:-1] == 255).all()
    np.testing.assert_array_equal(labels[-1], expected_labels(segs["5001"]))


def test_clip_errors(tmp_path):
    write_nyud(tmp_path, ["5001", "5002"])
    write_clip(tmp_path, "5001", 3, size=(9, 10))
    videos = nyud.clip_videos(tmp_path, "test")
    with pytest.raises(ValueError, match=r"frame_\d\.png.*9x10"):
        next(videos)
    with pytest.raises(FileNotFoundError, match="clips/5002"):
        nyud.read_clip(tmp_path, "5002")
    with pytest.raises(ValueError, match="stride"):
        nyud.clip_videos(tmp_path, "test", stride=0)
    (tmp_path / "clips" / "5003").mkdir()
    with pytest.raises(FileNotFoundError, match="no frame_"):
        nyud.clip_frame_paths(tmp_path, "5003")


def test_download_from_file_url(tmp_path):
    staging = tmp_path / "staging" / "nyud"
    segs = write_nyud(staging, ["5001"])
    archive = tmp_path / "nyud.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname="nyud")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = nyud.download(tmp_path / "data", url=archive.as_uri(), sha256=sha, progress=False)
    assert (root / "data" / "images").is_dir()
    np.testing.assert_array_equal(nyud.read_label(root, "5001"), expected_labels(segs["5001"]))
