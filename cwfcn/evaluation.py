"""Scores clockwork schedules on labelled videos: the paper's metrics plus cost.

For each schedule: pixel acc / mean acc / mean IU / fw IU over one confusion
matrix summed across videos, the same on the boundary band, the temporal
difference of the predicted labels (mean and std across videos), the fraction of
frames each stage fired, the FLOP fraction of oracle and the measured ms/frame.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cwfcn import clockwork, cost, metrics, model
from cwfcn.data.prefetch import prefetch
from cwfcn.data.translate import SCORED_FRAMES

Video = tuple[np.ndarray, np.ndarray]  # frames uint8 RGB [T, H, W, 3], labels uint8 [T, H, W]


SCAN_FRAMES = 64  # longer videos stream frame by frame, so memory stays flat in length


# The paper's latency baselines (Tables 3, 4): FCN-8s cut after S1 or S2, every frame.
BASELINES = {"pool3": 1, "pool4": 2}


@functools.partial(jax.jit, static_argnames=("graphdef", "stages"))
def _truncated_preds(params, frames, *, graphdef, stages: int) -> jax.Array:
    return jnp.argmax(nnx.merge(graphdef, params).truncated(frames, stages), -1)


def _predict_truncated(net, frames, stages: int):
    graphdef, params = nnx.split(net)
    preds = [np.asarray(_truncated_preds(params, frames[i : i + SCAN_FRAMES],
                                         graphdef=graphdef, stages=stages))
             for i in range(0, len(frames), SCAN_FRAMES)]
    fired = np.zeros((len(frames), 3), bool)
    fired[:, :stages] = True
    return np.concatenate(preds), fired, np.zeros(len(frames), np.float32)


def predict(
    net: nnx.Module, frames: jax.Array, schedule: clockwork.Schedule | str,
    stream: clockwork.Clockwork | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class maps of a video under a schedule.

    Short videos go through one `clockwork.run`; longer ones through `Clockwork.step`,
    which gives the same results without holding every frame's scores.

    Args:
      net: a staged net.
      frames: float32 `[T, H, W, 3]`, preprocessed.
      schedule: the schedule, or a truncated baseline's name (`BASELINES`).
      stream: a `Clockwork(net, schedule)` to reuse (its step is compiled once).

    Returns:
      preds int `[T, H, W]`, fired bool `[T, N]`, change float32 `[T]`.
    """
    if isinstance(schedule, str):  # a truncated baseline: "pool3" or "pool4"
        return _predict_truncated(net, frames, BASELINES[schedule])
    if len(frames) <= SCAN_FRAMES:
        out = clockwork.run(net, frames, schedule)
        return np.asarray(jnp.argmax(out.scores, -1)), np.asarray(out.fired), np.asarray(out.change)
    cw = stream or clockwork.Clockwork(net, schedule)
    state = cw.init(frames.shape[1:])
    preds, fired, change = [], [], []
    for frame in frames:
        state, scores, fired_t = cw.step(state, frame)
        preds.append(np.asarray(jnp.argmax(scores, -1)))
        fired.append(np.asarray(fired_t))
        change.append(float(state.change))
    return np.stack(preds), np.stack(fired), np.asarray(change, np.float32)


def evaluate_schedule(
    net: nnx.Module,
    videos: Iterable[Video],
    schedule: str | clockwork.Schedule,
    *,
    mean_bgr: Sequence[float],
    scored: slice = SCORED_FRAMES,
    boundary_radius: int = 5,
) -> dict:
    """Runs one schedule over every video and scores it.

    Args:
      net: a staged net with `num_classes` (e.g. `model.FCN8s`).
      videos: (frames uint8 RGB `[T, H, W, 3]`, labels uint8 `[T, H, W]`, 255 = ignore)
        pairs; decoded in a background thread while the net runs.
      schedule: a schedule or its name, or a truncated baseline ("pool3", "pool4").
      mean_bgr: the data set's mean (`model.MEAN_BGR`).
      scored: the frames of each video that are scored (all are run).
      boundary_radius: radius of the boundary band.

    Returns:
      A flat dict of metrics (see the module docstring); ms/frame excludes compiling.
    """
    baseline = schedule if schedule in BASELINES else None
    schedule = baseline or clockwork.parse_schedule(schedule)
    name = baseline or schedule.name
    c = net.num_classes
    hist = np.zeros((c, c), np.int64)
    band_hist = np.zeros((c, c), np.int64)
    tds, fired, seconds, spent, frames_run = [], [], 0.0, 0.0, 0
    flops: dict[tuple, cost.StageFlops] = {}
    stream = None if baseline else clockwork.Clockwork(net, schedule)
    with prefetch(videos) as decoded:
        for rgb, labels in decoded:
            frames = model.preprocess(rgb, mean_bgr)
            if frames.shape not in flops:  # compile outside the timed region
                if baseline or len(frames) <= SCAN_FRAMES:
                    predict(net, frames, schedule)
                else:
                    stream.step(stream.init(frames.shape[1:]), frames[0])
                flops[frames.shape] = cost.stage_flops(net, frames.shape[1:])
            start = time.perf_counter()
            preds, fired_v, change = predict(net, frames, schedule, stream)
            seconds += time.perf_counter() - start
            frames_run += len(frames)
            if not fired:  # the first video's clock, for timeline plots
                timeline = {"change": change.tolist(), "fired": fired_v[:, -1].tolist()}
            fired.append(fired_v)
            spent += cost.flop_fraction(fired[-1], flops[frames.shape]) * len(frames)
            hist += metrics.confusion(labels[scored], preds[scored], c)
            band_hist += metrics.boundary_confusion(labels[scored], preds[scored], c,
                                                    boundary_radius)
            tds.append(metrics.temporal_difference(preds))
    if not frames_run:
        raise ValueError("no videos to evaluate: the data source is empty")
    result = {"schedule": name, **metrics.scores(hist)}
    result.update({f"bdry_{k}": v for k, v in metrics.scores(band_hist).items()})
    result.update(
        temporal_diff=float(np.mean(tds)),
        temporal_diff_std=float(np.std(tds)),
        fired=np.concatenate(fired).mean(0).tolist(),
        flop_fraction=spent / frames_run,
        ms_per_frame=1e3 * seconds / frames_run,
        frames=frames_run,
        videos=len(tds),
        timeline=timeline,
    )
    return result


def add_speedups(rows: list[dict]) -> list[dict]:
    """Adds `time_fraction` (ms/frame over oracle's) where an oracle row exists."""
    oracle = next((r["ms_per_frame"] for r in rows if r["schedule"] == "oracle"), None)
    for row in rows:
        row["time_fraction"] = row["ms_per_frame"] / oracle if oracle else None
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The paper-style results table, one row per schedule."""
    cols = [
        ("schedule", "{:<15}", 15), ("pix acc", "{:>8.1f}", 8), ("mean acc", "{:>9.1f}", 9),
        ("mean IU", "{:>8.1f}", 8), ("fw IU", "{:>7.1f}", 7), ("IU-bdry", "{:>8.1f}", 8),
        ("fwIU-bdry", "{:>10.1f}", 10), ("temp diff", "{:>10.3f}", 10),
        ("fired S1/S2/S3", "{:>16}", 16), ("FLOP frac", "{:>10.2f}", 10),
        ("ms/frame", "{:>9.1f}", 9), ("time frac", "{:>10}", 10),
    ]
    lines = ["".join(f"{name:>{w}}" if i else f"{name:<{w}}" for i, (name, _, w) in
                     enumerate(cols))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        tf = "-" if r.get("time_fraction") is None else f"{r['time_fraction']:.2f}"
        values = [
            r["schedule"], 100 * r["pixel_acc"], 100 * r["mean_acc"], 100 * r["mean_iu"],
            100 * r["fw_iu"], 100 * r["bdry_mean_iu"], 100 * r["bdry_fw_iu"], r["temporal_diff"],
            "/".join(f"{f:.2f}" for f in r["fired"]), r["flop_fraction"], r["ms_per_frame"], tf,
        ]
        lines.append("".join(fmt.format(v) for (_, fmt, _), v in zip(cols, values, strict=True)))
    return "\n".join(lines)
