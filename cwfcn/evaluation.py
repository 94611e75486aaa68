"""Scores clockwork schedules on labelled videos: the paper's metrics plus cost.

For each schedule: pixel acc / mean acc / mean IU / fw IU over one confusion
matrix summed across videos, the same on the boundary band, the temporal
difference of the predicted labels (mean and std across videos), the fraction of
frames each stage fired, the FLOP fraction of oracle and the measured ms/frame.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from cwfcn import clockwork, cost, metrics, model, results
from cwfcn.data.prefetch import prefetch
from cwfcn.data.translate import SCORED_FRAMES

Video = tuple[np.ndarray, np.ndarray]  # frames uint8 RGB [T, H, W, 3], labels uint8 [T, H, W]


# The paper's latency baselines (Tables 3, 4): FCN-8s cut after S1 or S2, every frame.
BASELINES = {"pool3": 1, "pool4": 2}


@functools.partial(jax.jit, static_argnames=("graphdef", "stages"))
def _truncated_preds(params, frames, *, graphdef, stages: int) -> jax.Array:
    return jnp.argmax(nnx.merge(graphdef, params).truncated(frames, stages), -1)


_argmax = jax.jit(functools.partial(jnp.argmax, axis=-1))


def _predict_truncated(net, frames, stages: int, dtype):
    graphdef, params = nnx.split(net)
    params = clockwork.cast_params(params, dtype)
    preds = [_truncated_preds(params, jnp.asarray(frames[i : i + clockwork.DEFAULT_CHUNK], dtype),
                              graphdef=graphdef, stages=stages)
             for i in range(0, len(frames), clockwork.DEFAULT_CHUNK)]
    fired = np.zeros((len(frames), 3), bool)
    fired[:, :stages] = True
    return jnp.concatenate(preds), fired, np.zeros(len(frames), np.float32)


def _predict(net, frames, schedule, stream, dtype):
    """`predict` with the class maps left where they are (device, or host for long videos)."""
    if isinstance(schedule, str):  # a truncated baseline: "pool3" or "pool4"
        return _predict_truncated(net, frames, BASELINES[schedule], dtype)
    if len(frames) <= clockwork.DEFAULT_CHUNK:
        out = clockwork.run(net, frames, schedule, dtype=dtype)
        return _argmax(out.scores), np.asarray(out.fired), np.asarray(out.change)
    cw = stream or clockwork.Clockwork(net, schedule, dtype=dtype)
    preds, fired, change = [], [], []
    for out in cw.chunks(frames, clockwork.DEFAULT_CHUNK):  # each chunk's maps leave the device
        preds.append(np.asarray(_argmax(out.scores)))
        fired.append(np.asarray(out.fired))
        change.append(np.asarray(out.change))
    return np.concatenate(preds), np.concatenate(fired), np.concatenate(change)


def predict(
    net: nnx.Module, frames: jax.Array, schedule: clockwork.Schedule | str,
    stream: clockwork.Clockwork | None = None, *, dtype=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class maps of a video under a schedule.

    A video of up to `clockwork.DEFAULT_CHUNK` frames is one `clockwork.run`; a longer
    one runs chunk by chunk (`Clockwork.chunks`), same results, memory bounded by the
    chunk.

    Args:
      net: a staged net.
      frames: float32 `[T, H, W, 3]`, preprocessed.
      schedule: the schedule, or a truncated baseline's name (`BASELINES`).
      stream: a `Clockwork(net, schedule)` to reuse (compiled once) for long videos.
      dtype: compute dtype ("float32" or "bfloat16"; see `clockwork.run`).

    Returns:
      preds int `[T, H, W]`, fired bool `[T, N]`, change float32 `[T]`.
    """
    preds, fired, change = _predict(net, frames, schedule, stream, dtype)
    return np.asarray(preds), fired, change


@functools.partial(jax.jit, static_argnames="num_classes")
def _video_stats(labels, band, preds_scored, preds, num_classes: int):
    """One video's sufficient statistics, on the device.

    Args:
      labels: uint8 `[S, H, W]` of the scored frames; band: bool `[S, H, W]`, their
        boundary bands; preds_scored: int `[S, H, W]`; preds: int `[T, H, W]`, all frames.

    Returns:
      confusion int32 `[C, C]`, the band's confusion int32 `[C, C]`, and the temporal
      difference (as `metrics.temporal_difference`).
    """
    hist = metrics.confusion(labels, preds_scored, num_classes)
    band_labels = jnp.where(band, labels, metrics.IGNORE_LABEL)
    band_hist = metrics.confusion(band_labels, preds_scored, num_classes)
    changed = jnp.mean(preds[1:] != preds[:-1], axis=(1, 2))
    return hist, band_hist, jnp.sum(changed) / preds.shape[0]


def _with_bands(videos: Iterable[Video], scored: slice, radius: int, num_classes: int,
                skip: Callable[[int], bool]):
    """Checks the labels and adds the boundary bands of the scored ones (host work, done
    in the decode thread); videos `skip` names are passed over (None)."""
    for index, (rgb, labels) in enumerate(videos):
        if skip(index):
            yield None
            continue
        metrics.check_labels(labels, num_classes)
        bands = np.stack([metrics.boundary_mask(lab, radius) for lab in labels[scored]])
        yield rgb, labels[scored], bands


def _on_host(record: dict) -> dict:
    """A video's record with its device statistics fetched: plain JSON-able values."""
    hist, band_hist, td = jax.device_get(record.pop("stats"))
    return {"hist": np.asarray(hist).tolist(), "band_hist": np.asarray(band_hist).tolist(),
            "td": float(td), **{k: np.asarray(v).tolist() for k, v in record.items()}}


def _gather(payload) -> list:
    """Every process's JSON-able `payload`, in process order: exchanged as JSON bytes with
    `multihost_utils.process_allgather`, so floats and int64 counts cross exactly."""
    data = np.frombuffer(json.dumps(payload).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int32))[:, 0]
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:n])) for row, n in zip(rows, sizes, strict=True)]


def evaluate_schedule(
    net: nnx.Module,
    videos: Iterable[Video],
    schedule: str | clockwork.Schedule,
    *,
    mean_bgr: Sequence[float],
    scored: slice = SCORED_FRAMES,
    boundary_radius: int = 5,
    dtype=None,
    journal: results.Journal | None = None,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Runs one schedule over every video and scores it.

    Decoding, the label check and the boundary bands run in a background thread, ahead
    of the net; the confusion matrices and temporal differences are computed on the
    device and fetched once at the end, so the host never waits on metrics.

    Args:
      net: a staged net with `num_classes` (e.g. `model.FCN8s`).
      videos: (frames uint8 RGB `[T, H, W, 3]`, labels uint8 `[T, H, W]`, 255 = ignore)
        pairs, in a fixed order.
      schedule: a schedule or its name, or a truncated baseline ("pool3", "pool4").
      mean_bgr: the data set's mean (`model.MEAN_BGR`).
      scored: the frames of each video that are scored (all are run).
      boundary_radius: radius of the boundary band.
      dtype: compute dtype ("float32" or "bfloat16").
      journal: where each video's results go as soon as it is done (then fetched per
        video); videos it already holds for this schedule are not run again. Records
        are keyed by video index, so with `shard` each process keeps its own journal.
      shard: (process index, process count) of a multi-process run (`jax.process_index()`,
        `jax.process_count()`): this process runs only videos i with i % count == index
        (the others are not checked or banded), then the per-video records of every
        process are gathered, so every process returns the metrics of one process
        running them all (wall_s: the slowest process's).

    Returns:
      A flat dict of metrics (see the module docstring). ms/frame times the net (with
      the argmax); wall_s is the whole loop, decode and metrics included; neither
      counts compiling.

    Raises:
      ValueError: no videos, labels outside [0, C) other than 255, or a `shard` that is
        not (an index, `jax.process_count()`).
    """
    part, parts = shard or (0, 1)
    if shard is not None and (parts != jax.process_count() or not 0 <= part < parts):
        raise ValueError(f"shard {shard} is not (process index, {jax.process_count()} processes)")
    baseline = schedule if schedule in BASELINES else None
    schedule = baseline or clockwork.parse_schedule(schedule)
    name = baseline or schedule.name
    dtype = clockwork.compute_dtype(dtype)
    c = net.num_classes
    flops: dict[tuple, cost.StageFlops] = {}
    stream = None if baseline else clockwork.Clockwork(net, schedule, dtype=dtype)

    def done(index: int) -> dict | None:
        return None if journal is None else journal.get(name, index)

    def mine(index: int) -> bool:
        return index % parts == part

    records = []  # (video index, record)
    wall, compiling = time.perf_counter(), 0.0
    decoded = _with_bands(videos, scored, boundary_radius, c,
                          lambda i: not mine(i) or done(i) is not None)
    with prefetch(decoded) as decoded:
        for index, item in enumerate(decoded):
            if item is None:
                if mine(index):
                    records.append((index, done(index)))
                continue
            rgb, labels, bands = item
            frames = model.preprocess(rgb, mean_bgr)
            if frames.shape not in flops:  # compile outside the timed region
                start = time.perf_counter()
                preds = _predict(net, frames, schedule, stream, dtype)[0]
                _video_stats(labels, bands, preds[scored], preds, c)[0].block_until_ready()
                flops[frames.shape] = cost.stage_flops(net, frames.shape[1:])
                compiling += time.perf_counter() - start
            start = time.perf_counter()
            preds, fired, change = _predict(net, frames, schedule, stream, dtype)
            jax.block_until_ready(preds)
            record = {
                "stats": _video_stats(labels, bands, preds[scored], preds, c),
                "fired": fired, "change": change, "frames": len(frames),
                "seconds": time.perf_counter() - start,
                "spent": cost.flop_fraction(fired, flops[frames.shape]) * len(frames),
            }
            if journal is not None:
                journal.add(name, index, record := _on_host(record))
            records.append((index, record))
    records = [(i, r if "stats" not in r else _on_host(r)) for i, r in records]  # the one wait
    wall = time.perf_counter() - wall - compiling
    if parts > 1:
        everyone = _gather({"wall": wall, "records": records})
        wall = max(p["wall"] for p in everyone)
        records = sorted((tuple(x) for p in everyone for x in p["records"]), key=lambda x: x[0])
    if not records:
        raise ValueError("no videos to evaluate: the data source is empty")
    records = [r for _, r in records]
    frames_run = sum(r["frames"] for r in records)
    tds = [r["td"] for r in records]
    result = {"schedule": name, "dtype": dtype.name,
              **metrics.scores(sum(np.asarray(r["hist"], np.int64) for r in records))}
    band_hist = sum(np.asarray(r["band_hist"], np.int64) for r in records)
    result.update({f"bdry_{k}": v for k, v in metrics.scores(band_hist).items()})
    first = records[0]  # the first video's clock, for timeline plots
    result.update(
        temporal_diff=float(np.mean(tds)),
        temporal_diff_std=float(np.std(tds)),
        fired=np.concatenate([np.asarray(r["fired"]) for r in records]).mean(0).tolist(),
        flop_fraction=sum(r["spent"] for r in records) / frames_run,
        ms_per_frame=1e3 * sum(r["seconds"] for r in records) / frames_run,
        wall_s=wall,
        frames=frames_run,
        videos=len(records),
        timeline={"change": list(first["change"]),
                  "fired": [bool(f[-1]) for f in first["fired"]]},
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
