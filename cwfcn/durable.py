"""Files that survive a crash: synced JSON lines, files written whole or not at all, and
the digest that pins a file.

Every log and journal of cwfcn appends through `append_json_line`, so a kill loses at
most the line being written (readers drop a line cut short); results files and exported
steps are written through `write_atomically`; every pinned download and archive is
checked with `sha256_file`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from typing import IO, Any

_CHUNK = 1 << 20  # bytes read at a time when hashing: 1 MiB


def append_json_line(path: str | os.PathLike[str], record: Any, *, mode: str = "a") -> None:
    """Writes `record` as one JSON line to `path`, flushed and synced before returning.

    Args:
      path: the file (its directory must exist).
      record: anything `json.dumps` takes.
      mode: "a" appends; "w" starts the file over with this line.
    """
    with open(path, mode) as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 digest of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Raises OSError unless `path` is absent or a regular file (or a link to one): a
    directory, device, FIFO or socket there is refused, never replaced by a file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        folder = stat.S_ISDIR(mode)
        raise OSError(errno.EISDIR if folder else errno.EINVAL,
                      f"it is {'a directory' if folder else 'a device, FIFO or socket'}, not a "
                      "regular file", os.fspath(path))


def _new_file_mode(path: str | os.PathLike[str]) -> int:
    """The mode a file written to `path` gets: the replaced file's, else 0666 under the
    umask, as `open` would give (mkstemp's 0600 would hide results from the user's group)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # the only way to read it; set back at once
        os.umask(umask)
        return 0o666 & ~umask


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO], None], *,
                     binary: bool = False) -> None:
    """Writes `path` whole or not at all: `write(f)` fills a temporary file in the same
    directory, which is synced and then renamed over `path`. On any error `path` is left as
    it was and the temporary file is removed.

    Raises:
      OSError: `path` is not a regular file (`check_replaceable`), or the write failed.
    """
    check_replaceable(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
