"""Live video: a schedule stepped frame by frame over a stream, with per-frame latency.

`run_live` takes frames from a `stream.FrameReader` (a camera, an rtsp/http/tcp stream, a
pipe on stdin, or a file), runs each through `clockwork.Clockwork.step` and waits for its
scores, so the time of every frame is measured on its own:

  latency   from the frame being taken from the reader to its scores being ready on the
            host side (`jax.block_until_ready`): preprocessing, the transfer and the step.
  compute   the step alone: from its call (the preprocessed frame already on the device)
            to its scores being ready.

Keyframe schedules have uneven latency: the frames on which the last stage fires cost the
whole net, the others a part of it. The summary says how uneven: the percentiles and the
max, the jitter (the standard deviation of the latency), p99/p50, and the median latency
of the frames where the last stage fired beside that of the others.

The overlay video (`video.OverlayWriter`) is written frame by frame and stays playable if
the run stops, Ctrl-C included: `run_live` then returns the summary of the frames that ran.
`evaluate_lib.evaluate_live` is evaluate.py's live path (`--data video:URL`, or `--live` on a
file).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cwfcn import clockwork, control, model, schedules
from cwfcn.data import stream, video

__all__ = ["format_live_table", "latency_summary", "run_live"]


def latency_summary(ms: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """Percentiles, max, mean and jitter of per-frame times.

    Args:
      ms: per-frame times in milliseconds, float `[T]`.

    Returns:
      `p50`, `p90`, `p99` (numpy's linear-interpolated percentiles), `max`, `mean`, `jitter`
      (the standard deviation) in ms, and `uneven` = p99 / p50 (1 for a steady stream); all
      None for no frames.
    """
    ms = np.asarray(ms, np.float64)
    if not ms.size:
        return dict.fromkeys(("p50", "p90", "p99", "max", "mean", "jitter", "uneven"))
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "max": float(ms.max()),
            "mean": float(ms.mean()), "jitter": float(ms.std()),
            "uneven": p99 / p50 if p50 > 0 else None}


def _preprocess_step(cw: clockwork.Clockwork, mean_bgr, state, frame: np.ndarray):
    """One frame's work, timed in two parts: `(state, scores, fired, preprocessed_at)`."""
    x = jax.block_until_ready(model.preprocess(frame, mean_bgr))
    preprocessed_at = time.perf_counter()
    state, scores, fired = cw.step(state, x)
    jax.block_until_ready((scores, fired))
    return state, scores, fired, preprocessed_at


def _class_maps(scores: jax.Array) -> np.ndarray:
    return np.asarray(jnp.argmax(scores, axis=-1))


def _warm_up(cw: clockwork.Clockwork, mean_bgr, shape: tuple[int, int, int],
             maps: bool) -> float:
    """Compiles everything a frame runs (init, preprocess, two steps: from the initial state
    and from a stepped one, whose pytrees may differ in weak types; the class argmax) by
    running it on zero frames, untimed; returns the seconds it took."""
    began = time.perf_counter()
    frame = np.zeros(shape, np.uint8)
    state = cw.init(shape)
    for _ in range(2):
        state, scores, _, _ = _preprocess_step(cw, mean_bgr, state, frame)
    if maps:
        _class_maps(scores)
    return time.perf_counter() - began


def run_live(
    net: nnx.Module,
    reader: stream.FrameReader,
    schedule: str | clockwork.Schedule,
    *,
    mean_bgr: Sequence[float],
    video_out: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    dtype: Any = None,
    max_frames: int | None = None,
    window: int | None = None,
    on_frame: Callable[[int, np.ndarray, jax.Array, np.ndarray], None] | None = None,
) -> dict:
    """Segments a stream frame by frame under `schedule`, timing every frame.

    Compiling is kept out of the times: before the first frame is taken, everything a frame
    runs is compiled and run once on zero frames of the stream's size (`_warm_up`: the
    initial state, preprocessing, a step from the initial state and one from a stepped
    state, the class argmax), untimed; the clock then starts again from its initial state.
    When the stream's header gives no frame size, the first frame is taken first and its
    latency is counted from the end of the warm-up. The row's `compiles_during_run` counts
    compiles of the step during the timed frames (0: none was timed).

    Args:
      net: a staged net (`model.FCN8s`).
      reader: the source (its decoding thread starts here); the caller closes it.
      schedule: a `Schedule` or its name.
      mean_bgr: the net's input mean, BGR (`model.preprocess`).
      video_out: write the overlay video here, frame by frame (`video.OverlayWriter`).
      class_names: the classes' names for the overlay's legend (None: squares only).
      dtype: compute dtype ("float32" or "bfloat16").
      max_frames: stop after this many frames (None: at the end of the stream).
      window: frames per window of the windowed rate; None: the schedule's own `window` (a
        controlled schedule's) or `DEFAULT_WINDOW`.
      on_frame: called after each frame's scores are ready (outside its latency) with the
        frame index, the frame uint8 `[H, W, 3]`, its scores float32 `[H, W, C]` and fired
        bool `[N]`.

    Returns:
      A JSON-able row: `schedule`, `params`, `source`, `mode` ("live" or "file"), `frames`
      (segmented), `dropped` (decoded but replaced by a newer frame before being taken),
      `decoded`, `fired` (fraction per stage), `window`, `window_rates`, `window_min`,
      `window_max` (the last stage's windowed rate), `latency_ms` and `compute_ms`
      (`latency_summary`), `latency_fired_ms` and `latency_cached_ms` (median latency of the
      frames where the last stage fired and of the others; None without any), `fps` (frames
      segmented per second of the run), `wall_s`, `compile_s`, `compiles_during_run`,
      `interrupted` (Ctrl-C stopped it), `video_out` and `timeline` (per frame:
      `latency_ms`, `compute_ms`, `fired` [T][N]).
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be None or >= 1, got {max_frames}")
    cw = clockwork.Clockwork(net, schedule, dtype=dtype)
    schedule = cw.schedule
    window = window or schedule.window or schedules.DEFAULT_WINDOW
    latency, compute, fired_rows = [], [], []
    compile_s, interrupted, first = 0.0, False, None
    writer, compiles = None, None
    began = time.perf_counter()
    try:
        shape = reader.frame_shape
        if shape is None:  # the header gives no size: the first frame does
            first = next(reader, None)
            shape = None if first is None else first.shape
        if shape is not None:
            compile_s = _warm_up(cw, mean_bgr, shape, video_out is not None)
            state = cw.init(shape)
            compiles = clockwork.compile_counts()["step"]
        began = time.perf_counter()
        while shape is not None and (max_frames is None or len(latency) < max_frames):
            frame = first if first is not None else next(reader, None)
            taken = time.perf_counter()
            first = None
            if frame is None:
                break
            state, scores, fired, preprocessed = _preprocess_step(cw, mean_bgr, state, frame)
            ready = time.perf_counter()
            latency.append(1e3 * (ready - taken))
            compute.append(1e3 * (ready - preprocessed))
            fired = np.asarray(fired)
            fired_rows.append(fired)
            if video_out is not None:
                if writer is None:
                    writer = video.OverlayWriter(video_out, num_classes=int(scores.shape[-1]),
                                                 class_names=class_names,
                                                 num_stages=len(fired), fps=reader.fps or 25.0)
                writer.write(frame, _class_maps(scores), fired=bool(fired[-1]))
            if on_frame is not None:
                on_frame(len(latency) - 1, frame, scores, fired)
    except KeyboardInterrupt:
        interrupted = True  # stop here: the video is closed below and the row still made
    finally:
        if writer is not None:
            writer.close()
    wall_s = time.perf_counter() - began
    fired = np.asarray(fired_rows, bool).reshape(len(fired_rows), -1)
    sliding = control.window_rates(fired[:, -1], window) if fired.size else np.zeros(0)
    rates = sliding[::window].tolist()  # the windows one after another, for the timeline
    last = fired[:, -1] if fired.size else np.zeros(0, bool)
    ms = np.asarray(latency)
    return {
        "schedule": schedule.name, "params": schedule.params(), "source": reader.name,
        "mode": "live" if reader.live else "file", "frames": len(latency),
        "dropped": reader.dropped, "decoded": reader.decoded,
        "fired": fired.mean(0).tolist() if fired.size else [],
        "window": window, "window_rates": rates,
        "window_min": float(sliding.min()) if len(sliding) else None,
        "window_max": float(sliding.max()) if len(sliding) else None,
        "latency_ms": latency_summary(ms), "compute_ms": latency_summary(compute),
        "latency_fired_ms": float(np.median(ms[last])) if last.any() else None,
        "latency_cached_ms": float(np.median(ms[~last])) if (~last).any() else None,
        "fps": len(latency) / wall_s if latency and wall_s > 0 else None,
        "wall_s": wall_s, "compile_s": compile_s,
        "compiles_during_run": (clockwork.compile_counts()["step"] - compiles
                                if compiles is not None else 0),
        "interrupted": interrupted,
        "video_out": None if writer is None else str(video_out),
        "timeline": {"latency_ms": latency, "compute_ms": compute, "fired": fired.tolist()},
    }


def format_live_table(rows: Sequence[dict]) -> str:
    """The live table, one row per schedule (`run_live`'s rows).

    Columns: "frames" segmented and "dropped" (taken by a newer frame before the net was
    ready for them); "fired S1/.../SN" the fraction of frames each stage fired on; "SN win"
    the range (min-max) of the last stage's rate over windows of `window` frames; "p50",
    "p90", "p99", "max" the latency in ms (a frame taken to its scores ready); "jitter" its
    standard deviation (ms); "p99/p50" how uneven it is (1: steady); "SN/other" the median
    latency of the frames where the last stage fired / of the others (ms); "compute" the
    step's median time alone (ms); "fps" frames segmented per second. A "*" after the
    frames marks a run stopped by Ctrl-C.
    """
    def num(fmt: str):
        return lambda v: "-" if v is None else fmt.format(v)

    stages = [f"S{k + 1}" for k in range(max((len(r["fired"]) for r in rows), default=0))]
    last = stages[-1] if stages else "last"
    fired_header = f"fired {'/'.join(stages)}"
    ms = num("{:.1f}")
    cols = [
        ("schedule", 16, str), ("mode", 5, str), ("frames", 8, str), ("dropped", 8, str),
        (fired_header, max(16, len(fired_header) + 2), str), (f"{last} win", 11, str),
        ("p50", 7, ms), ("p90", 7, ms), ("p99", 7, ms), ("max", 7, ms), ("jitter", 7, ms),
        ("p99/p50", 8, num("{:.2f}")), (f"{last}/other", 13, str), ("compute", 8, ms),
        ("fps", 7, ms),
    ]
    lines = ["".join(f"{name:>{w}}" if i else f"{name:<{w}}" for i, (name, w, _) in
                     enumerate(cols))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lat = r["latency_ms"]
        win = ("-" if r["window_min"] is None
               else f"{r['window_min']:.2f}-{r['window_max']:.2f}")
        split = f"{ms(r['latency_fired_ms'])}/{ms(r['latency_cached_ms'])}"
        values = [r["schedule"], r["mode"], f"{r['frames']}{'*' if r['interrupted'] else ''}",
                  r["dropped"], "/".join(f"{f:.2f}" for f in r["fired"]), win, lat["p50"],
                  lat["p90"], lat["p99"], lat["max"], lat["jitter"], lat["uneven"], split,
                  r["compute_ms"]["p50"], r["fps"]]
        lines.append("".join(
            (f"{fmt(v):>{w}}" if i else f"{fmt(v):<{w}}")
            for i, ((_, w, fmt), v) in enumerate(zip(cols, values, strict=True))))
    if any(r["interrupted"] for r in rows):
        lines.append("* stopped by Ctrl-C: the row covers the frames that ran")
    return "\n".join(lines)
