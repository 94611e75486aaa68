"""Tests for cwfcn.data.nyud on a tiny NYUD tree (FCN layout plus clips) written here.

The clip-making tests also write a tiny NYUDv2 raw dump in its real layout.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
from PIL import Image

from cwfcn.data import nyud, protocol

H, W = 8, 10


def segmentation(seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """NYUD 40-class values: 0 void, 1..40 classes, with both extremes present."""
    seg = np.random.default_rng(seed).integers(0, 41, size=size).astype(np.uint8)
    seg[0, 0], seg[0, 1], seg[0, 2] = 0, 1, 40
    return seg


def solid(value: int, h: int = H, w: int = W) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def write_nyud(
    root: Path, ids: list[str], label_dir: str = "segmentation", size: tuple[int, int] = (H, W)
) -> dict[str, np.ndarray]:
    (root / "data" / "images").mkdir(parents=True)
    (root / label_dir).mkdir(parents=True)
    segs = {}
    for seed, image_id in enumerate(ids):
        image = solid(10 + seed, *size)
        Image.fromarray(image).save(root / "data" / "images" / f"img_{image_id}.png")
        segs[image_id] = segmentation(seed, size)
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


# Clips from the raw dumps: a tiny raw dump in NYUDv2's layout, raw/<vid>/r-<ts>-<n>.ppm.

REPO = Path(__file__).resolve().parents[1]
RAW_H, RAW_W = 480, 640  # the Kinect frames
VIDEOS = {"bedroom_0001": 25, "kitchen_0002": 23}  # vid -> number of RGB frames
# id -> (vid, raw index k of its labelled frame), in test.txt order (not video order)
LABELLED = {"5001": ("bedroom_0001", 24), "5002": ("kitchen_0002", 17),
            "5003": ("bedroom_0001", 9)}
# every 10th raw frame back from the labelled one to the start, oldest first, by hand
EXPECTED_K = {"5001": [4, 14, 24], "5002": [7, 17], "5003": [9]}


def raw_frame(v: int, k: int, size: tuple[int, int] = (RAW_H, RAW_W)) -> np.ndarray:
    """Raw frame k of video v: red 100 v + k says which frame, green/blue say where.

    Rows and columns modulo primes, so any other crop offset gives other pixels.
    """
    rows, cols = np.mgrid[: size[0], : size[1]]
    return np.stack([np.full(size, 100 * v + k), rows % 251, cols % 253], -1).astype(np.uint8)


def cropped(v: int, k: int) -> np.ndarray:
    return raw_frame(v, k)[44:469, 40:600]  # the crop, spelled out


def write_raw_dump(
    raw: Path, videos: dict[str, int] = VIDEOS, size: tuple[int, int] = (RAW_H, RAW_W)
) -> dict[str, list[str]]:
    """Write the dump; returns each video's RGB frame names in timestamp order."""
    rng = random.Random(0)
    names = {}
    for v, (vid, count) in enumerate(videos.items()):
        video = raw / vid
        video.mkdir(parents=True)
        # the timestamps cross 1e9: their string order is not their numeric order
        stamps = [999_999_990.25 + 0.8 * k + 0.01 * v for k in range(count)]
        names[vid] = [f"r-{t:.6f}-{rng.randrange(10**9, 4 * 10**9)}.ppm" for t in stamps]
        order = list(range(count))
        rng.shuffle(order)  # created, so listed, out of order
        for k in order:
            Image.fromarray(raw_frame(v, k, size)).save(video / names[vid][k])
            # depth and accelerometer files between the RGB frames: to be ignored
            depth = np.full((4, 4), k, np.uint8)
            Image.fromarray(depth).save(video / f"d-{stamps[k] + 0.4:.6f}-{k + 7}.pgm")
            (video / f"a-{stamps[k] + 0.2:.6f}-{k + 9}.dump").write_bytes(bytes(8))
    return names


@pytest.fixture(scope="module")
def raw_dump(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """The raw dump (read only) and each video's frame names in timestamp order."""
    raw = tmp_path_factory.mktemp("nyud_raw") / "raw"
    return raw, write_raw_dump(raw)


def raw_list(names: dict[str, list[str]], labelled=LABELLED) -> str:
    return "".join(f"{vid}/{names[vid][k]}\n" for vid, k in labelled.values())


def nyud_root(root: Path, names: dict[str, list[str]]) -> Path:
    """A NYUD root with 425x560 labelled images, test.txt and test_rawImages.txt."""
    write_nyud(root, list(LABELLED), size=(425, 560))
    (root / "test_rawImages.txt").write_text(raw_list(names))
    return root


def read_clip_dir(clip: Path) -> dict[int, np.ndarray]:
    """{k: frame} of clips/<id>/frame_<k>.png; fails on any other file."""
    frames = {}
    for path in clip.iterdir():
        assert path.name.startswith("frame_") and path.suffix == ".png", path
        frames[int(path.stem.removeprefix("frame_"))] = np.asarray(Image.open(path))
    return frames


def mtimes(directory: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in [directory, *directory.rglob("*")]}


def test_raw_timestamp():
    assert nyud.raw_timestamp("r-1294439283.377657-2863109775.ppm") == 1294439283.377657
    assert nyud.raw_timestamp("d-1294439283.4-12.pgm") == 1294439283.4
    with pytest.raises(ValueError, match="timestamp"):
        nyud.raw_timestamp("INDEX.txt")


def test_list_raw_frames(raw_dump):
    raw, names = raw_dump
    for vid in VIDEOS:
        frames = nyud.list_raw_frames(raw, vid)
        assert frames == names[vid]  # RGB frames only, by timestamp
        assert frames != sorted(frames)  # ... which is not their name order
    with pytest.raises(nyud.MissingFileError, match="office_0009"):
        nyud.list_raw_frames(raw, "office_0009")


def test_preceding_frames():
    frames = [f"f{k}" for k in range(25)]
    assert nyud.preceding_frames(frames, "f24", 10) == [4, 14, 24]
    assert nyud.preceding_frames(frames, "f20", 10) == [0, 10, 20]
    assert nyud.preceding_frames(frames, "f3", 10) == [3]
    assert nyud.preceding_frames(frames, "f3", 1) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="f99"):
        nyud.preceding_frames(frames, "f99")
    with pytest.raises(ValueError, match="skip"):
        nyud.preceding_frames(frames, "f3", 0)


def test_crop_frame():
    frame = raw_frame(0, 3)
    out = nyud.crop_frame(frame)
    assert out.shape == (425, 560, 3)
    np.testing.assert_array_equal(out, frame[44:469, 40:600])
    assert nyud.crop_frame(raw_frame(0, 3, (469, 600))).shape == (425, 560, 3)
    with pytest.raises(ValueError, match=r"x\.ppm is 468x640.*too small"):
        nyud.crop_frame(raw_frame(0, 3, (468, 640)), "x.ppm")


def test_subsample_by_raw_index():
    paths = [Path(f"frame_{k}.png") for k in (4, 14, 24)]  # a clip already subsampled 10x
    assert nyud.subsample(paths, 10, None) == paths
    assert nyud.subsample(paths, 20, None) == [paths[0], paths[2]]
    assert nyud.subsample(paths, 10, 2) == paths[1:]
    assert nyud.subsample(paths, 7, None) == [paths[2]]
    gappy = [Path(f"frame_{k:04d}.png") for k in (0, 3, 10, 12, 20)]
    assert nyud.subsample(gappy, 10, None) == [gappy[0], gappy[2], gappy[4]]


def test_prepare_clips(tmp_path, raw_dump):
    raw, names = raw_dump
    root = nyud_root(tmp_path, names)
    done = nyud.prepare_clips(raw, root, progress=False)
    assert done == nyud.PreparedClips(written=["5001", "5002", "5003"], existing=[])
    assert sorted(p.name for p in (root / "clips").iterdir()) == sorted(LABELLED)
    for image_id, (vid, _) in LABELLED.items():
        v = list(VIDEOS).index(vid)
        frames = read_clip_dir(root / "clips" / image_id)
        assert sorted(frames) == EXPECTED_K[image_id]
        for k, frame in frames.items():
            assert (frame[..., 0] == 100 * v + k).all()  # the raw frame k of its video
            np.testing.assert_array_equal(frame, cropped(v, k))  # cropped [44:469, 40:600]


def test_prepare_twice_is_a_no_op(tmp_path, raw_dump):
    raw, names = raw_dump
    root = nyud_root(tmp_path, names)
    nyud.prepare_clips(raw, root, progress=False)
    before = mtimes(root / "clips")
    done = nyud.prepare_clips(raw, root, progress=False)
    assert done == nyud.PreparedClips(written=[], existing=["5001", "5002", "5003"])
    assert mtimes(root / "clips") == before


@pytest.mark.parametrize("killed", [False, True])
def test_interrupted_prepare(tmp_path, raw_dump, monkeypatch, killed):
    raw, names = raw_dump
    root = nyud_root(tmp_path, names)
    real_crop = nyud.crop_frame
    calls = []

    def crop_failing_in_second_clip(frame, source=None):
        calls.append(source)
        if len(calls) == len(EXPECTED_K["5001"]) + 2:  # 5002's second frame
            raise OSError("No space left on device (simulated)")
        return real_crop(frame, source)

    monkeypatch.setattr(nyud, "crop_frame", crop_failing_in_second_clip)
    if killed:  # a killed process cleans nothing up: keep the temporary directory
        monkeypatch.setattr(nyud, "shutil", SimpleNamespace(rmtree=lambda *_, **__: None))
    with pytest.raises(OSError, match="simulated"):
        nyud.prepare_clips(raw, root, progress=False)
    left = sorted(p.name for p in (root / "clips").iterdir())
    assert left[-1] == "5001" and not (root / "clips" / "5002").exists()
    assert len(left) == (2 if killed else 1)  # only a hidden .5002.partial-* when killed
    assert left[0].startswith(".5002.partial-") or not killed
    with pytest.raises(nyud.MissingFileError, match="clips/5002"):
        nyud.read_clip(root, "5002")
    monkeypatch.undo()
    done = nyud.prepare_clips(raw, root, progress=False)
    assert done == nyud.PreparedClips(written=["5002", "5003"], existing=["5001"])
    frames = read_clip_dir(root / "clips" / "5002")
    assert sorted(frames) == [7, 17]
    np.testing.assert_array_equal(frames[7], cropped(1, 7))


def test_prepared_clips_read_like_full_clips(tmp_path, raw_dump):
    raw, names = raw_dump
    prepared = nyud_root(tmp_path / "prepared", names)
    nyud.prepare_clips(raw, prepared, progress=False)
    full = tmp_path / "full"  # clips holding every raw frame up to the labelled one
    write_nyud(full, list(LABELLED), size=(425, 560))
    for image_id, (vid, last) in LABELLED.items():
        (full / "clips" / image_id).mkdir(parents=True)
        for k in range(last + 1):
            frame = cropped(list(VIDEOS).index(vid), k)
            Image.fromarray(frame).save(full / "clips" / image_id / f"frame_{k}.png")
    for stride, num_frames in [(10, None), (10, 2), (20, None)]:
        got = list(nyud.clip_videos(prepared, "test", stride, num_frames))
        want = list(nyud.clip_videos(full, "test", stride, num_frames))
        assert len(got) == len(want) == 3
        for (frames, labels), (want_frames, want_labels) in zip(got, want, strict=True):
            np.testing.assert_array_equal(frames, want_frames)
            np.testing.assert_array_equal(labels, want_labels)
    ((frames, labels), *_) = nyud.clip_videos(prepared, "test", 10)
    assert frames[:, 0, 0, 0].tolist() == [4, 14, 24] and labels.shape == (3, 425, 560)


def test_prepare_errors(tmp_path, raw_dump):
    raw, names = raw_dump
    root = nyud_root(tmp_path / "nyud", names)
    lists = root / "test_rawImages.txt"
    with pytest.raises(nyud.MissingFileError, match="nope"):
        nyud.prepare_clips(tmp_path / "nope", root, progress=False)
    lists.write_text(raw_list(names)[: raw_list(names).rindex("bedroom")])  # 2 lines
    with pytest.raises(ValueError, match=r"test\.txt has 3 ids.*test_rawImages\.txt has 2"):
        nyud.prepare_clips(raw, root, progress=False)
    lists.write_text(raw_list(names).replace("kitchen_0002", "office_0009"))
    with pytest.raises(nyud.MissingFileError, match="raw/office_0009"):
        nyud.prepare_clips(raw, root, progress=False)
    absent = "r-1294439283.377657-2863109775.ppm"
    lists.write_text(raw_list(names).replace(names["kitchen_0002"][17], absent))
    with pytest.raises(nyud.MissingFileError, match=rf"kitchen_0002/{absent}.*5002"):
        nyud.prepare_clips(raw, root, progress=False)
    lists.write_text(raw_list(names).replace("kitchen_0002/", ""))
    with pytest.raises(ValueError, match=r"line 2.*<vid>/<raw file name>"):
        nyud.prepare_clips(raw, root, progress=False)
    assert not (root / "clips").exists()  # all checked before anything is written
    lists.unlink()
    with pytest.raises(nyud.MissingFileError, match=r"test_rawImages\.txt"):
        nyud.prepare_clips(raw, root, progress=False)
    with pytest.raises(ValueError, match="skip"):
        nyud.prepare_clips(raw, root, skip=0, progress=False)

    lists.write_text(raw_list(names))
    (root / "clips" / "5001").mkdir(parents=True)  # not one prepare_clips wrote
    Image.fromarray(cropped(0, 24)).save(root / "clips" / "5001" / "frame_24.png")
    with pytest.raises(ValueError, match=r"clips/5001 exists but lacks.*\[4, 14\].*delete"):
        nyud.prepare_clips(raw, root, progress=False)


def test_prepare_frames_too_small(tmp_path):
    small = write_raw_dump(tmp_path / "raw", {"study_0003": 3}, size=(468, 640))
    root = tmp_path / "nyud"
    write_nyud(root, ["6001"])
    (root / "test_rawImages.txt").write_text(f"study_0003/{small['study_0003'][2]}\n")
    with pytest.raises(ValueError, match=r"study_0003/r-.*\.ppm is 468x640.*too small"):
        nyud.prepare_clips(tmp_path / "raw", root, progress=False)
    assert list((root / "clips").iterdir()) == []


def test_cli(tmp_path, raw_dump):
    raw, names = raw_dump
    root = nyud_root(tmp_path, names)

    def start(*args: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "cwfcn.data.nyud", "prepare-clips", *args]
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})

    runs = [start("--raw", str(raw), "--root", str(root), "--skip", "10"),
            start("--raw", str(tmp_path / "no_raw"), "--root", str(root))]  # in parallel
    (out, err), (bad_out, bad_err) = (run.communicate(timeout=120) for run in runs)
    assert runs[0].returncode == 0, err
    assert "3 clips written, 0 already there" in out
    assert sorted(read_clip_dir(root / "clips" / "5001")) == [4, 14, 24]
    assert runs[1].returncode == 2 and bad_out == ""
    assert bad_err.count("\n") == 1 and bad_err.startswith("nyud: error: ")
    assert str(tmp_path / "no_raw") in bad_err and "Traceback" not in bad_err


def test_cli_in_process(tmp_path, raw_dump, capsys):
    raw, names = raw_dump
    root = nyud_root(tmp_path, names)
    args = ["prepare-clips", "--raw", str(raw), "--root", str(root), "--no-progress"]
    assert nyud.main(args) == 0
    assert nyud.main(args) == 0
    assert "0 clips written, 3 already there" in capsys.readouterr().out
    for bad in (["prepare-clips", "--raw", str(raw)], [*args, "--skip", "0"], []):
        with pytest.raises(SystemExit) as info:
            nyud.main(bad)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("nyud: error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        nyud.main(["prepare-clips", "--help"])
    assert info.value.code == 0 and "--skip" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# the protocol: whole clips, the labelled frame scored (the paper, section 5)


def _sched(spec):
    from cwfcn import clockwork

    return clockwork.parse_schedule(spec)


def test_schedules_run_the_entire_clips(tmp_path):
    segs = write_nyud(tmp_path, ["5001", "5002"])
    write_clip(tmp_path, "5001", 35)  # every 10th back from 34: 4, 14, 24, 34
    write_clip(tmp_path, "5002", 12)  # 1, 11
    for spec in ("alternating", "adaptive:0.2", "pipeline3"):
        clips = list(nyud.clips(tmp_path, _sched(spec)))
        assert [[int(f.mean()) for f in c.frames] for c in clips] == [[4, 14, 24, 34], [1, 11]]
        assert [c.scored for c in clips] == [(3,), (1,)]
        assert [c.counted for c in clips] == [(1, 2, 3), (1,)]  # the first: denominator only
        assert [c.denominator for c in clips] == [4, 2]
        np.testing.assert_array_equal(clips[0].labels[-1], expected_labels(segs["5001"]))
        assert (clips[0].labels[:-1] == 255).all()
    (oracle, _) = nyud.clips(tmp_path, _sched("oracle"))
    assert [int(f.mean()) for f in oracle.frames] == [34]  # the labelled frame alone
    clips = list(nyud.clips(tmp_path, _sched("skip"), "fixed:1"))
    assert [[int(f.mean()) for f in c.frames] for c in clips] == [[24, 34], [1, 11]]
    clips = nyud.clips(tmp_path, _sched("exponential"), "all")
    assert [len(next(clips).frames) for _ in range(4)] == [1, 2, 3, 4]  # phases 0..3 of 5001
    with pytest.raises(ValueError, match="phase 2 needs 3"):
        list(nyud.clips(tmp_path, _sched("exponential"), "all"))


def test_read_gives_every_10th_raw_frame_back_the_last_labelled(tmp_path, monkeypatch):
    write_nyud(tmp_path, ["5001", "5002"])
    write_clip(tmp_path, "5001", 35)  # 34, 24, 14, 4
    write_clip(tmp_path, "5002", 12)  # 11, 1
    videos = nyud.clip_set(tmp_path, "test")
    assert len(videos) == 2
    first, second = videos
    assert (first.key, first.times, first.labelled, first.scored) == ("5001", (4, 14, 24, 34),
                                                                       (3,), (3,))
    assert (second.times, second.labelled, second.scored) == ((1, 11), (1,), (1,))
    reads = []
    real = nyud.read_rgb
    monkeypatch.setattr(nyud, "read_rgb", lambda path, fix: reads.append(path.name) or
                        real(path, fix))
    (oracle, _) = protocol.clips(nyud.clip_set(tmp_path, "test"), nyud.form, _sched("oracle"),
                                 "clip")
    # The labelled frame of each clip alone: nothing before it is read.
    assert reads == ["frame_34.png", "frame_11.png"]
    assert oracle.frames[:, 0, 0, 0].tolist() == [34]
