"""Live video: loopback and pipe streams, dropped-frame accounting, latency, the incremental
overlay writer (killed mid-run), the named legend, the CLI's live path and bad sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from configs import tiny
from cwfcn import cli, clockwork, evaluate_lib, live, model
from cwfcn.data import stream, video

ROOT = Path(__file__).resolve().parents[1]
MEAN = (104.0, 117.0, 123.0)
H, W = 32, 48


def _frames(count: int) -> np.ndarray:
    """Moving bars over noise: uint8 `[count, H, W, 3]`, so the adaptive clock varies."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), np.uint8)
    out = np.repeat(base[None], count, 0)
    for t in range(count):
        out[t, :, (3 * t) % W:(3 * t) % W + 8] = (40 * t) % 256
    return out


# A stream server: binds a free loopback port, prints it, then writes COUNT frames as MPEG-TS
# to the first client as fast as it can (the consumer decides what it keeps).
SERVER = textwrap.dedent("""
    import socket, sys
    import av, numpy as np
    count, h, w = (int(a) for a in sys.argv[1:4])
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    conn, _ = server.accept()
    with conn.makefile("wb") as sink, av.open(sink, "w", format="mpegts") as out:
        s = out.add_stream("mpeg2video", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        rng = np.random.default_rng(1)
        for t in range(count):
            frame = rng.integers(0, 256, (h, w, 3), np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(s.encode(None))
""")


@pytest.fixture
def tcp_stream(tmp_path):
    """`serve(count) -> tcp://127.0.0.1:PORT` of a server subprocess; reaped afterwards."""
    procs = []

    def serve(count: int) -> str:
        script = tmp_path / "server.py"
        script.write_text(SERVER)
        proc = subprocess.Popen([sys.executable, str(script), str(count), str(H), str(W)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return f"tcp://127.0.0.1:{int(proc.stdout.readline())}"

    yield serve
    for proc in procs:
        proc.wait(timeout=30)
        assert proc.returncode == 0


def _clip(tmp_path, count: int = 12) -> tuple[Path, np.ndarray]:
    """A small .mkv and its frames as PyAV decodes them (what every reader of it sees)."""
    path = tmp_path / "clip.mkv"
    video.write_video(path, _frames(count), fps=25)
    return path, video.read_video(path)


def test_loopback_stream_drops_frames_when_slow_and_counts_them_exactly(net, tcp_stream):
    sent = 40
    url = tcp_stream(sent)
    seen = []
    with stream.FrameReader(url) as reader:
        assert reader.live and reader.frame_shape == (H, W, 3)
        row = live.run_live(net, reader, "adaptive:0.25", mean_bgr=MEAN,
                            on_frame=lambda t, frame, scores, fired: (seen.append(t),
                                                                      time.sleep(0.03)))
    assert not reader.alive  # closed: no thread left
    assert row["mode"] == "live" and row["frames"] == len(seen)
    assert row["dropped"] > 0
    assert row["frames"] + row["dropped"] == row["decoded"] == sent


def test_file_mode_passes_every_frame_and_equals_clockwork_run(net, tmp_path):
    path, frames = _clip(tmp_path)
    got_scores, schedule = [], "adaptive:0.02"
    with stream.FrameReader(path) as reader:
        assert not reader.live
        row = live.run_live(net, reader, schedule, mean_bgr=MEAN,
                            on_frame=lambda t, f, scores, fired: got_scores.append(
                                np.asarray(scores)))
    assert row["mode"] == "file" and row["dropped"] == 0 and row["frames"] == len(frames)
    ref = clockwork.run(net, model.preprocess(frames, MEAN), schedule)
    np.testing.assert_array_equal(np.asarray(row["timeline"]["fired"]), np.asarray(ref.fired))
    np.testing.assert_allclose(np.stack(got_scores), np.asarray(ref.scores), rtol=1e-4,
                               atol=1e-4)
    assert row["fired"] == pytest.approx(np.asarray(ref.fired).mean(0).tolist())


def test_a_budget_holds_in_a_live_run_and_its_windows_are_reported(net, tmp_path):
    path, frames = _clip(tmp_path)
    with stream.FrameReader(path) as reader:
        row = live.run_live(net, reader, "adaptive:0.02@0.5/4", mean_bgr=MEAN)
    last = np.asarray(row["timeline"]["fired"])[:, -1]
    sums = np.convolve(last, np.ones(4), "valid")  # firings in every 4 consecutive frames
    assert len(sums) == len(frames) - 3 and (sums == 2).all()  # 0.5 +- 0.1 of 4: exactly 2
    assert row["window"] == 4 and row["window_min"] == row["window_max"] == 0.5
    assert row["window_rates"] == [0.5] * (len(frames) // 4)


def test_latency_summary_is_numpys_percentiles_and_nothing_compiles_while_timed(net, tmp_path):
    path, _ = _clip(tmp_path)
    with stream.FrameReader(path) as reader:
        row = live.run_live(net, reader, "exponential", mean_bgr=MEAN, window=4)
    ms = np.asarray(row["timeline"]["latency_ms"])
    lat = row["latency_ms"]
    assert [lat["p50"], lat["p90"], lat["p99"]] == pytest.approx(np.percentile(ms, [50, 90, 99]))
    assert lat["max"] == pytest.approx(ms.max()) and lat["jitter"] == pytest.approx(ms.std())
    assert lat["uneven"] == pytest.approx(lat["p99"] / lat["p50"])
    last = np.asarray(row["timeline"]["fired"])[:, -1]
    assert row["latency_fired_ms"] == pytest.approx(np.median(ms[last]))
    assert row["latency_cached_ms"] == pytest.approx(np.median(ms[~last]))
    assert row["window_rates"] == [0.25, 0.25, 0.25]  # S3 every 4th frame: 1 in each window of 4
    assert (np.asarray(row["timeline"]["compute_ms"]) <= ms).all()
    assert row["compiles_during_run"] == 0 and row["compile_s"] > 0
    json.dumps(row)  # JSON-able
    table = live.format_live_table([row])
    assert "p99/p50" in table and "exponential" in table.splitlines()[2]


def test_latency_summary_of_no_frames_is_empty():
    assert live.latency_summary([])["p50"] is None


@pytest.mark.parametrize("stop", [KeyboardInterrupt, cli.Terminated])  # Ctrl-C, SIGTERM
def test_max_frames_and_ctrl_c_leave_a_playable_video(net, tmp_path, stop):
    path, _ = _clip(tmp_path)
    out = tmp_path / "live.mp4"

    def interrupt(t, *_):
        if t == 4:
            raise stop

    with stream.FrameReader(path) as reader:
        row = live.run_live(net, reader, "adaptive", mean_bgr=MEAN, video_out=out,
                            on_frame=interrupt)
    assert row["interrupted"] and row["frames"] == 5
    assert len(video.read_video(out)) == 5
    with stream.FrameReader(path) as reader:
        row = live.run_live(net, reader, "adaptive", mean_bgr=MEAN, max_frames=3)
    assert row["frames"] == 3 and not row["interrupted"]


# Writes FRAMES overlay frames at 10 fps (a keyframe per 10 frames), says so, then waits to be
# killed: the writer is never closed.
WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from cwfcn.data import video
    path, count = sys.argv[1], int(sys.argv[2])
    writer = video.OverlayWriter(path, num_classes=5, num_stages=3, fps=10)
    rng = np.random.default_rng(0)
    for t in range(count):
        frame = rng.integers(0, 256, (32, 48, 3), np.uint8)
        writer.write(frame, np.full((32, 48), t % 5), fired=t % 3 == 0)
    print("written", flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_killed_writers_video_still_decodes(tmp_path, suffix):
    script, path, count = tmp_path / "writer.py", tmp_path / f"killed{suffix}", 25
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(count)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    decoded = 0
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                assert frame.to_ndarray(format="rgb24").shape == (32, 48, 3)
                decoded += 1
        except av.FFmpegError:
            pass  # the cut-off tail
    assert decoded >= count - 10  # every frame up to the last keyframe (one per 10 frames)


def test_legend_names_and_marker_text_draw_pixels():
    frame = np.full((96, 128, 3), 100, np.uint8)
    label = np.zeros((96, 128), np.int64)
    label[20:60, 40:90] = 2
    palette = video.voc_palette(5)
    squares = video.overlay_frame(frame, label, palette, fired=True)
    named = video.overlay_frame(frame, label, palette, fired=True,
                                class_names=["background", "one", "two", "three", "four"],
                                marker_text=video.marker_label(3))
    assert video.marker_label(3) == "S3 fired"
    left, top = named[60:, :64], named[:20, :100]  # the legend's and the marker's text
    assert (left != squares[60:, :64]).any() and (top != squares[:20, :100]).any()
    # names run short: indices stand in; no names: the old colour squares, unchanged
    short = video.draw_legend(frame, [0, 4], palette, ["background"])
    assert (short != frame).any()
    np.testing.assert_array_equal(video.draw_legend(frame, [0, 2], palette),
                                  video.draw_legend(frame, [0, 2], palette, None))


def test_write_overlay_with_fired_per_stage_labels_the_marker(tmp_path):
    frame = np.full((64, 96, 3), 100, np.uint8)
    label = np.zeros((64, 96), np.int64)
    fired = np.array([[1, 1, 1], [1, 0, 0]], bool)
    out = tmp_path / "o.mp4"
    assert video.write_overlay(out, [frame] * 2, [label] * 2, num_classes=5, fired=fired,
                               class_names=["bg", "a", "b", "c", "d"]) == 2
    back = video.read_video(out)
    text_row = back[:, 2:12, 40:80].astype(int)  # "S3 fired" left of the marker on frame 0 only
    assert np.abs(text_row[0] - text_row[1]).max() > 60


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(video.VideoError, match=r"tcp://127.0.0.1:1: cannot open the video "
                                               r"source .*check that the source is up"):
        stream.FrameReader("tcp://127.0.0.1:1", timeout=2)
    with pytest.raises(video.VideoError, match="no such file"):
        stream.FrameReader(tmp_path / "missing.mp4")
    assert stream.is_live("rtsp://cam/x") and stream.is_live("/dev/video0")
    assert stream.is_live("-") and not stream.is_live("clip.mp4")
    assert not stream.is_live("file:///tmp/clip.mp4")
    assert evaluate_lib.is_live_data("video:http://host/live.ts")
    assert not evaluate_lib.is_live_data("video:a.mp4")


def test_reader_closed_before_reading_leaves_no_thread(tmp_path):
    path, _ = _clip(tmp_path, 4)
    reader = stream.FrameReader(path)
    reader.close()
    assert list(reader) == [] and not reader.alive
    with stream.FrameReader(path) as reader:
        next(reader)
    assert not reader.alive  # stopped while waiting for the consumer


def _evaluate(*args: str, cache: Path, stdin=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CWFCN_CACHE=str(cache))
    return subprocess.run([sys.executable, "evaluate.py", "--config", "configs/tiny.py",
                           "--config.train.steps=0", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env, stdin=stdin)


@pytest.mark.slow
def test_cli_live_from_a_pipe_on_stdin(tmp_path):
    ts = tmp_path / "in.ts"
    video.write_video(tmp_path / "src.mkv", _frames(16), fps=25)
    with av.open(str(ts), "w", format="mpegts") as out, av.open(str(tmp_path / "src.mkv")) as src:
        s = out.add_stream("mpeg2video", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for frame in src.decode(video=0):
            out.mux(s.encode(frame.reformat(format="yuv420p")))
        out.mux(s.encode(None))
    result, overlay = tmp_path / "r.json", tmp_path / "live.mp4"
    with ts.open("rb") as pipe:
        proc = _evaluate("--data", "video:-", "--schedule", "oracle,adaptive", "--video-out",
                         str(overlay), "--output", str(result), "--max-frames", "12",
                         "--target-rate", "0.5", "--rate-window", "4",
                         cache=tmp_path / "cache", stdin=pipe)
    assert proc.returncode == 0, proc.stderr
    assert "running the last schedule only, adaptive:0.25" in proc.stderr
    header, _, line = proc.stdout.strip().splitlines()[-3:]
    assert "p50" in header and "jitter" in header and line.startswith("adaptive:0.25")
    (row,) = json.loads(result.read_text())["results"]
    assert row["mode"] == "live" and row["frames"] + row["dropped"] <= 16
    assert row["frames"] <= 12 and len(row["timeline"]["latency_ms"]) == row["frames"]
    # The budget, live (how many frames the net took before the pipe ended varies): 2
    # firings in every 4 frames (0.5 +- 0.1) where there are 4 frames.
    assert row["schedule"] == "adaptive:0.25@0.5/4"
    if row["frames"] >= 4:
        assert row["window_min"] == row["window_max"] == 0.5
    else:
        assert row["window_min"] is None
    assert len(video.read_video(overlay)) == row["frames"]


@pytest.mark.slow
def test_cli_live_on_a_file_runs_every_schedule(tmp_path):
    path, frames = _clip(tmp_path, 8)
    result = tmp_path / "r.json"
    proc = _evaluate("--data", f"video:{path}", "--live", "--schedule", "exponential",
                     "--output", str(result), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(result.read_text())["results"]
    assert [r["schedule"] for r in rows] == ["oracle", "exponential"]
    assert all(r["mode"] == "file" and r["frames"] == len(frames) and r["dropped"] == 0
               for r in rows)


def test_cli_bad_url_is_one_clear_error(tmp_path):
    proc = _evaluate("--data", "video:tcp://127.0.0.1:1", cache=tmp_path / "cache")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert "tcp://127.0.0.1:1: cannot open the video source" in line


def test_live_is_refused_for_labelled_data_baselines_and_an_open_loop_target():
    with pytest.raises(ValueError, match="--live runs a video"):
        evaluate_lib.evaluate(tiny.get_config(), data="synthetic", live=True)
    with pytest.raises(ValueError, match="held by the controller: give --rate_window"):
        evaluate_lib.evaluate(tiny.get_config(), data="video:rtsp://h/x", target_rate=0.5,
                              rate_window=0)
    with pytest.raises(ValueError, match="--baselines does not go with a live run"):
        evaluate_lib.evaluate(tiny.get_config(), data="video:rtsp://h/x",
                              baselines="pool4=x.caffemodel")


def test_blocking_is_per_frame(net, tmp_path):
    """Every frame's scores are ready when its latency is taken (no async overlap)."""
    path, _ = _clip(tmp_path, 3)
    ready = []
    with stream.FrameReader(path) as reader:
        live.run_live(net, reader, "oracle", mean_bgr=MEAN,
                      on_frame=lambda t, f, scores, fired: ready.append(scores.is_ready()))
    assert ready == [True] * 3
