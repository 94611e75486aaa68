"""Scores clockwork schedules on labelled videos: the paper's metrics plus cost.

For each schedule: pixel acc / mean acc / mean IU / fw IU over one confusion
matrix summed across videos, the same on the boundary band, the temporal
difference of the predicted labels (mean and std across videos), the fraction of
frames each stage fired, the FLOP fraction of oracle and the measured ms/frame.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from cwfcn import clockwork, cost, metrics, model, results
from cwfcn.data import protocol
from cwfcn.data.prefetch import prefetch
from cwfcn.data.translate import SCORED_FRAMES

Video = tuple[np.ndarray, np.ndarray]  # frames uint8 RGB [T, H, W, 3], labels uint8 [T, H, W]


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A latency baseline of Tables 3 and 4: a truncated net, run whole on every frame.

    Attributes:
      name: "pool3" or "pool4" (`model.TRUNCATED_NAMES`).
      net: the separately trained `model.TruncatedFCN` (the paper's: voc-fcn-pool3 /
        voc-fcn-pool4); None stands in FCN-8s's own skip scores (`FCN8s.truncated`), and
        the row says so.
    """

    name: str
    net: nnx.Module | None = dataclasses.field(default=None, compare=False, hash=False)
    # The schedule attributes `protocol.kind` reads: a baseline keeps no state.
    theta: ClassVar[None] = None
    pipelined: ClassVar[bool] = False
    cycle: ClassVar[int] = 1

    def __post_init__(self):
        if self.name not in BASELINES:
            raise ValueError(f"unknown baseline {self.name!r}; use one of {sorted(BASELINES)}")
        if self.net is not None and getattr(self.net, "stages", None) != self.stages:
            raise ValueError(f"baseline {self.name} needs a model.TruncatedFCN with stages="
                             f"{self.stages}, got {type(self.net).__name__}")

    @property
    def stages(self) -> int:
        """The FCN-8s stages the baseline keeps."""
        return BASELINES[self.name]

    @property
    def label(self) -> str:
        """The row's name: the paper's baseline, or FCN-8s's skip scores standing in."""
        return self.name if self.net is not None else f"{self.name} (fcn8s)"


# The paper's latency baselines (Tables 3, 4) by name: how many FCN-8s stages each keeps.
BASELINES = model.TRUNCATED_STAGES


def as_schedule(spec) -> clockwork.Schedule | Baseline:
    """A schedule, a `Baseline`, or the name of either (a baseline's name: FCN-8s's own)."""
    if isinstance(spec, Baseline | clockwork.Schedule):
        return spec
    if isinstance(spec, str) and spec.strip().lower() in BASELINES:
        return Baseline(spec.strip().lower())
    return clockwork.parse_schedule(spec)


@functools.partial(jax.jit, static_argnames=("graphdef", "stages"))
def _whole_net_preds(params, frames, *, graphdef, stages: int | None) -> jax.Array:
    net = nnx.merge(graphdef, params)
    return jnp.argmax(net(frames) if stages is None else net.truncated(frames, stages), -1)


_argmax = jax.jit(functools.partial(jnp.argmax, axis=-1))


def _predict_baseline(net, frames, baseline: Baseline, dtype):
    """Class maps of a baseline net on every frame, a chunk of frames per call."""
    module, stages = (net, baseline.stages) if baseline.net is None else (baseline.net, None)
    graphdef, params = nnx.split(module)
    params = clockwork.cast_params(params, dtype)
    preds = [_whole_net_preds(params, jnp.asarray(frames[i : i + clockwork.DEFAULT_CHUNK], dtype),
                              graphdef=graphdef, stages=stages)
             for i in range(0, len(frames), clockwork.DEFAULT_CHUNK)]
    fired = np.zeros((len(frames), len(clockwork.staging_of(net).stages)), bool)
    fired[:, :baseline.stages] = True
    return jnp.concatenate(preds), fired, np.zeros(len(frames), np.float32)


def _predict(net, frames, schedule, stream, dtype):
    """`predict` with the class maps left where they are (device, or host for long videos)."""
    if isinstance(schedule, Baseline):
        return _predict_baseline(net, frames, schedule, dtype)
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
    net: nnx.Module, frames: jax.Array, schedule, stream: clockwork.Clockwork | None = None, *,
    dtype=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class maps of a video under a schedule.

    A video of up to `clockwork.DEFAULT_CHUNK` frames is one `clockwork.run`; a longer
    one runs chunk by chunk (`Clockwork.chunks`), same results, memory bounded by the
    chunk.

    Args:
      net: a staged net.
      frames: float32 `[T, H, W, 3]`, preprocessed.
      schedule: a schedule, a `Baseline`, or the name of either (`as_schedule`).
      stream: a `Clockwork(net, schedule)` to reuse (compiled once) for long videos.
      dtype: compute dtype ("float32" or "bfloat16"; see `clockwork.run`).

    Returns:
      preds int `[T, H, W]`, fired bool `[T, N]`, change float32 `[T]`.
    """
    preds, fired, change = _predict(net, frames, as_schedule(schedule), stream, dtype)
    return np.asarray(preds), fired, change


@functools.partial(jax.jit, static_argnames="num_classes")
def _video_stats(labels, band, scored, preds, lut, num_classes: int):
    """One clip's sufficient statistics, on the device.

    Args:
      labels: uint8 `[S, H, W]` of the scored frames; band: bool `[S, H, W]`, their
        boundary bands; scored: int32 `[S]`, their indices; preds: int `[T, H, W]`, the
        net's classes on every frame; lut: int32 `[K]`, net class -> scored class.

    Returns:
      confusion int32 `[C, C]`, the band's confusion int32 `[C, C]`, and the temporal
      difference of the (mapped) predictions (as `metrics.temporal_difference`).
    """
    preds = lut[preds]
    hist = metrics.confusion(labels, preds[scored], num_classes)
    band_labels = jnp.where(band, labels, metrics.IGNORE_LABEL)
    band_hist = metrics.confusion(band_labels, preds[scored], num_classes)
    changed = jnp.mean(preds[1:] != preds[:-1], axis=(1, 2))
    return hist, band_hist, jnp.sum(changed) / preds.shape[0]


def _clips(videos: Iterable[protocol.Clip | Video], scored: slice) -> Iterator[protocol.Clip]:
    """Clips as they come; a bare (frames, labels) video is a clip scoring `scored`."""
    for i, item in enumerate(videos):
        yield item if isinstance(item, protocol.Clip) else protocol.whole(*item, scored, str(i))


def _with_bands(clips: Iterable[protocol.Clip], radius: int, num_classes: int,
                skip: Callable[[int], bool]):
    """Checks the labels and adds the boundary bands of the scored ones (host work, done
    in the decode thread); clips `skip` names are passed over (None)."""
    for index, clip in enumerate(clips):
        if skip(index):
            yield None
            continue
        metrics.check_labels(clip.labels, num_classes)
        labels = clip.labels[list(clip.scored)]
        bands = np.stack([metrics.boundary_mask(lab, radius) for lab in labels])
        yield clip, labels, bands


def _on_host(record: dict) -> dict:
    """A clip's record with its device statistics fetched: plain JSON-able values."""
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


@dataclasses.dataclass
class _Costs:
    """What one frame shape costs, counted once: per-frame FLOPs of what a schedule runs
    (executed and dense, as fractions of the full net's) and the pipelines' modelled
    latency."""

    executed: cost.StageFlops
    dense: cost.StageFlops
    baseline: tuple[float, float] | None  # a baseline net's (executed, dense) fraction
    latency: tuple[float, float] | None  # a pipeline's (dense FLOPs, measured time) model

    @classmethod
    def count(cls, net, frame_shape, schedule, dtype) -> _Costs:
        executed = cost.stage_flops(net, frame_shape)
        dense = cost.stage_flops(net, frame_shape, dense=True)
        baseline = latency = None
        if isinstance(schedule, Baseline):
            module = net if schedule.net is None else schedule.net
            stages = schedule.stages if schedule.net is None else None
            baseline = tuple(
                cost.net_flops(module, frame_shape, _baseline_call(stages, dense=d),
                               dense=d) / full.total
                for d, full in ((False, executed), (True, dense)))
        elif schedule.pipelined:
            seconds = cost.stage_seconds(net, frame_shape, dtype)
            latency = tuple(cost.pipeline_latency(schedule.lags, c.stages, c.fuse)
                            for c in (dense, seconds))
        return cls(executed, dense, baseline, latency)

    def spent(self, fired: np.ndarray) -> tuple[float, float]:
        """(executed, dense) FLOPs spent on a clip, in full-net frames."""
        if self.baseline is not None:
            return tuple(f * len(fired) for f in self.baseline)
        return tuple(cost.flop_fraction(fired, c) * len(fired) for c in (self.executed,
                                                                          self.dense))


def _baseline_call(stages: int | None, *, dense: bool):
    """`call(module, frames)` of a baseline for `cost.net_flops`: a TruncatedFCN (stages
    None) or FCN-8s cut after `stages`."""
    if stages is None:
        return lambda m, f: m(f, dense=dense)
    return lambda m, f: m.truncated(f, stages, dense=dense)


def evaluate_schedule(
    net: nnx.Module,
    videos: Iterable[protocol.Clip | Video],
    schedule,
    *,
    mean_bgr: Sequence[float],
    scored: slice = SCORED_FRAMES,
    boundary_radius: int = 5,
    pred_lut: Sequence[int] | None = None,
    dtype=None,
    journal: results.Journal | None = None,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Runs one schedule over every clip and scores it.

    Decoding, the label check and the boundary bands run in a background thread, ahead
    of the net; the confusion matrices and temporal differences are computed on the
    device and fetched once at the end, so the host never waits on metrics.

    Args:
      net: a staged net with `num_classes` (e.g. `model.FCN8s`).
      videos: the clips the protocol runs for this schedule (`sources.Source.clips`), in a
        fixed order; a plain (frames uint8 RGB `[T, H, W, 3]`, labels uint8 `[T, H, W]`,
        255 = ignore) video is a clip scoring `scored` of its frames.
      schedule: a schedule, a `Baseline`, or the name of either (`as_schedule`).
      mean_bgr: the data set's mean (`model.MEAN_BGR`).
      scored: the frames scored of plain videos (clips name their own).
      boundary_radius: radius of the boundary band.
      pred_lut: the net's class -> the labels' class (YouTube-Objects: VOC's 21 -> 11);
        None when the net predicts the label classes.
      dtype: compute dtype ("float32" or "bfloat16").
      journal: where each clip's results go as soon as it is done (then fetched per
        clip); clips it already holds for this schedule are not run again. Records are
        keyed by clip index, so with `shard` each process keeps its own journal.
      shard: (process index, process count) of a multi-process run (`jax.process_index()`,
        `jax.process_count()`): this process runs only clips i with i % count == index
        (the others are not checked or banded), then the per-clip records of every
        process are gathered, so every process returns the metrics of one process
        running them all (wall_s: the slowest process's).

    Returns:
      A flat dict of metrics (see the module docstring). ms/frame times the net (with
      the argmax) over every frame run; wall_s is the whole loop, decode and metrics
      included; neither counts compiling. `fired` is over every frame run, `fired_ref`
      over the frames the protocol's reference counts.

    Raises:
      ValueError: no clips, labels outside [0, C) other than 255, or a `shard` that is
        not (an index, `jax.process_count()`).
    """
    part, parts = shard or (0, 1)
    if shard is not None and (parts != jax.process_count() or not 0 <= part < parts):
        raise ValueError(f"shard {shard} is not (process index, {jax.process_count()} processes)")
    schedule = as_schedule(schedule)
    is_baseline = isinstance(schedule, Baseline)
    name = schedule.label if is_baseline else schedule.name
    dtype = clockwork.compute_dtype(dtype)
    lut = np.arange(net.num_classes) if pred_lut is None else np.asarray(pred_lut)
    if len(lut) != net.num_classes:
        raise ValueError(f"pred_lut maps {len(lut)} classes but the net predicts "
                         f"{net.num_classes}")
    c = int(lut.max()) + 1 if pred_lut is not None else net.num_classes
    lut = jnp.asarray(lut, jnp.int32)
    costs: dict[tuple, _Costs] = {}
    stream = None if is_baseline else clockwork.Clockwork(net, schedule, dtype=dtype)

    def journalled(index: int) -> dict | None:
        return None if journal is None else journal.get(name, index)

    def ours(index: int) -> bool:
        return index % parts == part

    records = []  # (clip index, record)
    wall, compiling = time.perf_counter(), 0.0
    decoded = _with_bands(_clips(videos, scored), boundary_radius, c,
                          lambda i: not ours(i) or journalled(i) is not None)
    with prefetch(decoded) as decoded:
        for index, item in enumerate(decoded):
            if item is None:
                if ours(index):
                    records.append((index, journalled(index)))
                continue
            clip, labels, bands = item
            frames = model.preprocess(clip.frames, mean_bgr)
            idx = jnp.asarray(clip.scored, jnp.int32)
            if frames.shape not in costs:  # compile outside the timed region
                start = time.perf_counter()
                preds = _predict(net, frames, schedule, stream, dtype)[0]
                _video_stats(labels, bands, idx, preds, lut, c)[0].block_until_ready()
                costs[frames.shape] = _Costs.count(net, frames.shape[1:], schedule, dtype)
                compiling += time.perf_counter() - start
            start = time.perf_counter()
            preds, fired, change = _predict(net, frames, schedule, stream, dtype)
            jax.block_until_ready(preds)
            shape_costs = costs[frames.shape]
            record = {
                "stats": _video_stats(labels, bands, idx, preds, lut, c),
                "fired": fired, "change": change, "frames": len(frames),
                "seconds": time.perf_counter() - start,
                "spent": shape_costs.spent(fired),
                "fired_ref": np.asarray(fired)[list(clip.counted)].sum(0),
                "denominator": clip.denominator,
                "latency": shape_costs.latency or (),
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
        raise ValueError("no clips to evaluate: the data source is empty")
    return _aggregate(name, schedule, dtype, [r for _, r in records], wall)


def _aggregate(name: str, schedule, dtype, records: list[dict], wall: float) -> dict:
    """The table's row from the clips' records."""
    frames_run = sum(r["frames"] for r in records)
    result = {"schedule": name, "kind": protocol.kind(schedule), "dtype": dtype.name,
              **metrics.scores(sum(np.asarray(r["hist"], np.int64) for r in records))}
    band_hist = sum(np.asarray(r["band_hist"], np.int64) for r in records)
    result.update({f"bdry_{k}": v for k, v in metrics.scores(band_hist).items()})
    tds = [r["td"] for r in records if r["frames"] > 1]  # a 1-frame clip has no change
    spent = np.sum([r["spent"] for r in records], axis=0)
    timed = [r for r in records if r["latency"]]  # pipelines: (dense FLOPs, time) models

    def latency(i: int) -> float | None:  # frame-weighted over the clips
        return (float(np.average([r["latency"][i] for r in timed],
                                 weights=[r["frames"] for r in timed])) if timed else None)

    first = records[0]  # the first clip's clock, for timeline plots
    result.update(
        temporal_diff=float(np.mean(tds)) if tds else None,
        temporal_diff_std=float(np.std(tds)) if tds else None,
        fired=np.concatenate([np.asarray(r["fired"]) for r in records]).mean(0).tolist(),
        fired_ref=(np.sum([r["fired_ref"] for r in records], axis=0)
                   / max(sum(r["denominator"] for r in records), 1)).tolist(),
        flop_fraction=float(spent[0]) / frames_run,
        flop_fraction_dense=float(spent[1]) / frames_run,
        latency_model_flops=latency(0),
        latency_model_time=latency(1),
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
    """The paper-style results table, one row per schedule.

    "S3 ref" is the last stage's fraction fired as the data set's reference counts it;
    "FLOP frac" counts what XLA executes, "dense" the Caffe net (`cost`); "lat model" is a
    pipeline's step latency as the paper models it, from the measured stage times.
    """
    def num(fmt: str):
        return lambda v: "-" if v is None else fmt.format(v)

    pct = num("{:.1f}")
    cols = [
        ("schedule", 15, str), ("pix acc", 8, pct), ("mean acc", 9, pct), ("mean IU", 8, pct),
        ("fw IU", 7, pct), ("IU-bdry", 8, pct), ("fwIU-bdry", 10, pct),
        ("temp diff", 10, num("{:.3f}")), ("fired S1/S2/S3", 16, str), ("S3 ref", 7, str),
        ("FLOP frac", 10, num("{:.2f}")), ("dense", 6, num("{:.2f}")),
        ("ms/frame", 9, num("{:.1f}")), ("time frac", 10, num("{:.2f}")),
        ("lat model", 10, num("{:.2f}")),
    ]
    lines = ["".join(f"{name:>{w}}" if i else f"{name:<{w}}" for i, (name, w, _) in
                     enumerate(cols))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        ref = r.get("fired_ref")
        values = [
            r["schedule"], *(None if r[k] is None else 100 * r[k] for k in (
                "pixel_acc", "mean_acc", "mean_iu", "fw_iu", "bdry_mean_iu", "bdry_fw_iu")),
            r["temporal_diff"], "/".join(f"{f:.2f}" for f in r["fired"]),
            "-" if ref is None else f"{ref[-1]:.2f}", r["flop_fraction"],
            r.get("flop_fraction_dense"), r["ms_per_frame"], r.get("time_fraction"),
            r.get("latency_model_time"),
        ]
        lines.append("".join(
            (f"{fmt(v):<{w}}" if i == 0 else f"{fmt(v):>{w}}")
            for i, ((_, w, fmt), v) in enumerate(zip(cols, values, strict=True))))
    return "\n".join(lines)
