"""Tests for cwfcn.data.download (download, extract, find_root) and cwfcn.data.prefetch."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from cwfcn.data import download as dl
from cwfcn.data.prefetch import prefetch

PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, not a multiple of the chunk size


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "archive.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


# --- download ------------------------------------------------------------------------------------


def test_file_url_download(source, tmp_path):
    dest = tmp_path / "out" / "a.bin"
    got = dl.download(source.as_uri(), dest, sha256=_sha(PAYLOAD), progress=False)
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dl.part_path(dest).exists()


def test_resume_keeps_part_and_seeks(source, tmp_path):
    # The part file holds a wrong prefix: if it is resumed, the result keeps those bytes, which
    # proves the source was read from the part's length on rather than from byte 0.
    dest = tmp_path / "a.bin"
    prefix = b"\xff" * 1000
    dl.part_path(dest).write_bytes(prefix)
    expected = prefix + PAYLOAD[1000:]
    dl.download(source.as_uri(), dest, sha256=_sha(expected), progress=False)
    assert dest.read_bytes() == expected


def test_no_resume_starts_again(source, tmp_path):
    dest = tmp_path / "a.bin"
    dl.part_path(dest).write_bytes(b"\xff" * 1000)
    dl.download(source.as_uri(), dest, sha256=_sha(PAYLOAD), resume=False, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_resume_of_a_correct_partial_download(source, tmp_path):
    dest = tmp_path / "a.bin"
    dl.part_path(dest).write_bytes(PAYLOAD[:4321])
    dl.download(source.as_uri(), dest, sha256=_sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_sha_mismatch_deletes_part_and_raises(source, tmp_path):
    dest = tmp_path / "a.bin"
    with pytest.raises(ValueError, match="sha256 mismatch") as info:
        dl.download(source.as_uri(), dest, sha256="0" * 64, progress=False)
    assert _sha(PAYLOAD) in str(info.value)  # says what it got
    assert not dest.exists()
    assert not dl.part_path(dest).exists()


def test_existing_dest_is_verified_not_downloaded(tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(PAYLOAD)
    missing = (tmp_path / "nowhere.bin").as_uri()  # would fail if it were fetched
    assert dl.download(missing, dest, sha256=_sha(PAYLOAD), progress=False) == dest
    with pytest.raises(ValueError, match="delete it"):
        dl.download(missing, dest, sha256="1" * 64, progress=False)
    assert dest.read_bytes() == PAYLOAD  # a user's file is never deleted


def test_no_sha_warns_with_digest(source, tmp_path):
    with pytest.warns(UserWarning, match=_sha(PAYLOAD)):
        dl.download(source.as_uri(), tmp_path / "a.bin", sha256=None, progress=False)


def test_sha_is_case_insensitive(source, tmp_path):
    dest = tmp_path / "a.bin"
    dl.download(source.as_uri(), dest, sha256=_sha(PAYLOAD).upper(), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_missing_file_url_and_bad_scheme(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        dl.download((tmp_path / "nowhere").as_uri(), tmp_path / "a", sha256=None, progress=False)
    with pytest.raises(ValueError, match="scheme"):
        dl.download("ftp://example.org/x", tmp_path / "a", sha256=None, progress=False)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD; honours ``Range: bytes=N-`` unless the server says not to."""

    def do_GET(self) -> None:
        start = 0
        range_header = self.headers.get("Range")
        self.server.ranges.append(range_header)
        if range_header and self.server.honour_range:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_error(416)  # Range Not Satisfiable: nothing left to send
                return
            self.send_response(206)
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[True, False], ids=["range", "no-range"])
def http_server(request):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.honour_range = request.param
    server.ranges = []
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_http_range_resume(http_server, tmp_path):
    dest = tmp_path / "a.bin"
    dl.part_path(dest).write_bytes(PAYLOAD[:5000])
    url = f"http://127.0.0.1:{http_server.server_address[1]}/a.bin"
    dl.download(url, dest, sha256=_sha(PAYLOAD), progress=False)
    # Resumed with a Range request; a server ignoring it (200) makes download start again.
    assert http_server.ranges == ["bytes=5000-"]
    assert dest.read_bytes() == PAYLOAD


def test_http_complete_part_is_verified(http_server, tmp_path):
    dest = tmp_path / "a.bin"
    dl.part_path(dest).write_bytes(PAYLOAD)  # interrupted after the last byte, before the rename
    url = f"http://127.0.0.1:{http_server.server_address[1]}/a.bin"
    dl.download(url, dest, sha256=_sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


# --- extract -------------------------------------------------------------------------------------

FILES = {"top/a.txt": b"alpha", "top/sub/b.bin": b"\x00\x01\x02", "c.txt": b"gamma"}


def _write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("name", "writer"),
    [
        ("x.tar.gz", _write_tar),
        ("x.tgz", _write_tar),
        ("x.tar", lambda p, f: _write_tar(p, f, "w")),
        ("x.zip", _write_zip),
    ],
)
def test_extract_round_trip(tmp_path, name, writer):
    archive = writer(tmp_path / name, FILES)
    dest = tmp_path / "out" / "x"
    assert dl.extract(archive, dest) == dest
    assert _tree(dest) == FILES
    assert sorted(p.name for p in dest.parent.iterdir()) == ["x"]  # no temp dir left


def test_extract_existing_dest_is_kept(tmp_path):
    archive = _write_tar(tmp_path / "x.tgz", FILES)
    dest = tmp_path / "x"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    dl.extract(archive, dest)
    assert _tree(dest) == {"mine.txt": b"keep"}


def _assert_refused(archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "x"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=r"outside|refusing"):
        dl.extract(archive, dest)
    assert not dest.exists()
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == [*before, Path("out")]  # only the (empty) parent was made: no temp dir


@pytest.mark.parametrize("evil", ["../evil.txt", "top/../../evil.txt", "/tmp/evil-abs.txt"])
def test_tar_path_traversal_refused(tmp_path, evil):
    archive = _write_tar(tmp_path / "bad.tgz", {"ok.txt": b"ok", evil: b"pwned"})
    _assert_refused(archive, tmp_path)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "evil.txt").exists()


def test_zip_path_traversal_refused(tmp_path):
    archive = _write_zip(tmp_path / "bad.zip", {"ok.txt": b"ok", "../evil.txt": b"pwned"})
    _assert_refused(archive, tmp_path)


@pytest.mark.parametrize(
    ("link_type", "target"), [(tarfile.SYMTYPE, "../../outside"), (tarfile.LNKTYPE, "../x")]
)
def test_tar_link_out_refused(tmp_path, link_type, target):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("top/link")
        info.type = link_type
        info.linkname = target
        tar.addfile(info)
    _assert_refused(archive, tmp_path)


def test_extract_unknown_type_and_missing(tmp_path):
    (tmp_path / "x.rar").write_bytes(b"rar")
    with pytest.raises(ValueError, match="unknown archive type"):
        dl.extract(tmp_path / "x.rar", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="nothere"):
        dl.extract(tmp_path / "nothere.tgz", tmp_path / "y")


def test_download_then_extract_file_url(tmp_path):
    archive = _write_tar(tmp_path / "src.tgz", FILES)
    sha = _sha(archive.read_bytes())
    got = dl.download(archive.as_uri(), tmp_path / "data" / "x.tgz", sha256=sha, progress=False)
    assert _tree(dl.extract(got, tmp_path / "data" / "x")) == FILES


def test_find_root(tmp_path):
    (tmp_path / "a" / "TrainVal" / "VOCdevkit" / "VOC2011" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    assert dl.find_root(tmp_path, "VOC2011/JPEGImages") == tmp_path / "a" / "TrainVal" / "VOCdevkit"
    with pytest.raises(FileNotFoundError, match="nothing"):
        dl.find_root(tmp_path, "nothing")


# --- prefetch ------------------------------------------------------------------------------------


def test_prefetch_preserves_order():
    assert list(prefetch(iter(range(200)), size=3)) == list(range(200))
    assert list(prefetch([])) == []


def test_prefetch_runs_ahead_but_bounded():
    produced = []

    def source():
        for i in range(100):
            produced.append(i)
            yield i

    with prefetch(source(), size=2) as items:
        assert next(items) == 0
        deadline = time.monotonic() + 5
        while len(produced) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # give a runaway producer the chance to overshoot
        # 1 consumed + 2 queued + 1 held by the producer waiting for room.
        assert len(produced) == 4


def test_prefetch_propagates_exception_in_place():
    def source():
        yield 1
        yield 2
        raise KeyError("boom")

    items = prefetch(source())
    assert next(items) == 1
    assert next(items) == 2
    with pytest.raises(KeyError, match="boom"):
        next(items)
    with pytest.raises(StopIteration):
        next(items)


def test_prefetch_early_close_does_not_hang():
    state = {"closed": False}

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            state["closed"] = True

    items = prefetch(endless(), size=2)
    assert [next(items), next(items)] == [0, 1]
    start = time.monotonic()
    items.close()
    assert time.monotonic() - start < 2
    assert not items.running
    assert state["closed"]  # the source generator's cleanup ran
    with pytest.raises(StopIteration):
        next(items)
    items.close()  # idempotent


def test_prefetch_with_block_closes():
    with prefetch(iter(range(10**9)), size=1) as items:
        assert next(items) == 0
    assert not items.running


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_prefetch_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        prefetch([], size=size)


def test_part_path():
    assert dl.part_path(Path("d") / "x.tar") == Path("d") / "x.tar.part"
    assert os.fspath(dl.part_path("x")) == "x.part"
