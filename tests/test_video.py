"""Tests for video decode/encode and overlays, against hand-made clips and known file facts.

Round trips are lossy, so pixel checks compare means with tolerances; the expected values are
computed by hand from the synthetic scene (square position and colour, blend arithmetic), not
from the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cwfcn.data import samples, video

T, H, W = 10, 48, 64
SIDE, STEP, TOP, LEFT0 = 12, 4, 18, 4
SQUARE_RGB = (220, 40, 40)  # red: a swapped channel order would show
BACKGROUND = 30


def moving_square(num_frames: int = T, height: int = H, width: int = W) -> np.ndarray:
    """A red square moving STEP px right per frame over a dark background: uint8 [T, H, W, 3]."""
    frames = np.full((num_frames, height, width, 3), BACKGROUND, np.uint8)
    for t in range(num_frames):
        left = LEFT0 + STEP * t
        frames[t, TOP:TOP + SIDE, left:left + SIDE] = SQUARE_RGB
    return frames


def square_centre_x(frame: np.ndarray) -> float:
    red = (frame[..., 0] > 128) & (frame[..., 2] < 100)
    return float(np.nonzero(red)[1].mean())


def expected_centre_x(t: int) -> float:
    return LEFT0 + STEP * t + (SIDE - 1) / 2


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """The moving square written once as .mp4 and .avi at 10 fps."""
    directory = tmp_path_factory.mktemp("clips")
    paths = {suffix: directory / f"square.{suffix}" for suffix in ("mp4", "avi")}
    for path in paths.values():
        assert video.write_video(path, moving_square(), fps=10) == T
    return paths


def encode_with(path: Path, codec: str, pix_fmt: str, frames: list[np.ndarray], fmt: str) -> Path:
    """Hand-encode frames given in `fmt` with PyAV directly (fixtures the writer cannot make)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format=fmt)))
        container.mux(stream.encode(None))
    return path


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("suffix", ["mp4", "avi"])
def test_round_trip_keeps_count_size_content_and_motion(clips, suffix):
    frames = video.read_video(clips[suffix])
    assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8
    error = np.abs(frames.astype(int) - moving_square().astype(int))
    assert error.mean() < 4
    for t in range(T):
        assert square_centre_x(frames[t]) == pytest.approx(expected_centre_x(t), abs=1.0)
        patch = frames[t, TOP + 3:TOP + SIDE - 3, LEFT0 + STEP * t + 3:LEFT0 + STEP * t + SIDE - 3]
        assert np.abs(patch.mean((0, 1)) - SQUARE_RGB).max() < 25


@pytest.mark.parametrize(("suffix", "codec"), [("mp4", "h264"), ("avi", "mpeg4")])
def test_probe(clips, suffix, codec):
    info = video.probe(clips[suffix])
    assert info["num_frames"] == T
    assert info["fps"] == pytest.approx(10.0)
    assert (info["height"], info["width"]) == (H, W)
    assert info["codec"] == codec
    assert info["duration_s"] == pytest.approx(1.0, abs=0.2)


def test_streaming_start_and_max_frames(clips):
    frames = video.read_frames(clips["mp4"], start=3, max_frames=4)
    assert isinstance(frames, Iterator)  # frames come one at a time, not as a list
    first = next(frames)
    assert first.shape == (H, W, 3)
    assert square_centre_x(first) == pytest.approx(expected_centre_x(3), abs=1.0)
    rest = list(frames)
    assert len(rest) == 3
    assert [round(square_centre_x(f)) for f in rest] == [
        round(expected_centre_x(t)) for t in (4, 5, 6)]
    assert video.read_video(clips["avi"], max_frames=2).shape == (2, H, W, 3)
    assert video.read_video(clips["avi"], start=T - 1).shape == (1, H, W, 3)


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = moving_square(num_frames=3, height=47, width=65)
    path = tmp_path / "odd.mp4"
    video.write_video(path, frames, fps=5)
    back = video.read_video(path)
    assert back.shape == (3, 48, 66, 3)
    assert np.abs(back[:, :47, :65].astype(int) - frames).mean() < 4
    # the padding repeats the last row and column
    assert np.abs(back[:, 47].astype(int) - frames[:, 46, :65].astype(int).mean()).mean() < 15
    assert back[:, :, 65].mean() == pytest.approx(BACKGROUND, abs=5)


def test_grayscale_and_rgba_sources_come_out_rgb(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    gray_path = encode_with(tmp_path / "gray.mkv", "ffv1", "gray", [gray, gray[::-1]], "gray")
    frames = video.read_video(gray_path)
    assert frames.shape == (2, H, W, 3)
    assert (frames[0] == gray[..., None]).all() and (frames[1] == gray[::-1, :, None]).all()

    rgba = np.dstack([gray, 255 - gray, gray // 2, np.full_like(gray, 7)])
    rgba_path = encode_with(tmp_path / "rgba.mov", "png", "rgba", [rgba], "rgba")
    (frame,) = video.read_video(rgba_path)
    assert (frame == rgba[..., :3]).all()  # alpha dropped, colours untouched


def test_odd_but_valid_videos_are_read_whole(tmp_path):
    """Issue 17 (8): a 1x1 video, variable frame times and a path with spaces and
    non-ASCII letters read as any other."""
    pixel = np.full((1, 1, 3), 200, np.uint8)
    tiny = encode_with(tmp_path / "one pixel.mkv", "ffv1", "bgr0", [pixel] * 3, "rgb24")
    assert (video.read_video(tiny) == pixel).all() and video.read_video(tiny).shape[0] == 3
    frames = moving_square(num_frames=5)
    path = tmp_path / "vfr clip ünï 日本.mkv"
    with av.open(str(path), "w") as container:  # frames at 0, 40, 400, 410 and 2000 ms
        stream = container.add_stream("ffv1", rate=25)
        stream.height, stream.width, stream.pix_fmt = H, W, "bgr0"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for frame, pts in zip(frames, (0, 40, 400, 410, 2000), strict=True):
            out = av.VideoFrame.from_ndarray(frame, format="rgb24")
            out.pts, out.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(out))
        container.mux(stream.encode(None))
    np.testing.assert_array_equal(video.read_video(path), frames)  # each frame once, in order


def test_what_is_not_a_video_file_is_named(tmp_path):
    """Issue 17 (8): audio alone, a directory, a loop of links and a dangling link."""
    audio = tmp_path / "voice.m4a"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        samples_ = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                              layout="mono")
        samples_.sample_rate = 8000
        container.mux(stream.encode(samples_))
        container.mux(stream.encode(None))
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    for name, message in (("voice.m4a", r"has no video stream \(found: audio\)"),
                          ("a", "not a regular file"),
                          ("loop1", "symbolic link that leads to no file .*loop of links"),
                          ("dangling.mp4", r"symbolic link .*gone\.mp4: missing")):
        with pytest.raises(video.VideoError, match=message):
            video.probe(tmp_path / name)


# ---------------------------------------------------------------------------------------------
# Errors


def test_missing_empty_and_text_files(tmp_path):
    with pytest.raises(video.VideoError, match="no such file"):
        video.read_frames(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(video.VideoError, match=r"empty \(0 bytes\)"):
        video.read_frames(empty)
    text = tmp_path / "notes.txt"
    text.write_text("frame rate: 25\nthis is not a video\n")
    with pytest.raises(video.VideoError, match=r"notes\.txt: cannot open as a video"):
        video.probe(text)
    with pytest.raises(ValueError, match="not a video"):  # VideoError is a ValueError
        video.read_video(text)


def test_truncated_mp4_is_refused_on_open(clips, tmp_path):
    data = clips["mp4"].read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(video.VideoError, match="corrupt or truncated"):
        video.read_frames(half)


def test_truncated_avi_is_refused_while_decoding(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (20, H, W, 3), dtype=np.uint8)
    full = tmp_path / "noise.avi"
    video.write_video(full, noise, fps=10)  # noise: every frame costs about the same bytes
    half = tmp_path / "half.avi"
    half.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert video.probe(half)["num_frames"] == 20  # the header still promises 20
    with pytest.raises(video.VideoError, match="promises 20 frames"):
        video.read_video(half)


def test_zero_frames(tmp_path):
    path = tmp_path / "zero.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        container.start_encoding()  # a header and no frames
    with pytest.raises(video.VideoError, match="zero frames"):
        video.read_video(path)


def test_start_past_the_end(clips):
    with pytest.raises(video.VideoError, match=f"only {T} frames"):
        list(video.read_frames(clips["mp4"], start=T))


def test_frame_size_change_mid_stream_is_refused(tmp_path):
    # MPEG-TS parts concatenate into one stream; the second part is a different size.
    first, second = tmp_path / "a.ts", tmp_path / "b.ts"
    video.write_video(first, moving_square(num_frames=4), fps=10)
    video.write_video(second, moving_square(num_frames=4, height=32, width=80), fps=10)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    frames = video.read_frames(joined)
    for _ in range(4):
        assert next(frames).shape == (H, W, 3)
    with pytest.raises(video.VideoError, match="frame 4 is 32x80 but earlier frames are 48x64"):
        next(frames)


@pytest.mark.parametrize(("start", "max_frames"), [(-1, None), (0, 0), (1.5, None)])
def test_bad_range_arguments(clips, start, max_frames):
    with pytest.raises(ValueError, match=r"start|max_frames"):
        video.read_frames(clips["mp4"], start=start, max_frames=max_frames)


def test_write_video_refuses_bad_input_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="no frames"):
        video.write_video(path, [])
    assert not path.exists()
    mixed = [np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 2, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1 is 48x66 but frame 0 is 48x64"):
        video.write_video(path, mixed)
    assert not path.exists()
    with pytest.raises(ValueError, match="uint8 RGB"):
        video.write_video(path, np.zeros((2, H, W), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        video.write_video(path, moving_square(), fps=0)
    assert not path.exists()


# ---------------------------------------------------------------------------------------------
# Palette and overlays


def test_voc_palette_known_colours():
    palette = video.voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
             5: (128, 0, 128), 6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0),
             15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
    for index, colour in known.items():
        assert tuple(palette[index].tolist()) == colour
    assert len({tuple(c) for c in palette.tolist()}) == 256
    assert (video.voc_palette(21) == palette[:21]).all()


def overlay_scene(height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Grey 100 frame; label: background left, person (15) right, a void (255) block."""
    frame = np.full((height, width, 3), 100, np.uint8)
    label = np.zeros((height, width), np.int32)
    label[:, width // 2:] = 15
    label[30:60, 10:40] = 255
    return frame, label


# 0.5 * 100 + 0.5 * colour, by hand: black background, person (192, 128, 128), void untouched.
BLEND_BACKGROUND, BLEND_PERSON, VOID_GREY = (50, 50, 50), (146, 114, 114), (100, 100, 100)


def test_overlay_frame_blends_and_draws_legend_and_marker():
    frame, label = overlay_scene()
    palette = video.voc_palette(21)
    plain = video.overlay_frame(frame, label, palette, alpha=0.5, legend=False)
    assert tuple(plain[10, 20]) == BLEND_BACKGROUND
    assert tuple(plain[10, 100]) == BLEND_PERSON
    assert tuple(plain[45, 25]) == VOID_GREY
    assert tuple(plain[5, 120]) == BLEND_PERSON  # no marker unless fired

    marked = video.overlay_frame(frame, label, palette, alpha=0.5, fired=True)
    side = 96 // 10  # marker: top right, 2 px in, white inside a black rim
    assert (marked[3:2 + side - 1, 128 - 2 - side + 1:128 - 3] == 255).all()
    assert (marked[2, 128 - 2 - side:128 - 2] == 0).all()
    # legend: one square per class present (0 and 15, not void), bottom left, white rim
    square = 96 // 20
    row = 96 - 2 - square + square // 2
    assert tuple(marked[row, 2 + square // 2]) == (0, 0, 0)
    assert tuple(marked[row, 2 + square + 2 + square // 2]) == (192, 128, 128)
    assert tuple(marked[96 - 2 - square, 2]) == (255, 255, 255)
    assert tuple(marked[row, 2 + 2 * (square + 2) + square // 2]) == BLEND_BACKGROUND


def test_write_overlay_colours_and_fired_marker(tmp_path):
    frame, label = overlay_scene()
    fired = [True, False, True, False, False, True]
    path = tmp_path / "overlay.mp4"
    count = video.write_overlay(path, [frame] * 6, (label for _ in range(6)), num_classes=21,
                                fired=fired, fps=5)
    assert count == 6
    back = video.read_video(path)
    assert back.shape == (6, 96, 128, 3)
    side = 96 // 10
    for t, was_fired in enumerate(fired):
        assert np.abs(back[t, 10:40, 50:58].mean((0, 1)) - BLEND_BACKGROUND).max() < 6
        assert np.abs(back[t, 20:80, 70:110].mean((0, 1)) - BLEND_PERSON).max() < 6
        assert np.abs(back[t, 36:54, 16:34].mean((0, 1)) - VOID_GREY).max() < 6
        corner = back[t, 4:side, 128 - side:128 - 4].mean()
        assert (corner > 220) if was_fired else (abs(corner - np.mean(BLEND_PERSON)) < 15)


def test_write_overlay_refuses_mismatched_lengths(tmp_path):
    frame, label = overlay_scene()
    path = tmp_path / "overlay.mp4"
    with pytest.raises(ValueError, match="labels ran out after 2 frames"):
        video.write_overlay(path, [frame] * 3, [label] * 2, num_classes=21)
    assert not path.exists()
    with pytest.raises(ValueError, match="fired has 2 entries for more frames"):
        video.write_overlay(path, [frame] * 3, [label] * 3, num_classes=21, fired=[True, False])
    assert not path.exists()
    with pytest.raises(ValueError, match="fired has 4 entries for 3 frames"):
        video.write_overlay(path, [frame] * 3, [label] * 3, num_classes=21, fired=[True] * 4)
    assert not path.exists()
    with pytest.raises(ValueError, match="label must be an integer"):
        video.write_overlay(path, [frame], [label[:10]], num_classes=21)


# ---------------------------------------------------------------------------------------------
# Real videos


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "facts"),
    [
        ("vtest.avi", {"width": 768, "height": 576, "num_frames": 795, "fps": 10.0,
                       "codec": "msmpeg4"}),
        ("bikes.mp4", {"width": 640, "height": 272, "num_frames": 250, "fps": 25.0,
                       "codec": "h264"}),
    ],
)
def test_real_sample_videos_decode(name, facts):
    path = samples.fetch(["videos"])["videos"] / name
    info = video.probe(path)
    assert {k: info[k] for k in facts} == facts
    count = 0
    for frame in video.read_frames(path):
        assert frame.shape == (facts["height"], facts["width"], 3)
        count += 1
    assert count == facts["num_frames"]
