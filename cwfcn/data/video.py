"""Video files in and out: streaming decode to RGB frames, encode, and class-colour overlays.

Decoding goes through PyAV (FFmpeg), so any container/codec FFmpeg reads works (mp4, avi, mkv,
mov, webm, mpeg-ts; H.264, MPEG-4, MS-MPEG-4, VP8/9, ...). Frames are streamed one at a time, so a
long video never has to fit in memory.

Every frame comes out as uint8 RGB `[H, W, 3]`: grayscale sources are replicated to three channels
and alpha channels (RGBA, BGRA, ...) are dropped, not composited, by FFmpeg's converter.

Encoding uses H.264 (libx264, yuv420p) for mp4/mkv/mov and MPEG-4 part 2 for avi (the codec AVI
players expect); MPEG-4 is also the fallback when this PyAV build has no libx264. yuv420p needs an
even width and height, so odd-sized frames are padded by one row/column repeating the edge pixels
(the written video is then up to 1 px taller/wider; the original pixels sit at the top left).

`VideoWriter` and `OverlayWriter` encode one frame at a time; with `streaming=True` (live runs)
the file stays playable if the writer is never closed (a fragmented .mp4, or .mkv/.ts). Live
sources (URLs, cameras, stdin) are opened and read in a thread by `cwfcn.data.stream`, which
decodes through `decode_stream` here. Overlays name the classes in their legend and say what
the corner marker marks ("S3 fired").
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cwfcn.data import datasets, protocol, voc

# A header's frame count may exceed what decodes by a few frames (edit lists, dropped frames);
# truncation loses far more, so only a larger shortfall is reported as a broken file.
_FRAME_COUNT_SLACK = 0.01

_SUFFIX_HINT = "pass a video file (.mp4, .avi, .mkv, .mov, .webm, ...)"


class VideoError(ValueError):
    """A video file cannot be read; the message names the file, the problem and a fix."""


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: class i's colour interleaves the bits of i into R, G and B.

    Bit 3k of i goes to bit 7-k of R, bit 3k+1 to G and bit 3k+2 to B, so class 1 is (128, 0, 0),
    class 7 (car) is (128, 128, 128) and 255 (void) is (224, 224, 192).

    Args:
      n: number of colours, 1..256.

    Returns:
      uint8 `[n, 3]` RGB colours.
    """
    if not 1 <= n <= 256:
        raise ValueError(f"voc_palette needs 1 <= n <= 256, got {n}")
    ids = np.arange(n)
    palette = np.zeros((n, 3), np.int64)
    for k in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * k + channel)) & 1) << (7 - k)
    return palette.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Reading


def open_video(path: str | Path) -> Any:
    """Open `path` with PyAV and check it has a video stream; the caller closes the container.

    Raises:
      VideoError: the file is missing, empty, not a media file, unreadable or has no video.
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():  # a link to nothing, or to itself through others
            raise VideoError(f"{path}: a symbolic link that leads to no file ({path} -> "
                             f"{os.readlink(path)}: missing, or a loop of links); point it at "
                             "a video file")
        raise VideoError(f"{path}: no such file; check the path (cwd is {Path.cwd()})")
    if not path.is_file():
        raise VideoError(f"{path}: not a regular file; {_SUFFIX_HINT}")
    if path.stat().st_size == 0:
        raise VideoError(
            f"{path}: the file is empty (0 bytes), e.g. an interrupted download or write; "
            "re-download or re-encode it"
        )
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(
            f"{path}: cannot open as a video ({e}). Either it is not a video, or it is corrupt or "
            f"truncated (e.g. an interrupted download or write); {_SUFFIX_HINT}, or re-download "
            "or re-encode it"
        ) from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise VideoError(
            f"{path}: has no video stream (found: {', '.join(kinds)}); {_SUFFIX_HINT}"
        )
    return container


def probe(path: str | Path) -> dict[str, Any]:
    """What the container says about its first video stream, without decoding it.

    Args:
      path: a video file.

    Returns:
      dict with `num_frames` (int, or None when the container does not store it, e.g. mkv or
      mpeg-ts), `fps` (float or None), `width` and `height` (int, pixels, as decoded before any
      padding), `codec` (FFmpeg decoder name, e.g. "h264") and `duration_s` (float or None).

    Raises:
      VideoError: the file is missing, empty, not a video, or unreadable.
    """
    with open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return {
            "num_frames": int(stream.frames) or None,
            "fps": float(rate) if rate else None,
            "width": int(stream.codec_context.width),
            "height": int(stream.codec_context.height),
            "codec": stream.codec_context.name,
            "duration_s": container.duration / av.time_base if container.duration else None,
        }


def _check_range(start: Any, max_frames: Any) -> None:
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
        raise ValueError(f"start must be an int >= 0, got {start!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool)
        or not isinstance(max_frames, int | np.integer)
        or max_frames < 1
    ):
        raise ValueError(f"max_frames must be None or an int >= 1, got {max_frames!r}")


def _decode(path: Path, start: int, max_frames: int | None) -> Iterator[np.ndarray]:
    """Generator behind `read_frames`; the container closes when the generator is closed."""
    with open_video(path) as container:
        yield from decode_stream(container, str(path), start=start, max_frames=max_frames)


def decode_stream(
    container: Any,
    name: str,
    *,
    start: int = 0,
    max_frames: int | None = None,
    broken: str = "the file is corrupt or truncated. Re-download or re-encode it",
) -> Iterator[np.ndarray]:
    """Decode the first video stream of an open PyAV container (a file or a live source).

    The caller owns (and closes) the container. The checks are `read_frames`': one frame size,
    at least one frame, no fewer frames than the header promises (when it promises any).

    Args:
      container: from `av.open`, with a video stream.
      name: the source, for error messages.
      start: frames before it are decoded and dropped.
      max_frames: stop after yielding this many (None: to the end of the stream).
      broken: what a decoding error means and its fix, for the message (a live source's
        differs from a file's).

    Yields:
      uint8 RGB `[H, W, 3]` frames.

    Raises:
      VideoError: as `read_frames`.
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame/slice threads: same frames, faster
    promised = int(stream.frames)
    size = None
    decoded = yielded = 0
    try:
        for frame in container.decode(stream):
            if size is None:
                size = (frame.height, frame.width)
            elif (frame.height, frame.width) != size:
                raise VideoError(
                    f"{name}: frame {decoded} is {frame.height}x{frame.width} but earlier "
                    f"frames are {size[0]}x{size[1]}; a video whose frame size changes "
                    "mid-stream is refused. Split it at the change or re-encode it at one "
                    "size (e.g. ffmpeg -i IN -vf scale=W:H OUT)"
                )
            decoded += 1
            if decoded <= start:
                continue  # decoding every frame before `start` keeps the index exact
            yield frame.to_ndarray(format="rgb24")
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                return
    except av.FFmpegError as e:
        raise VideoError(f"{name}: decoding failed after {decoded} frames ({e}); {broken}") from e
    if decoded == 0:
        raise VideoError(
            f"{name}: the video stream holds zero frames; pass a video with at least one frame"
        )
    if decoded <= start:
        raise VideoError(f"{name}: start={start} but the video has only {decoded} frames")
    if promised and decoded < promised - max(2, math.ceil(_FRAME_COUNT_SLACK * promised)):
        raise VideoError(
            f"{name}: the header promises {promised} frames but only {decoded} decode; the file "
            "is truncated or corrupt (e.g. an interrupted download or write). Re-download or "
            "re-encode it"
        )


def read_frames(
    path: str | Path, *, start: int = 0, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """Stream decoded frames one at a time.

    The file is opened and checked now (missing, empty, not a video), so those errors are raised
    here; problems found while decoding (corrupt data, size changes, truncation, zero frames) are
    raised by the iterator when it reaches them. Frames before `start` are decoded and dropped so
    indices are exact (cost grows with `start`).

    Args:
      path: any video file FFmpeg reads.
      start: index of the first frame to yield, >= 0.
      max_frames: stop after this many frames (None: to the end).

    Returns:
      Iterator of uint8 RGB `[H, W, 3]` frames (grayscale replicated, alpha dropped).

    Raises:
      VideoError: (a ValueError) for unreadable files, as above.
      ValueError: for a bad `start` or `max_frames`.
    """
    _check_range(start, max_frames)
    open_video(path).close()  # fail here, not at the first next(), for a file that cannot open
    return _decode(Path(path), int(start), None if max_frames is None else int(max_frames))


def read_video(path: str | Path, max_frames: int | None = None, *, start: int = 0) -> np.ndarray:
    """Decode a whole video (or `max_frames` of it from `start`) into memory.

    Args:
      path: any video file FFmpeg reads.
      max_frames: at most this many frames (None: all).
      start: index of the first frame, >= 0.

    Returns:
      uint8 RGB `[T, H, W, 3]`.

    Raises:
      VideoError, ValueError: as `read_frames`.
    """
    return np.stack(list(read_frames(path, start=start, max_frames=max_frames)))


def unlabelled(path: str, max_frames: int | None = None) -> protocol.StreamClip:
    """One video file as an unlabelled clip, decoded as it is run (its first `max_frames`
    frames): every frame scored and counted, memory bounded by a chunk whatever its length.

    Raises:
      VideoError, ValueError: as `read_frames` (opening now, decoding when it is read).
    """
    _check_range(0, max_frames)
    length = probe(path)["num_frames"]
    if length is not None and max_frames is not None:
        length = min(length, max_frames)
    return protocol.StreamClip(functools.partial(_decode, Path(path), 0, max_frames), length,
                               str(path))


def _form_file(videos: Sequence[protocol.StreamClip], schedule, phase: str
               ) -> protocol.ClipsOf:
    """FORM of `video:PATH`: the file one clip from its first frame, whatever the schedule
    and phase (as `protocol.form_whole`), named by its position."""
    del videos, schedule, phase
    return lambda i, clip: (dataclasses.replace(clip, key=str(i)),)


def _read(request: datasets.Request) -> Sequence[protocol.StreamClip]:
    """READ of `video:PATH`: the one file, decoded when its video is read."""
    if not request.arg.strip():
        raise ValueError("--data video: names no video: give video:PATH (a file), or a live "
                         "source video:URL, video:/dev/video0, video:- (stdin)")
    # A missing, empty or non-video file fails now, before any work.
    return (unlabelled(request.arg, request.max_frames),)


# Any video file, unlabelled; its classes and mean are the config's net's (with no config:
# a VOC net's).
DATASET = datasets.DataSet(
    name="video",
    classes=voc.VOC_CLASSES,
    mean_bgr=voc.DATASET.mean_bgr,
    frame_size="the file's own frames, decoded as they are",
    videos={"video": datasets.Videos(
        _read, _form_file, "unlabelled: the whole video, every frame counted",
        "video:PATH (any video file, unlabelled; or a live source, video:URL, "
        "video:/dev/video0, video:- for stdin, run frame by frame: see --live)",
        needs_dir=False, config_classes=True)},
)


# ---------------------------------------------------------------------------------------------
# Writing


def default_codec(path: str | Path) -> str:
    """The encoder `write_video` uses for `path`: MPEG-4 for .avi, else H.264 when available.

    AVI has no B-frame timestamps and its players expect MPEG-4 part 2; H.264 is smaller and
    sharper elsewhere, but PyAV builds without libx264 fall back to MPEG-4.
    """
    if Path(path).suffix.lower() == ".avi" or "libx264" not in av.codecs_available:
        return "mpeg4"
    return "libx264"


def _check_rgb_frame(frame: Any, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(
            f"frame {index} must be uint8 RGB [H, W, 3], got {frame.dtype} {frame.shape}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    return frame


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """Repeat the last row/column so height and width are even (what yuv420p needs).

    Args:
      frame: `[H, W, ...]` array.

    Returns:
      `[H + H % 2, W + W % 2, ...]`, the input at the top left (the input itself if already even).
    """
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if not pad_h and not pad_w:
        return frame
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (frame.ndim - 2)
    return np.pad(frame, widths, mode="edge")


# Streamable output: an .mp4/.mov is fragmented (a moov up front, then self-contained fragments,
# each starting at a keyframe), so a file whose writer was killed plays up to its last fragment.
_FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


def _add_stream(container: Any, codec: str, fps: float, height: int, width: int,
                keyframe_every: int | None = None) -> Any:
    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": "18"}  # visually near-lossless; the default 23 blurs overlays
    else:
        # MPEG-4's default 200 kb/s is far too low for segmentation overlays: ~0.3 bit per pixel.
        stream.bit_rate = max(1_000_000, int(0.3 * width * height * float(rate)))
    if keyframe_every is not None:
        stream.codec_context.gop_size = keyframe_every
        if codec == "libx264":  # no lookahead: each frame leaves the encoder as it comes
            stream.options = {**stream.options, "tune": "zerolatency"}
    return stream


def _check_fps(fps: Any) -> None:
    if not (isinstance(fps, int | float | Fraction | np.number) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")


class VideoWriter:
    """Encode frames one at a time as they come (a context manager).

    The file is created at the first frame (its size fixes the video's); odd sizes are padded
    to even with `pad_to_even` (see the module docstring).

    With `streaming=True` (for live runs) the file stays playable if the run stops at any
    point: a keyframe every `keyframe_every` frames (default: one per second), H.264 without
    lookahead, every packet written through at once, and .mp4/.mov fragmented, so a killed
    process leaves every frame up to its last keyframe; .mkv and .ts are streamable as they
    are, .avi is not (its index is written at the end). An exception inside the `with` block
    then still closes the file properly (Ctrl-C leaves a complete video). Without
    `streaming`, an exception removes the partial file (`write_video`).

    Example:
      with VideoWriter("out.mp4", fps=25, streaming=True) as writer:
        for frame in frames:
          writer.write(frame)
    """

    def __init__(self, path: str | Path, *, fps: float = 25.0, codec: str | None = None,
                 streaming: bool = False, keyframe_every: int | None = None):
        """See the class docstring; `codec`: FFmpeg encoder name, None for
        `default_codec(path)`."""
        _check_fps(fps)
        self.path, self.fps, self.streaming = Path(path), fps, streaming
        self.codec = default_codec(self.path) if codec is None else codec
        self.keyframe_every = (keyframe_every or max(1, round(float(fps)))) if streaming else None
        self.count = 0
        self._container = self._stream = self._size = None

    def _open(self, size: tuple[int, int]) -> None:
        fragmented = self.streaming and self.path.suffix.lower() in (".mp4", ".mov", ".m4v")
        options = {**(_FRAGMENTED if fragmented else {}),
                   **({"flush_packets": "1"} if self.streaming else {})}
        self._container = av.open(str(self.path), "w", options=options)
        self._size = size
        self._stream = _add_stream(self._container, self.codec, self.fps,
                                   size[0] + size[0] % 2, size[1] + size[1] % 2,
                                   self.keyframe_every)

    def write(self, frame: Any) -> None:
        """Encode one uint8 RGB `[H, W, 3]` frame (all frames one size)."""
        frame = _check_rgb_frame(frame, self.count)
        if self._container is None:
            self._open(frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(
                f"frame {self.count} is {frame.shape[0]}x{frame.shape[1]} but frame 0 is "
                f"{self._size[0]}x{self._size[1]}; a video has one frame size, resize the frames"
            )
        image = av.VideoFrame.from_ndarray(np.ascontiguousarray(pad_to_even(frame)),
                                           format="rgb24")
        self._container.mux(self._stream.encode(image))
        self.count += 1

    def close(self) -> None:
        """Flush the encoder's delayed frames and finish the file (idempotent)."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.mux(self._stream.encode(None))
            finally:
                container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            try:
                self.close()
            except BaseException:
                if not self.streaming:
                    self.path.unlink(missing_ok=True)  # no partial file
                raise
        elif self.streaming:
            with contextlib.suppress(Exception):  # the error that stopped the run is the one to see
                self.close()
        else:
            self._discard()

    def _discard(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        self.path.unlink(missing_ok=True)


def write_video(
    path: str | Path, frames: Iterable[Any], *, fps: float = 25.0, codec: str | None = None
) -> int:
    """Encode frames to a video file, streaming (frames may be a generator).

    Odd sizes are padded to even with `pad_to_even` (see the module docstring). On any error the
    partly written file is removed.

    Args:
      path: output file; the suffix picks the container (.mp4, .avi, .mkv, .mov, ...).
      frames: iterable of uint8 RGB `[H, W, 3]`, all the same size (e.g. a `[T, H, W, 3]` array).
      fps: frames per second, > 0.
      codec: FFmpeg encoder name; None for `default_codec(path)`.

    Returns:
      The number of frames written.

    Raises:
      ValueError: no frames, a bad frame, frames of different sizes, or a bad fps.
    """
    with VideoWriter(path, fps=fps, codec=codec) as writer:
        for frame in frames:
            writer.write(frame)
        if not writer.count:
            raise ValueError(f"no frames to write to {path}; pass at least one frame")
    return writer.count


# ---------------------------------------------------------------------------------------------
# Overlays


def _corner_size(height: int, width: int, fraction: int) -> int:
    return max(4, min(height, width) // fraction)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    """Pillow's bundled font at `size` px (its fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


def _text_size(height: int, width: int) -> int:
    """Label text height for a frame: about 1/24 of its short side, at least 8 px."""
    return max(8, min(height, width) // 24)


def _draw_text(image: np.ndarray, boxes: Sequence[tuple[int, int, str]], size: int) -> np.ndarray:
    """Each `(left, top, text)` in white on a black box, clipped to the image."""
    canvas = Image.fromarray(image)
    draw, font = ImageDraw.Draw(canvas), _font(size)
    for left, top, text in boxes:
        _, _, x1, y1 = draw.textbbox((left, top), text, font=font)
        draw.rectangle((left - 1, top - 1, x1 + 1, max(y1, top + size) + 1), fill=(0, 0, 0))
        draw.text((left, top), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas).copy()


def _text_width(text: str, size: int) -> int:
    return math.ceil(_font(size).getlength(text))


def draw_marker(image: np.ndarray, text: str | None = None) -> np.ndarray:
    """A white square with a black rim in the top-right corner (marks frames where a stage fired).

    Args:
      image: uint8 `[H, W, 3]`.
      text: a label left of the square saying what it marks (e.g. "S3 fired"), white on black;
        None for the square alone.

    Returns:
      A copy with the marker: side `max(4, min(H, W) // 10)` px, 2 px from the top and right.
    """
    out = image.copy()
    h, w = out.shape[:2]
    side = _corner_size(h, w, 10)
    top, right = 2, w - 2
    out[top:top + side, right - side:right] = 0
    out[top + 1:top + side - 1, right - side + 1:right - 1] = 255
    if text:
        size = _text_size(h, w)
        left = right - side - 3 - _text_width(text, size)
        out = _draw_text(out, [(max(1, left), top + max(0, (side - size) // 2), text)], size)
    return out


def draw_legend(
    image: np.ndarray,
    classes: Iterable[int],
    palette: np.ndarray,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """A legend along the bottom left: a class-coloured square (white rim) per class.

    Without names the squares form one row (those that do not fit in the width are dropped).
    With names each square is followed by its class's name (white on black), one class per
    line, stacked upwards from the bottom (lines that do not fit in the height are dropped).

    Args:
      image: uint8 `[H, W, 3]`.
      classes: class indices to show, in order.
      palette: uint8 `[C, 3]` colours.
      names: the classes' names, index order (`DataSet.classes`); None for squares only.
        An index without a name is labelled with its number.

    Returns:
      A copy with the legend. Squares without names: side `max(4, min(H, W) // 20)` px, 2 px
      apart; with names: the text's height (`max(8, min(H, W) // 24)` px).
    """
    out = image.copy()
    h, w = out.shape[:2]
    gap = 2
    side = _corner_size(h, w, 20) if names is None else _text_size(h, w)
    labels = []
    for k, cls in enumerate(classes):
        if names is None:
            top, left = h - gap - side, gap + k * (side + gap)
        else:
            top, left = h - (k + 1) * (side + gap), gap
        if left + side > w or top < 0:
            break
        out[top:top + side, left:left + side] = 255
        out[top + 1:top + side - 1, left + 1:left + side - 1] = palette[cls]
        if names is not None:
            labels.append((left + side + 3, top, names[cls] if cls < len(names) else str(cls)))
    return _draw_text(out, labels, side) if labels else out


def overlay_frame(
    frame: np.ndarray,
    label: np.ndarray,
    palette: np.ndarray,
    *,
    alpha: float = 0.5,
    fired: bool = False,
    legend: bool = True,
    class_names: Sequence[str] | None = None,
    marker_text: str | None = None,
) -> np.ndarray:
    """Blend class colours over one frame, then draw the legend and the fired marker.

    Args:
      frame: uint8 RGB `[H, W, 3]`.
      label: integer `[H, W]` class indices; values >= `len(palette)` (e.g. 255 void) keep the
        frame's pixel.
      palette: uint8 `[C, 3]` class colours.
      alpha: colour weight in [0, 1]: `out = (1 - alpha) * frame + alpha * palette[label]`.
      fired: draw the `draw_marker` square.
      legend: draw `draw_legend` for the classes present in `label`.
      class_names: the legend's names (None: colour squares only).
      marker_text: what the marker says (e.g. "S3 fired"; None: the square alone).

    Returns:
      uint8 RGB `[H, W, 3]`.
    """
    label = np.asarray(label)
    if label.shape != frame.shape[:2] or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(
            f"label must be an integer [H, W] = {frame.shape[:2]} map, got {label.dtype} "
            f"{label.shape}; pass one class map per frame"
        )
    num_classes = len(palette)
    valid = (label >= 0) & (label < num_classes)
    colours = palette[np.where(valid, label, 0)].astype(np.float32)
    blended = (1 - alpha) * frame.astype(np.float32) + alpha * colours
    out = np.where(valid[..., None], np.rint(blended), frame).astype(np.uint8)
    if legend:
        out = draw_legend(out, np.unique(label[valid]).tolist(), palette, class_names)
    if fired:
        out = draw_marker(out, marker_text)
    return out


def marker_label(num_stages: int) -> str:
    """What the fired marker says: the last stage of `num_stages` fired, e.g. "S3 fired"."""
    return f"S{num_stages} fired"


def overlay_palette(num_classes: int, palette: Any = None) -> np.ndarray:
    """The checked uint8 `[C, 3]` colours of an overlay: `palette[:C]`, or `voc_palette(C)`."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    palette = voc_palette(min(num_classes, 256)) if palette is None else np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) < num_classes:
        raise ValueError(f"palette must be [>= {num_classes}, 3] RGB, got {palette.shape}")
    return np.clip(palette[:num_classes], 0, 255).astype(np.uint8)


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


class OverlayWriter(VideoWriter):
    """`write_overlay` one frame at a time, for live runs: each frame is blended and encoded
    as it comes, and the file stays playable if the run stops (`VideoWriter` with
    `streaming=True` by default).

    Example:
      with OverlayWriter("live.mp4", num_classes=21, class_names=names, num_stages=3) as out:
        for frame, label, fired in results:
          out.write(frame, label, fired=fired)
    """

    def __init__(self, path: str | Path, *, num_classes: int, alpha: float = 0.5,
                 palette: Any = None, legend: bool = True,
                 class_names: Sequence[str] | None = None, num_stages: int | None = None,
                 fps: float = 25.0, codec: str | None = None, streaming: bool = True):
        """Args as `write_overlay`'s; `num_stages`: the marker says f"S{num_stages} fired"
        (None: the square alone); `streaming`: as `VideoWriter`."""
        _check_alpha(alpha)
        self.palette = overlay_palette(num_classes, palette)
        super().__init__(path, fps=fps, codec=codec, streaming=streaming)
        self.alpha, self.legend, self.class_names = alpha, legend, class_names
        self.marker_text = None if num_stages is None else marker_label(num_stages)

    def write(self, frame: Any, label: Any = None, *, fired: bool = False) -> None:
        """Blend `label` (integer `[H, W]`) over `frame` (uint8 RGB `[H, W, 3]`), mark it if
        the last stage `fired`, and encode it."""
        if label is None:
            raise ValueError("OverlayWriter.write needs the frame's class map: write(frame, "
                             "label, fired=...)")
        super().write(overlay_frame(
            _check_rgb_frame(frame, self.count), label, self.palette, alpha=self.alpha,
            fired=fired, legend=self.legend, class_names=self.class_names,
            marker_text=self.marker_text))


def _overlays(
    frames: Iterable[Any],
    labels: Iterable[Any],
    palette: np.ndarray,
    alpha: float,
    fired: np.ndarray | None,
    legend: bool,
    class_names: Sequence[str] | None,
    marker_text: str | None,
) -> Iterator[np.ndarray]:
    count = 0
    frame_iter, label_iter = iter(frames), iter(labels)
    for frame in frame_iter:
        label = next(label_iter, None)
        if label is None:
            raise ValueError(f"labels ran out after {count} frames; pass one label map per frame")
        if fired is not None and count >= len(fired):
            raise ValueError(f"fired has {len(fired)} entries for more frames; pass one per frame")
        is_fired = bool(fired[count]) if fired is not None else False
        yield overlay_frame(_check_rgb_frame(frame, count), label, palette, alpha=alpha,
                            fired=is_fired, legend=legend, class_names=class_names,
                            marker_text=marker_text)
        count += 1
    if next(label_iter, None) is not None:
        raise ValueError(f"more label maps than the {count} frames; pass one per frame")
    if fired is not None and len(fired) != count:
        raise ValueError(f"fired has {len(fired)} entries for {count} frames; pass one per frame")


def write_overlay(
    path: str | Path,
    frames: Iterable[Any],
    labels: Iterable[Any],
    *,
    num_classes: int,
    alpha: float = 0.5,
    palette: Any = None,
    fired: Any = None,
    legend: bool = True,
    class_names: Sequence[str] | None = None,
    fps: float = 25.0,
    codec: str | None = None,
) -> int:
    """Encode frames with their class maps colour-blended on top (see `overlay_frame`).

    Streams: frames and labels may be generators (`OverlayWriter` takes one frame at a time).

    Args:
      path: output video (suffix picks the container, as `write_video`).
      frames: iterable of uint8 RGB `[H, W, 3]`.
      labels: iterable of integer `[H, W]` class maps, one per frame; values outside
        [0, num_classes) (VOC's 255 void) are left unpainted.
      num_classes: C, classes painted.
      alpha: colour weight in [0, 1].
      palette: uint8-compatible `[>= C, 3]` colours; None for `voc_palette(C)`.
      fired: optional bool `[T, N]` (each stage's firing; the marker says "SN fired") or
        `[T]` (the deepest stage's; a marker without text): frames where the deepest stage
        fired get a white corner square.
      legend: draw a square per class present in each frame (bottom left).
      class_names: the classes' names, index order, written next to the legend's squares
        (None: squares only).
      fps: frames per second.
      codec: encoder, None for `default_codec(path)`.

    Returns:
      The number of frames written.

    Raises:
      ValueError: mismatched lengths or shapes, bad arguments; the partial file is removed.
    """
    _check_alpha(alpha)
    palette = overlay_palette(num_classes, palette)
    marker_text = None
    if fired is not None:
        fired = np.asarray(fired, bool)
        if fired.ndim == 2:
            marker_text, fired = marker_label(fired.shape[1]), fired[:, -1]
        fired = fired.reshape(-1)
    return write_video(path, _overlays(frames, labels, palette, alpha, fired, legend,
                                       class_names, marker_text), fps=fps, codec=codec)
