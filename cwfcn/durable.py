"""Files that survive a crash: synced JSON lines, and the digest that pins a file.

Every log and journal of cwfcn appends through `append_json_line`, so a kill loses at
most the line being written (readers drop a line cut short); every pinned download and
archive is checked with `sha256_file`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

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
