"""Fetch and unpack data set archives: resumable, checksummed, atomic.

`download` streams a URL (http, https or file) to ``<dest>.part``, resuming a partial file
with an HTTP Range request (or a seek, for file:// URLs), checks the sha256 of the whole
file and only then renames it to ``dest``: a ``dest`` that exists is always complete.

`extract` unpacks a .tar / .tar.gz / .tgz / .tar.bz2 / .tar.xz / .zip archive into a fresh
temporary directory beside ``dest`` and renames it to ``dest`` when done, so an interrupted
extraction never leaves a half-filled ``dest``. Members that would land outside ``dest``
(absolute paths, ``..``, links pointing out) are refused before anything is written.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from cwfcn.durable import sha256_file

_CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough for a smooth progress bar
_TIMEOUT_S = 60.0
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def part_path(dest: str | os.PathLike[str]) -> Path:
    """Where `download` keeps the unfinished file for ``dest``: ``<dest>.part``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _file_url_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    return Path(urllib.request.url2pathname(parsed.path))


def _open_file_url(url: str, offset: int) -> tuple[BinaryIO, int | None, int]:
    """Open a file:// URL at ``offset``; returns (stream, total size, offset honoured)."""
    path = _file_url_path(url)
    if not path.is_file():
        raise FileNotFoundError(f"{url}: no such file {path}; check the URL")
    size = path.stat().st_size
    stream = open(path, "rb")  # closed by download()
    if offset > size:  # the part file is longer than the source: start again
        offset = 0
    stream.seek(offset)
    return stream, size, offset


def _open_http_url(url: str, offset: int) -> tuple[BinaryIO, int | None, int]:
    """Open an http(s) URL, asking for bytes from ``offset`` on; returns as `_open_file_url`."""
    request = urllib.request.Request(url, headers={"User-Agent": "cwfcn-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing past the end: the part file is already complete
            return io.BytesIO(), offset, offset
        raise
    length = response.headers.get("Content-Length")
    remaining = int(length) if length is not None else None
    if offset and response.status != 206:  # the server ignored Range: restart from byte 0
        offset = 0
    total = None if remaining is None else offset + remaining
    return response, total, offset


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def _verify(path: Path, url: str, sha256: str | None) -> None:
    """Check ``path`` against ``sha256``; on a mismatch delete it and raise ValueError."""
    actual = sha256_file(path)
    if sha256 is None:
        warnings.warn(
            f"{url}: no sha256 given, so the download is not verified; its sha256 is {actual} "
            "(pass sha256=... to pin it)",
            stacklevel=3,
        )
        return
    if actual != sha256.lower():
        path.unlink()
        raise ValueError(
            f"sha256 mismatch for {url}: expected {sha256.lower()}, got {actual}; deleted the "
            f"corrupt partial download {path}. Run the download again; if it fails the same "
            "way, the server now serves a different file: check the URL and the checksum"
        )


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming and checking its sha256.

    Bytes go to ``<dest>.part``; with ``resume`` an existing part file is continued from its
    end (HTTP Range, or a seek for file:// URLs), else it is overwritten. After the transfer the
    sha256 of the whole part file is checked and the file is renamed to ``dest`` atomically.
    If ``dest`` already exists it is checked instead and returned without downloading.

    Args:
      url: http://, https:// or file:// URL.
      dest: the file to create; its parent directories are created.
      sha256: expected hex digest (case-insensitive), or None to skip the check (a warning
        then gives the digest, so it can be pinned).
      resume: continue an existing ``<dest>.part`` instead of starting again.
      progress: show a tqdm progress bar on stderr.

    Returns:
      ``dest`` as a Path.

    Raises:
      ValueError: the sha256 of the download (the part file is deleted) or of an existing
        ``dest`` (left in place) differs from ``sha256``, or the URL scheme is unsupported.
      FileNotFoundError: a file:// URL names a missing file.
      urllib.error.URLError: the server could not be reached or answered an error.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url}; use http, https or file")
    if dest.exists():
        actual = sha256_file(dest)
        if sha256 is not None and actual != sha256.lower():
            raise ValueError(
                f"{dest} exists but its sha256 is {actual}, not {sha256.lower()}; delete it and "
                "download again"
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    offset = part.stat().st_size if resume and part.exists() else 0
    opener = _open_file_url if scheme == "file" else _open_http_url
    stream, total, offset = opener(url, offset)
    try:
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar,
        ):
            for chunk in _chunks(stream):
                out.write(chunk)
                bar.update(len(chunk))
    finally:
        stream.close()
    _verify(part, url, sha256)
    os.replace(part, dest)
    return dest


def _is_within(root: Path, target: Path) -> bool:
    root = root.resolve()
    target = target.resolve()
    return target == root or root in target.parents


def _check_member(root: Path, name: str, archive: Path) -> None:
    """Refuse a member name that is absolute or resolves outside ``root``."""
    absolute = Path(name).is_absolute() or name.startswith(("/", "\\"))
    if absolute or not _is_within(root, root / name):
        raise ValueError(
            f"{archive}: member {name!r} would be written outside the extraction directory; "
            "refusing to extract an unsafe archive"
        )


def _check_tar(tar: tarfile.TarFile, root: Path, archive: Path) -> None:
    for member in tar.getmembers():
        _check_member(root, member.name, archive)
        if member.issym() or member.islnk():
            # A symlink target is relative to the link's directory, a hard link's to the root.
            base = (root / member.name).parent if member.issym() else root
            if Path(member.linkname).is_absolute() or not _is_within(root, base / member.linkname):
                raise ValueError(
                    f"{archive}: link {member.name!r} -> {member.linkname!r} points outside the "
                    "extraction directory; refusing to extract an unsafe archive"
                )
        elif not (member.isfile() or member.isdir()):
            raise ValueError(
                f"{archive}: member {member.name!r} is a device or fifo; refusing to extract it"
            )


def _extract_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        _check_tar(tar, root, archive)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: a second line of defence
            tar.extractall(root, filter="data")
        else:  # pragma: no cover - old Python patch releases
            tar.extractall(root)  # members checked above


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            _check_member(root, name, archive)
        zf.extractall(root)


def extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Unpack ``archive`` into the directory ``dest``, atomically.

    The archive's members become ``dest``'s contents. Extraction happens in a temporary
    directory beside ``dest`` that is renamed to ``dest`` at the end, so an existing ``dest``
    means a finished extraction: it is returned as is.

    Args:
      archive: a .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz or .zip file.
      dest: the directory to create.

    Returns:
      ``dest`` as a Path.

    Raises:
      FileNotFoundError: ``archive`` does not exist.
      ValueError: unknown archive type, or a member that would land outside ``dest``
        (absolute path, ``..``, a link pointing out, a device file); nothing is left behind.
    """
    archive = Path(archive)
    dest = Path(dest)
    if dest.exists():
        return dest
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} not found; download it first")
    name = archive.name.lower()
    if name.endswith(".zip"):
        extractor = _extract_zip
    elif name.endswith(_TAR_SUFFIXES):
        extractor = _extract_tar
    else:
        raise ValueError(
            f"{archive}: unknown archive type; expected one of .zip, {', '.join(_TAR_SUFFIXES)}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0o700 mode would stick to dest; mkdir honours the umask.
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        extractor(archive, tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def find_root(base: str | os.PathLike[str], marker: str, max_depth: int = 3) -> Path:
    """The shallowest directory under ``base`` (``base`` included) that contains ``marker``.

    Archives wrap their contents in different top-level folders (VOC2011 unpacks to
    ``TrainVal/VOCdevkit/VOC2011``); this finds the folder a reader wants.

    Args:
      base: directory to search.
      marker: relative path (file or directory) that the wanted directory contains.
      max_depth: how many levels below ``base`` to look.

    Returns:
      The directory ``d`` with ``d / marker`` existing, shallowest first, then by name.

    Raises:
      FileNotFoundError: no such directory within ``max_depth`` levels.
    """
    base = Path(base)
    level = [base]
    for _ in range(max_depth + 1):
        for directory in level:
            if (directory / marker).exists():
                return directory
        level = sorted(child for d in level for child in d.iterdir() if child.is_dir())
    raise FileNotFoundError(
        f"no directory under {base} (up to {max_depth} levels) contains {marker}; the archive "
        "did not unpack as expected: check that it is the right file"
    )


def fetch_archive(
    data_dir: str | os.PathLike[str], archive: str, unpacked: str, marker: str, *, url: str,
    sha256: str | None, progress: bool = True,
) -> Path:
    """A data set's archive downloaded (`download`), unpacked (`extract`) and its root found.

    Args:
      data_dir: the directory to download and unpack into.
      archive: the archive's file name under ``data_dir``.
      unpacked: the directory under ``data_dir`` it unpacks into.
      marker: what the wanted root contains (`find_root`).
      url, sha256, progress: as `download`.

    Returns:
      The directory under ``<data_dir>/<unpacked>`` holding ``marker``.
    """
    data_dir = Path(data_dir)
    path = download(url, data_dir / archive, sha256=sha256, progress=progress)
    return find_root(extract(path, data_dir / unpacked), marker)
