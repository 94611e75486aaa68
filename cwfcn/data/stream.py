"""Live video sources: anything PyAV (FFmpeg) opens, decoded in a thread.

A source is a URL with a scheme (rtsp://, http(s)://, tcp://, udp://, rtmp://, srt://, ...),
a V4L2 camera (/dev/video0), "-" for a stream piped into stdin (e.g.
`ffmpeg -i cam.mp4 -f mpegts - | python evaluate.py --data video:-`), or a video file.

`FrameReader` decodes in a background thread so that decoding overlaps the net. In live mode
it keeps only the newest decoded frame: when the consumer is slower than the source, the
frames it could not take are dropped (and counted), so it always works on the latest frame
instead of falling further and further behind. In file mode every frame is passed on, in
order (the decoder waits for the consumer), so a run over a file is reproducible.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from cwfcn.data.video import VideoError, decode_stream, open_video

__all__ = ["DEFAULT_TIMEOUT_S", "FrameReader", "is_live", "open_source"]

DEFAULT_TIMEOUT_S = 10.0  # opening a network source, and each read from it

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_STDIN = ("-", "pipe:", "pipe:0")
_LIVE_FIX = ("check that the source is up and the address is right (scheme, host, port, path), "
             "e.g. rtsp://HOST:8554/stream, http://HOST/live.ts, /dev/video0, or - for a stream "
             "piped into stdin")


def is_live(source: str | Path | BinaryIO) -> bool:
    """Whether `source` is a live stream (consumed once, read as it comes) and not a file: a
    URL with a scheme other than file://, a /dev/video* device, "-" (stdin) or a file object."""
    if not isinstance(source, str | Path):
        return True
    text = str(source)
    if text in _STDIN:
        return True
    if text.startswith("/dev/video"):
        return True
    return bool(_URL.match(text)) and not text.lower().startswith("file://")


def open_source(source: str | Path | BinaryIO, *, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """Open a video source with PyAV and check it has a video stream; the caller closes it.

    Args:
      source: a URL, a /dev/video* device (format v4l2), "-" (stdin), a binary file object,
        or a video file (`video.read_frames`' checks).
      timeout: seconds to wait for a network source to open, and for each read from it.

    Returns:
      The open PyAV input container.

    Raises:
      VideoError: the source cannot be opened, or has no video stream; the message names the
        source and the fix.
    """
    if not is_live(source):
        return open_video(source)
    name = describe(source)
    if isinstance(source, str) and source in _STDIN:
        if sys.stdin is None or sys.stdin.isatty():
            raise VideoError("-: stdin is a terminal, not a stream; pipe one in, e.g. "
                             "ffmpeg -i IN -f mpegts - | python evaluate.py --data video:-")
        target, kwargs = "pipe:0", {}
    elif isinstance(source, str) and source.startswith("/dev/video"):
        target, kwargs = source, {"format": "v4l2"}
    elif isinstance(source, str):
        target, kwargs = source, {"timeout": (timeout, timeout)}
    else:
        target, kwargs = source, {}
    try:
        container = av.open(target, **kwargs)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{name}: cannot open the video source ({e}); {_LIVE_FIX}") from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise VideoError(f"{name}: has no video stream (found: {', '.join(kinds)}); {_LIVE_FIX}")
    return container


def describe(source: str | Path | BinaryIO) -> str:
    """The source's name for messages and results."""
    if isinstance(source, str | Path):
        return str(source)
    return getattr(source, "name", None) or type(source).__name__


class FrameReader:
    """Decodes a video source in a background thread; iterate it for uint8 RGB `[H, W, 3]`
    frames.

    Live mode (the default for live sources, `is_live`) keeps only the newest frame: a frame
    decoded before the consumer took the previous one replaces it, and `dropped` counts the
    replaced ones, so `taken + dropped == decoded` at every moment. File mode passes every
    frame, in order. Iteration ends at the end of the stream; an error in the thread (a
    broken stream, a read that timed out) is raised in the consumer as `VideoError`, after the
    frames decoded before it.

    The source is opened in the constructor (so a bad one fails there) and decoding starts at
    the first `next()` (or `start()`). `close()` (or leaving the `with` block) stops the
    thread and closes the source; a thread blocked on a silent network source notices within
    `timeout` seconds (it is a daemon thread, so it never keeps the process alive).

    Example:
      with FrameReader("rtsp://camera/stream") as reader:
        for frame in reader:
          ...
      print(reader.dropped)
    """

    def __init__(self, source: str | Path | BinaryIO, *, live: bool | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S):
        """See the class docstring; `live`: None for `is_live(source)`; `timeout`: as
        `open_source`'s."""
        self.name = describe(source)
        self.live = is_live(source) if live is None else live
        self.timeout = timeout
        self._container = open_source(source, timeout=timeout)
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps: float | None = float(rate) if rate else None
        height, width = stream.codec_context.height, stream.codec_context.width
        # The header's size, when it gives one (a network stream's usually does after probing).
        self.frame_shape: tuple[int, int, int] | None = (
            (int(height), int(width), 3) if height and width else None)
        self.decoded = self.taken = self.dropped = 0
        self._slot: np.ndarray | None = None
        self._done = self._stopping = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> FrameReader:
        """Starts decoding (the first `next()` does, if not called)."""
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._decode, name=f"FrameReader({self.name})",
                                            daemon=True)
            self._thread.start()
        return self

    def _decode(self) -> None:
        live = {"broken": "the stream broke off or stalled for longer than the read timeout; "
                + _LIVE_FIX} if self.live else {}
        frames = decode_stream(self._container, self.name, **live)
        try:
            for frame in frames:
                with self._cond:
                    while not self.live and self._slot is not None and not self._stopping:
                        self._cond.wait()  # file mode: wait for the consumer
                    if self._stopping:
                        break
                    if self._slot is not None:
                        self.dropped += 1  # live: the consumer did not take it in time
                    self._slot = frame
                    self.decoded += 1
                    self._cond.notify_all()
        except BaseException as e:  # handed to the consumer, raised there
            self._error = e
        finally:
            frames.close()
            self._container.close()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def __iter__(self) -> FrameReader:
        return self

    def __next__(self) -> np.ndarray:
        self.start()
        with self._cond:
            while self._slot is None and not self._done:
                self._cond.wait()
            if self._slot is not None:
                frame, self._slot = self._slot, None
                self.taken += 1
                self._cond.notify_all()
                return frame
            error = self._error
        if error is None or self._stopping:
            raise StopIteration
        if isinstance(error, VideoError):
            raise VideoError(str(error)) from error
        raise VideoError(f"{self.name}: reading the source failed ({error!r}); {_LIVE_FIX}"
                         ) from error

    def close(self) -> None:
        """Stops the thread and closes the source (idempotent)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is None:  # never started: nothing decodes, nothing is left to take
            self._done = True
            with contextlib.suppress(Exception):
                self._container.close()
            return
        self._thread.join(self.timeout + 1.0)

    @property
    def alive(self) -> bool:
        """Whether the decoding thread still runs."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
