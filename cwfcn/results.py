"""Results files: checked writable before the work, written whole or not at all.

A results JSON appears only once complete: it is written to a temporary file in the
same directory, synced, then renamed over the target, so a crash or a full disk
never leaves a partial file that reads as a final result.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from cwfcn.durable import append_json_line, check_replaceable, write_atomically


def check_writable(path: str | os.PathLike, what: str = "the results file") -> None:
    """Raises OSError (naming `what`, `path` and the fix) unless a file can be created next to
    `path` and `path` is absent or a regular file (`durable.check_replaceable`)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        check_replaceable(path)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(e.errno, f"cannot write {what} {os.fspath(path)!r} "
                               f"({e.strerror}): pass a writable path, or free disk space") from e


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as JSON to `path` atomically; on any error `path` is left as it was."""
    write_atomically(path, lambda f: json.dump(obj, f, indent=1))


class Journal:
    """Per-clip results of an evaluation in progress, so that a killed run resumes.

    One JSON line per finished clip, appended and synced before the next clip starts,
    after a first line naming the job (`key`: whatever must match for the results to be
    reusable: config, weights, data, dtype). A journal of another job is started over; a
    line cut short by a kill is dropped. Delete it (`remove`) once the final results
    are written.
    """

    def __init__(self, path: str | os.PathLike, key: str):
        self.path = os.fspath(path)
        self._done: dict[tuple[str, tuple[int, ...]], dict] = {}
        lines = []
        if os.path.exists(self.path):
            with open(self.path, "r+") as f:
                text = f.read()
                complete = text[: text.rfind("\n") + 1]
                if complete != text:  # drop the line a kill cut short, so appends start clean
                    f.truncate(len(complete.encode()))
            lines = complete.splitlines()
        if lines and _loads(lines[0]) == {"key": key}:
            for line in lines[1:]:
                record = _loads(line)
                if record is not None:
                    self._done[(record.pop("schedule"), tuple(record.pop("place")))] = record
        else:
            append_json_line(self.path, {"key": key}, mode="w")

    def __len__(self) -> int:
        return len(self._done)

    def get(self, schedule: str, place: tuple[int, ...]) -> dict | None:
        """The record of the clip at `place` (`protocol.Clip.place`) under `schedule`, as it
        was added, if it was finished earlier."""
        return self._done.get((schedule, tuple(place)))

    def add(self, schedule: str, place: tuple[int, ...], record: dict) -> None:
        """Appends (and syncs) one finished clip's record (JSON-able values)."""
        append_json_line(self.path, {"schedule": schedule, "place": list(place), **record})
        self._done[(schedule, tuple(place))] = record

    def remove(self) -> None:
        """Deletes the journal file (once the final results are written)."""
        os.unlink(self.path)


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:  # the line a kill cut short
        return None
