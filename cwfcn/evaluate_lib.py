"""What evaluate.py and the notebook share: the nets, the schedules run into rows, the outputs.

`evaluate.py` parses its flags and calls `evaluate`, the whole job; the notebook calls the
pieces (`load_net`, `run_schedules`, `write_plots`, `write_overlay`). Every piece takes
explicit arguments (no flags), so tests call them as the entry points do.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from cwfcn import (
    calibrate,
    checkpoint,
    clockwork,
    config_check,
    control,
    cost,
    durable,
    estimate,
    evaluation,
    live,
    model,
    plots,
    provenance,
    results,
    schedules,
    train_lib,
    weights,
)
from cwfcn.data import datasets, protocol, samples, sources, stream, video

_VIDEO = "video:"  # the --data prefix of a video file or stream
MAX_REPEATS = 100  # timed runs of each clip: each costs the whole evaluation's time again


def _say(message: str) -> None:
    """A progress line for the person running the job (stderr: stdout holds the table)."""
    print(message, file=sys.stderr)


def model_cache_dir(config: ml_collections.ConfigDict,
                    environ: Mapping[str, str] = os.environ) -> Path:
    """Where the config's own model is trained once and cached: keyed by the config.

    Args:
      config: the model's config; its JSON (sorted keys) is hashed, so any change to it
        is another model.
      environ: where `CWFCN_CACHE` is read (`samples.resolve_cache_dir`).

    Returns:
      `<cache>/models/<first 12 hex digits of the config's sha256>`.
    """
    key = hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:12]
    return samples.resolve_cache_dir(None, environ) / "models" / key


def load_net(config: ml_collections.ConfigDict, path: str | None,
             mean_bgr: Sequence[float], environ: Mapping[str, str] = os.environ
             ) -> tuple[nnx.Module, str]:
    """The net to evaluate and a line saying where its weights came from.

    Args:
      config: the net's config (`train_lib.build_net`).
      path: an orbax checkpoint directory (train.py --workdir) or a weight file
        (`weights.load`); None: the config's own model, trained once into
        `model_cache_dir` and reused afterwards.
      mean_bgr: the data set's mean, BGR (a Caffe net's weights may need it).
      environ: where `CWFCN_CACHE` is read.

    Returns:
      The net and where its weights came from (for the log and the results file).

    Raises:
      ValueError: a multi-process run without a cached model (it does not train), or
        weights that do not fit the net.
      OSError: a missing or unreadable file.
    """
    if path:
        net = train_lib.build_net(config, nnx.Rngs(config.seed))
        if os.path.isdir(path):
            step = checkpoint.load_params(path, net)
            return net, f"checkpoint {path} (step {step})"
        report = weights.load(net, path, mean_bgr=mean_bgr)
        return net, f"weights {path}: {report}"
    workdir = model_cache_dir(config, environ)
    done = checkpoint.latest_step(workdir) or 0
    if jax.process_count() > 1 and done < config.train.steps:
        raise ValueError(f"the config's model is not cached in {workdir} and a multi-host run "
                         "does not train: pass --checkpoint (from train.py --workdir), or run "
                         "evaluate.py once as a single process to train and cache it")
    if done < config.train.steps:  # say why the first run takes minutes, before it does
        minutes = config.train.get("expected_minutes", 0.0)
        about = f"about {minutes:.2g} minutes on 2 CPU cores, " if minutes and not done else ""
        _say(f"no --checkpoint: training the config's model once ({about}steps left: "
             f"{config.train.steps - done}, batch {config.train.batch_size}; the bar shows "
             f"the time to go), cached in {workdir} for every later run")
    net, trained = train_lib.ensure_trained(config, str(workdir))
    how = "trained now" if trained else "trained earlier"
    return net, f"no --checkpoint: the config's own model, {how}, cached in {workdir}"


def parse_baselines(spec: str | None) -> dict[str, str]:
    """"pool3=A,pool4=B" -> {"pool3": "A", "pool4": "B"}.

    Raises:
      ValueError: an item that is not NAME=FILE with NAME a truncated baseline.
    """
    if not spec:
        return {}
    paths = {}
    for item in spec.split(","):
        name, sep, path = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in clockwork.BASELINES or not path.strip():
            raise ValueError(f"bad --baselines {spec!r}: use NAME=FILE pairs with NAME one of "
                             f"{sorted(clockwork.BASELINES)}, e.g. pool4=voc-fcn-pool4.caffemodel")
        paths[name] = path.strip()
    return paths


def load_baselines(config: ml_collections.ConfigDict, paths: Mapping[str, str],
                   mean_bgr: Sequence[float]) -> dict[str, tuple[nnx.Module, str]]:
    """The truncated baselines' own nets, each loaded from its file or checkpoint.

    Args:
      config: the FCN-8s config; each baseline's is a copy for its arch
        (`train_lib.with_arch`).
      paths: baseline name -> weights (`parse_baselines`).
      mean_bgr: the data set's mean, BGR.

    Returns:
      Baseline name -> (its `model.TruncatedFCN`, where its weights came from).
    """
    return {name: load_net(train_lib.with_arch(config, name), path, mean_bgr)
            for name, path in paths.items()}


def calibrated_theta(net: nnx.Module, source: sources.Source, rate: float,
                     frames: int | None = None) -> float:
    """Theta for a target firing rate of the last stage, without labels.

    Args:
      net: the net evaluated.
      source: the data set.
      rate: the target fraction of frames, in (0, 1].
      frames: None: over the whole data set's adaptive clips, counted as its reference
        counts them (as the paper tuned it); N: on the first N frames of the first video
        (a live stream's start).

    Returns:
      The threshold.
    """
    if frames is not None:
        first = source.first_frames(frames)
        maps = calibrate.clock_maps(net, model.preprocess(first, source.mean_bgr))
        return calibrate.theta_for_rate(maps, rate)
    clips = source.clips(clockwork.parse_schedule("adaptive"))
    return calibrate.theta_for_rate_over(calibrate.clip_runs(net, clips, source.mean_bgr), rate)


def rate_for_budget(net: nnx.Module, source: sources.Source, target_ms: float,
                    dtype=None) -> float:
    """The last stage's firing rate that a per-frame budget of `target_ms` affords, from
    the stages' measured times on the first video's frame size (`cost.stage_seconds`,
    `control.rate_for_ms`).

    Raises:
      ValueError: a budget below what the stages before the last cost on their own.
    """
    return _rate_for_ms(net, tuple(source.first_frames(1).shape[1:]), target_ms, dtype)


def _rate_for_ms(net: nnx.Module, frame_shape: tuple[int, int, int], target_ms: float,
                 dtype=None) -> float:
    """`control.rate_for_ms` from the stages' times on frames of `frame_shape`, said."""
    took = cost.stage_seconds(net, tuple(frame_shape), dtype)
    full_ms = 1e3 * (sum(took.stages) + took.fuse)
    cheap_ms = full_ms - 1e3 * took.stages[-1]
    rate = control.rate_for_ms(target_ms, full_ms, cheap_ms)
    _say(f"target {target_ms:g} ms/frame: {full_ms:.1f} ms with S{len(took.stages)}, "
         f"{cheap_ms:.1f} ms without, so S{len(took.stages)} fires on {rate:.3f} of the frames")
    return rate


def with_budgets(to_run: Sequence[clockwork.Schedule], rate: float, window: int,
                 tolerance: float) -> list[clockwork.Schedule]:
    """The schedules, each adaptive one followed by itself under a budget of `rate` over
    `window` frames (`schedules.with_budget`): the open-loop clock and the closed loop
    from the same starting theta, side by side."""
    out = []
    for s in to_run:
        out.append(s)
        if s.theta is not None and s.target_rate is None:
            out.append(schedules.with_budget(s, rate, window, tolerance))
    return out


def budget_report(rows: Sequence[dict], target_rate: float) -> str:
    """What the adaptive rows achieved against the target: the last stage's rate as the
    reference counts it, its range over windows (`aggregate`'s window_rate), and each
    budget row's mean IU against the open-loop row before it."""
    parts, before = [], None
    for row in rows:
        if row["kind"] != "adaptive":
            continue
        windows = row.get("window_rate") or {}
        span = (f" (windows of {windows['window']}: {windows['min']:.2f}-{windows['max']:.2f})"
                if windows.get("min") is not None else "")
        cost_of = ""
        if row["params"].get("target_rate") is not None and before is not None and all(
                r["mean_iu"] is not None for r in (row, before)):  # None: unlabelled
            cost_of = f", mean IU {100 * (row['mean_iu'] - before['mean_iu']):+.1f} vs fixed"
        parts.append(f"{row['schedule']} {row['fired_ref'][-1]:.3f}{span}{cost_of}")
        before = row
    return f"target rate {target_rate:.3f}: achieved " + "; ".join(parts)


def _baseline_net(schedule: clockwork.Schedule,
                  baseline_nets: Mapping[str, nnx.Module]) -> nnx.Module | None:
    """The separately trained net of a truncated baseline, where one is given."""
    return baseline_nets.get(schedule.name) if schedule.keep is not None else None


def run_schedules(
    net: nnx.Module,
    source: sources.Source,
    schedules: Sequence[clockwork.Schedule],
    *,
    phase: str | None = None,
    boundary_radius: int = 5,
    dtype=None,
    baseline_nets: Mapping[str, nnx.Module] | None = None,
    journal: results.Journal | None = None,
    shard: tuple[int, int] | None = None,
    on_first_clip: Callable[[protocol.Clip, np.ndarray, np.ndarray], None] | None = None,
    repeats: int = 1,
) -> list[dict]:
    """The table's rows: each schedule over the clips the data set's protocol gives it, the
    schedules interleaved video by video (`evaluation.evaluate_schedules`).

    Args:
      net: the net evaluated.
      source: the data set (its clips, mean and class mapping).
      schedules: the schedules, in table order (`schedules.parse_schedules`).
      phase: the phase policy of fixed schedules (None: the data set's default).
      boundary_radius: radius of the boundary band.
      dtype: compute dtype ("float32" or "bfloat16").
      baseline_nets: truncated baseline name -> its own net; the others use FCN-8s's
        skip scores (`evaluation.row_name`).
      journal, shard, repeats: as `evaluation.evaluate_schedule`.
      on_first_clip: `evaluation.evaluate_schedule`'s, for the last schedule.

    Returns:
      One row per schedule (`evaluation.aggregate`), with `phase` (the fixed schedules'
      phase policy, None for the others) and `time_fraction` (`evaluation.add_speedups`).
    """
    phase = source.check_phase(phase)
    rows = evaluation.evaluate_schedules(
        net, [source.clips(schedule, phase, shard=shard) for schedule in schedules], schedules,
        mean_bgr=source.mean_bgr, boundary_radius=boundary_radius, pred_lut=source.pred_lut,
        dtype=dtype, baseline_nets=[_baseline_net(s, baseline_nets or {}) for s in schedules],
        journal=journal, shard=shard, on_first_clip=on_first_clip, repeats=repeats,
        videos=len(source.videos))
    for row in rows:
        row["phase"] = phase if row["kind"] == "fixed" else None
    return evaluation.add_speedups(rows)


def write_plots(folder: str | os.PathLike, rows: Sequence[dict], title: str = "") -> list[str]:
    """The trade-off (Fig. 6) of the adaptive rows against the others, the first adaptive
    row's clock frame by frame (timeline), with several adaptive rows, their clocks
    side by side on the first video (Fig. 7), and every row's mean IU by the frames since
    the last stage fired (iu_by_age; rows without `mean_iu_by_age` are left out).

    Args:
      folder: where the PNGs go (created if missing).
      rows: rows of `run_schedules`.
      title: the plots' title (the data set).

    Returns:
      The paths written.
    """
    os.makedirs(folder, exist_ok=True)
    sweep = [r for r in rows if r["kind"] == "adaptive"]
    fixed = [r for r in rows if r["kind"] != "adaptive"]
    paths = [plots.plot_tradeoff(os.path.join(folder, "tradeoff.png"), sweep, fixed)]
    for r in sweep[:1]:
        paths.append(plots.plot_timeline(
            os.path.join(folder, "timeline.png"), np.asarray(r["timeline"]["change"]),
            np.asarray(r["timeline"]["fired"]), plots.sweep_theta(r),
            title=f"{title}: {r['schedule']}" if title else r["schedule"]))
    if len(sweep) > 1:
        paths.append(plots.plot_clocks(
            os.path.join(folder, "clocks.png"),
            {r["schedule"]: r["timeline"]["fired"] for r in sweep}, title=title))
    aged = [r for r in rows if r.get("mean_iu_by_age")]
    if aged:
        paths.append(plots.plot_iu_by_age(os.path.join(folder, "iu_by_age.png"), aged,
                                          title=title))
    return paths


def class_names(config: ml_collections.ConfigDict, data: str,
                num_classes: int) -> tuple[str, ...] | None:
    """The names of the classes an overlay of `--data data` shows, index order: its data
    set's (the config's data set's where the data takes the config's classes, as video:
    does), or None when they are not `num_classes` names (a net of other classes)."""
    head = data.strip().partition(":")[0].lower()
    record = datasets.registry().get(head)
    if record is None or head not in record.videos or record.videos[head].config_classes:
        record = datasets.get(config.data.name)
    return tuple(record.classes) if len(record.classes) == num_classes else None


class _Overlay:
    """The overlay video, written as the class maps come (`ClipScorer.score`'s `on_maps`):
    part by part, nothing held (`video.OverlayWriter`; a plain file, not a live run's
    fragmented one). A write that fails stops the writing and is kept, raised by `close`:
    the evaluation goes on, and its results are not lost to the video."""

    def __init__(self, path: str | os.PathLike, source: sources.Source,
                 class_names: Sequence[str] | None, fps: float):
        self.path, self.lut, self.fps = path, source.pred_lut, fps
        self.num_classes, self.class_names = source.num_classes, class_names
        self.writer, self.error, self.frames = None, None, 0

    def __call__(self, frames: np.ndarray, maps: np.ndarray, fired: np.ndarray) -> None:
        if self.error is not None:
            return
        try:
            if self.writer is None:
                self.writer = video.OverlayWriter(
                    self.path, num_classes=self.num_classes, class_names=self.class_names,
                    num_stages=fired.shape[1], fps=self.fps, streaming=False)
            maps = maps if self.lut is None else np.asarray(self.lut)[maps]
            for frame, label, last in zip(frames, maps, fired[:, -1], strict=True):
                self.writer.write(frame, label, fired=bool(last))
                self.frames += 1
        except (ValueError, OSError) as e:
            self.error = e

    def close(self) -> int:
        """Closes the file; returns the frames written.

        Raises:
          ValueError, OSError: a write that failed.
        """
        if self.writer is not None:
            try:
                self.writer.close()
            except (ValueError, OSError) as e:
                self.error = self.error or e  # the first failure is the news
        if self.error is not None:
            raise self.error
        return self.frames


def write_overlay(path: str | os.PathLike, net: nnx.Module, source: sources.Source,
                  schedule: clockwork.Schedule, *, baseline_net: nnx.Module | None = None,
                  fps: float = 25.0, class_names: Sequence[str] | None = None) -> int:
    """The first clip's segmentation under `schedule`, run now and blended over its frames
    as it goes, with a mark where the last stage fired ("SN fired") and a legend
    (`video.OverlayWriter`). A video file is run part by part, never held whole.

    Args:
      path: the video file to write.
      net: the net evaluated.
      source: the data set (its first clip, mean and class mapping).
      schedule: the schedule.
      baseline_net: a truncated baseline's own net (`evaluation.ClipScorer`).
      fps: frames per second of the video.
      class_names: the legend's names (`class_names`); None: colour squares only.

    Returns:
      The number of frames written.
    """
    overlay = _Overlay(path, source, class_names, fps)
    clip = next(source.clips(schedule))
    if isinstance(clip, protocol.Clip):
        clip = evaluation.label_clip(clip, source.num_classes)
    evaluation.ClipScorer(net, schedule, mean_bgr=source.mean_bgr, pred_lut=source.pred_lut,
                          baseline_net=baseline_net).score(clip, overlay)
    return overlay.close()


def _parse_options(config, schedule: str, theta: str, target_rate: float | None,
                   calibration_frames: int | None, repeats: int = 1,
                   target_ms: float | None = None, rate_window: int = 0,
                   rate_tolerance: float = schedules.DEFAULT_TOLERANCE) -> list[float]:
    """The theta sweep, once the options are checked: ValueError for a bad one, or for
    options that cannot go together, before any work."""
    config_check.check(config)
    if config.model.arch != "fcn8s":
        raise ValueError(f"evaluate.py runs FCN-8s's schedules, and config.model.arch is "
                         f"{config.model.arch!r}: pass an FCN-8s config, and the baseline's "
                         f"weights with --baselines {config.model.arch}=FILE")
    thetas = schedules.parse_thetas(theta)
    if target_rate is not None and not 0.0 < target_rate <= 1.0:
        raise ValueError(f"--target_rate must be in (0, 1], got {target_rate}: pick the "
                         "fraction of frames on which S3 should fire, e.g. 0.5")
    if target_ms is not None and target_rate is not None:
        raise ValueError("--target_ms and --target_rate both set the rate: give one")
    if target_ms is not None and not target_ms > 0:  # also rejects nan
        raise ValueError(f"--target_ms must be a positive time per frame in milliseconds, got "
                         f"{target_ms}")
    if rate_window < 0:
        raise ValueError(f"--rate_window must be >= 0 frames (0: no controller), got "
                         f"{rate_window}")
    if rate_window and target_rate is not None:  # the budget's own check, before any work
        schedules.parse_schedule(f"adaptive@{target_rate}/{rate_window}/{rate_tolerance}")
    named = schedules.parse_schedules(schedule, thetas)  # bad names fail before any work
    if (target_rate is not None or target_ms is not None) and any(
            s.signal == "pixels" and s.theta is not None for s in named):
        raise ValueError("--target_rate and --target_ms calibrate the score_pool4 clock "
                         "(adaptive) only: give the pixel clock its threshold and budget, e.g. "
                         "adaptive-pixel:0.02@0.5")
    if calibration_frames is not None and calibration_frames < 1:
        raise ValueError(f"--calibration_frames must be >= 1, got {calibration_frames}")
    targeted = target_rate is not None or target_ms is not None
    if calibration_frames is not None and not targeted:  # else silently unused
        raise ValueError("--calibration_frames calibrates --target_rate (or --target_ms) on the "
                         "first frames: give one of them too, or drop it")
    if targeted and len(thetas) > 1:  # the target would silently replace the sweep
        raise ValueError(f"--theta {theta!r} is a sweep of {len(thetas)} thetas, and "
                         "--target_rate (or --target_ms) picks one theta itself: give the sweep "
                         "or the target, not both")
    if not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"--repeats must be in [1, {MAX_REPEATS}] (timed runs of each clip, "
                         f"each the whole data set's time again), got {repeats}")
    return thetas


def evaluate(
    config: ml_collections.ConfigDict,
    *,
    schedule: str = "adaptive",
    theta: str = str(clockwork.DEFAULT_THETA),
    data: str = "sample",
    data_dir: str | None = None,
    checkpoint_path: str | None = None,
    baselines: str | None = None,
    phase: str | None = None,
    target_rate: float | None = None,
    calibration_frames: int | None = None,
    max_frames: int | None = None,
    dtype: str = "float32",
    plot: str | None = None,
    video_out: str | None = None,
    output: str | None = None,
    repeats: int = 1,
    target_ms: float | None = None,
    rate_window: int = schedules.DEFAULT_WINDOW,
    rate_tolerance: float = schedules.DEFAULT_TOLERANCE,
    live: bool = False,
) -> list[dict]:
    """The whole evaluate.py job: the table printed, the outputs written.

    A live source (--data video:URL, video:/dev/videoN, video:-), or `live` on a video
    file, runs the live path instead (`evaluate_live`: frame by frame, latency).

    The arguments are evaluate.py's flags (see its --help). Bad input raises ValueError
    or OSError before any work, every output path included (`check_outputs`); a plot or
    video that still fails at the end raises OSError naming it, once the results JSON and
    the other output are written. In a multi-process run (after
    `distributed.initialize`) process i reads and runs the clips of videos i, i + P, ...;
    process 0 alone prints the table and writes the outputs.

    Returns:
      The rows (`run_schedules`), on every process.
    """
    started = time.perf_counter()
    process, processes = jax.process_index(), jax.process_count()
    shard = (process, processes) if processes > 1 else None
    thetas = _parse_options(config, schedule, theta, target_rate, calibration_frames, repeats,
                            target_ms, rate_window, rate_tolerance)
    for flag, value in (("--output", output), ("--checkpoint", checkpoint_path), ("--plot", plot),
                        ("--video_out", video_out), ("--data_dir", data_dir)):
        if value is not None and not value.strip():  # else taken as not given
            raise ValueError(f"{flag} is empty: give a path, or leave the flag out")
    check_outputs(output, plot, video_out)
    if live or is_live_data(data):
        return evaluate_live(
            config, schedule=schedule, thetas=thetas, data=data, checkpoint_path=checkpoint_path,
            dtype=dtype, max_frames=max_frames, video_out=video_out, output=output,
            target_rate=target_rate, target_ms=target_ms, rate_window=rate_window,
            rate_tolerance=rate_tolerance, baselines=baselines, plot=plot)
    baseline_paths = parse_baselines(baselines)
    if max_frames is not None and not data.strip().lower().startswith(_VIDEO):
        raise ValueError(f"--max_frames reads at most N frames of a video (--data video:PATH, "
                         f"or a live run), and {data!r} is not one: drop it")
    source = sources.open_source(data, data_dir=data_dir, config=config, max_frames=max_frames)
    phase = source.check_phase(phase)
    if source.net_classes != datasets.net_classes(config):
        raise ValueError(f"data {source.name!r} needs a net of {source.net_classes} classes but "
                         f"the config's has {datasets.net_classes(config)}: pass a config for "
                         "this data set (--config configs/...)")
    net, origin = load_net(config, checkpoint_path, source.mean_bgr)
    _say(f"device: {jax.devices()[0].platform}; data: {source.name} ({source.protocol}; "
         f"phase {phase}); net: FCN-8s ({config.model.widths}), {origin}")
    baseline_nets = {}
    for name, (baseline, baseline_origin) in load_baselines(config, baseline_paths,
                                                            source.mean_bgr).items():
        _say(f"baseline {name}: {baseline_origin}")
        baseline_nets[name] = baseline
    if target_ms is not None:
        target_rate = rate_for_budget(net, source, target_ms, dtype)
    if target_rate is not None:
        thetas = [calibrated_theta(net, source, target_rate, calibration_frames)]
        _say(f"target rate {target_rate:.3f}: theta = {thetas[0]:.4f}")
    to_run = schedules.parse_schedules(schedule, thetas)
    if target_rate is not None and rate_window:  # each calibrated clock, then it held
        to_run = with_budgets(to_run, target_rate, rate_window, rate_tolerance)
    _say(f"{len(to_run)} schedules ({', '.join(s.name for s in to_run)}) over "
         f"{len(source.videos)} videos")
    journal = None
    if output:  # per-clip results, so that a killed run resumes where it stopped
        # Keyed by content, not paths or how the weights came (trained now or earlier): a
        # file replaced at the same path starts over, a rerun of the same net resumes.
        job = json.dumps([config.to_dict(), source.name, data_fingerprint(data, data_dir),
                          weights_digest(net), {k: weights_digest(b) for k, b in
                                                baseline_nets.items()},
                          dtype, max_frames, phase, repeats, evaluation.RECORD_FORMAT],
                         sort_keys=True, default=str)
        part = f".p{process}" if processes > 1 else ""  # each process's own clips
        journal = results.Journal(f"{output}{part}.partial.jsonl", job)
        if len(journal):
            _say(f"resuming: {len(journal)} clips done earlier ({journal.path})")
    guess = estimate.for_source(net, source, to_run, phase=phase, dtype=dtype, repeats=repeats,
                                shard=shard, done=len(journal) if journal is not None else 0)
    if guess is not None:
        _say(estimate.describe(guess))
    load_s = time.perf_counter() - started  # the data listed, the nets loaded or trained
    names = class_names(config, data, source.num_classes)
    # The last schedule's first clip, written as it is scored (part by part for a file).
    scored_overlay = _Overlay(video_out, source, names, 25.0) if video_out else None
    rows = run_schedules(net, source, to_run, phase=phase,
                         boundary_radius=config.clock.boundary_radius, dtype=dtype,
                         baseline_nets=baseline_nets, journal=journal, shard=shard,
                         repeats=repeats, on_first_clip=scored_overlay)
    if process != 0:  # process 0 alone reports
        if journal is not None:
            journal.remove()
        return rows
    print(evaluation.format_table(rows))
    compile_s = sum(r["compile_s"] for r in rows)
    _say(f"time: {load_s:.1f} s loading the data and the net, {compile_s:.1f} s compiling, "
         f"{sum(r['wall_s'] for r in rows):.1f} s running and scoring")
    if target_rate is not None:
        _say(budget_report(rows, target_rate))
    if output:  # first: a plot or video that fails later never loses the results
        results.write_json(output, {
            "config": config.to_dict(), "data": source.name, "protocol": source.protocol,
            "phase": phase, "weights": origin, "baselines": baseline_paths,
            "dtype": dtype, "target_rate": target_rate, "target_ms": target_ms,
            **provenance.record(),
            "timing": {"load_s": load_s, "compile_s": compile_s,
                       "wall_s": time.perf_counter() - started},
            "results": rows})
        journal.remove()

    def overlay() -> None:
        frames = scored_overlay.close()
        if not frames:  # its clip came from the journal: run it now
            frames = write_overlay(video_out, net, source, to_run[-1],
                                   baseline_net=_baseline_net(to_run[-1], baseline_nets),
                                   class_names=names)
        _say(f"video: {video_out} ({frames} frames, {rows[-1]['schedule']})")

    failed = []  # each output on its own: one that fails does not stop the next
    for flag, path, write in (
            ("--plot", plot, lambda: _say("plots: " + ", ".join(write_plots(plot, rows,
                                                                          source.name)))),
            ("--video_out", video_out, overlay)):
        if path:
            try:
                write()
            except (ValueError, OSError) as e:
                failed.append(f"{flag} {path!r}: {e}")
    if failed:
        kept = f"; the results were written to {output}" if output else ""
        raise OSError(f"cannot write {'; '.join(failed)}{kept}")
    return rows


def check_outputs(output: str | None, plot: str | None, video_out: str | None) -> None:
    """Checks every output before any work, so a bad path fails in seconds, not after the
    run: the results and video files must be absent or regular files in a writable
    directory (`results.check_writable`), the plot folder a directory that is, or can be
    made, writable.

    Raises:
      OSError, ValueError: naming the flag, the path and the fix.
    """
    if output is not None:
        results.check_writable(output)
    if video_out is not None:
        results.check_writable(video_out, what="the video")
    if plot is not None:
        folder = os.path.abspath(plot)
        while not os.path.exists(folder):  # the part that exists decides: the rest is made
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"--plot {plot!r}: {folder!r} is not a directory this user can "
                             "write into: pass a folder for the PNGs")


def weights_digest(net: nnx.Module) -> str:
    """sha256 of a net's parameters as loaded: what a resumed evaluation must share,
    whatever the weights came from (a file, a checkpoint, trained now or earlier)."""
    return checkpoint.tree_digest(nnx.state(net, nnx.Param))  # as a checkpoint records it


def data_fingerprint(data: str, data_dir: str | None) -> str:
    """What a resume journal keys the data's content by: a video file's sha256; a data
    directory's files by relative path, size and modification time (hashing a data set's
    gigabytes would take minutes; a file replaced or copied anew changes its time); "" for
    the embedded sample (pinned by its digests) and synthetic data, which the spec and the
    config fix. A live source is never journalled."""
    text = data.strip()
    if text.lower().startswith(_VIDEO):
        return durable.sha256_file(text[len(_VIDEO):])
    if not data_dir:
        return ""
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(data_dir):
        dirs.sort()  # a fixed walk order
        for name in sorted(names):
            path = os.path.join(root, name)
            info = os.stat(path)
            digest.update(f"{os.path.relpath(path, data_dir)}:{info.st_size}:"
                          f"{info.st_mtime_ns};".encode())
    return digest.hexdigest()


def is_live_data(data: str) -> bool:
    """Whether `--data` names a live source: video:URL, video:/dev/videoN or video:-."""
    text = data.strip()
    return text.lower().startswith(_VIDEO) and stream.is_live(text[len(_VIDEO):])


def _live_schedules(to_run: Sequence[clockwork.Schedule], named: str,
                    live_source: bool) -> list[clockwork.Schedule]:
    """The schedules a live run runs: the clockwork ones (a truncated baseline runs a net of
    its own, not a clock); on a live source, which can be read once, the last only."""
    baselines = [s.name for s in to_run if s.keep is not None]
    if baselines:
        _say(f"live: skipping the truncated baselines {', '.join(baselines)} (they run their "
             "own nets, not a clock; evaluate them on a file without --live)")
    run = [s for s in to_run if s.keep is None]
    if not live_source or len(run) < 2:
        return run
    # parse_schedules puts oracle first when it was not asked for: not a schedule asked for.
    asked = [n.strip().lower() for n in schedules.split_schedules(named)]
    inserted = asked != ["all"] and "oracle" not in asked and run[0].name == "oracle"
    if len(run) - inserted > 1:
        _say(f"live: a live stream can be read once: running the last schedule only, "
             f"{run[-1].name} (of {', '.join(s.name for s in run[inserted:])}); to compare "
             "schedules, save the stream to a file and pass --live with it")
    return run[-1:]


def evaluate_live(
    config: ml_collections.ConfigDict,
    *,
    schedule: str,
    thetas: Sequence[float],
    data: str,
    checkpoint_path: str | None = None,
    dtype: str = "float32",
    max_frames: int | None = None,
    video_out: str | None = None,
    output: str | None = None,
    target_rate: float | None = None,
    target_ms: float | None = None,
    rate_window: int = schedules.DEFAULT_WINDOW,
    rate_tolerance: float = schedules.DEFAULT_TOLERANCE,
    baselines: str | None = None,
    plot: str | None = None,
) -> list[dict]:
    """evaluate.py's live path: the schedules stepped over a stream frame by frame.

    A target (`target_rate`, or `target_ms` turned into one from the stages' times on the
    stream's frame size) puts each adaptive schedule under a budget from its own theta
    (`with_budgets`): a live stream cannot be read ahead to calibrate, so the controller
    finds the threshold as it runs.

    A live source (`is_live_data`) is read once, so only the last schedule runs (said on
    stderr); a file (`--live`) is opened again per schedule and every frame is passed on.
    Prints the live table (`format_live_table`) on stdout, writes `output` (JSON: the job
    and the rows) and the last schedule's overlay video `video_out`, frame by frame. Ctrl-C
    stops the run: the video is closed (playable), and the table and JSON of what ran are
    still written.

    Args:
      config: the net's config.
      schedule, thetas: the schedules (`schedules.parse_schedules`).
      data: "video:SOURCE": a URL, /dev/videoN, "-" (stdin) or a file.
      checkpoint_path, dtype, max_frames, video_out, output: evaluate.py's flags.
      target_rate, target_ms, rate_window, rate_tolerance: the budget (evaluate.py's flags).
      baselines, plot: refused (a net of their own; a labelled evaluation).

    Returns:
      The rows (`run_live`).

    Raises:
      ValueError: options a live run cannot take, a data spec that is not video:, or
        (`video.VideoError`) a source that cannot be opened.
    """
    if (target_rate is not None or target_ms is not None) and not rate_window:
        raise ValueError("a target on a live run is held by the controller: give --rate_window "
                         f">= 1 (default {schedules.DEFAULT_WINDOW}), not 0 (a live stream "
                         "cannot be read ahead to calibrate a fixed theta)")
    for given, flag, why in (
            (baselines, "--baselines", "runs the truncated baselines' own nets, not a clock: "
             "evaluate them on a file without --live"),
            (plot, "--plot", "plots a labelled evaluation: run it without --live")):
        if given is not None:
            raise ValueError(f"{flag} does not go with a live run: it {why}")
    if not data.strip().lower().startswith(_VIDEO):
        raise ValueError(f"--live runs a video (--data video:FILE, video:URL, video:/dev/video0 "
                         f"or video:-), not {data!r}")
    if jax.process_count() > 1:
        raise ValueError("a live run is one process's: run it without --num_processes")
    source = data.strip()[len(_VIDEO):]
    live_source = stream.is_live(source)
    check_outputs(output, plot, video_out)
    to_run = _live_schedules(schedules.parse_schedules(schedule, thetas), schedule, live_source)
    mean_bgr = datasets.mean_bgr_of(config)
    opened = stream.FrameReader(source, live=live_source)  # a bad source fails before the net
    try:
        net, origin = load_net(config, checkpoint_path, mean_bgr)
    except BaseException:
        opened.close()
        raise
    if target_ms is not None:
        if opened.frame_shape is None:
            opened.close()
            raise ValueError(f"--target_ms: the stream {source!r} gives no frame size before "
                             "its first frame; give --target_rate instead")
        target_rate = _rate_for_ms(net, opened.frame_shape, target_ms, dtype)
    if target_rate is not None:
        to_run = with_budgets(to_run, target_rate, rate_window, rate_tolerance)
        to_run = to_run[-1:] if live_source else to_run
    names = class_names(config, data, datasets.net_classes(config))
    _say(f"device: {jax.devices()[0].platform}; data: {source} "
         f"({'live: the newest frame, late ones dropped' if live_source else 'file: every frame'}"
         f"); net: FCN-8s ({config.model.widths}), {origin}")
    rows = []
    for k, sched in enumerate(to_run):
        # A file is opened again per schedule; a live source runs one schedule (above).
        with opened if k == 0 else stream.FrameReader(source, live=False) as reader:
            row = live.run_live(net, reader, sched, mean_bgr=mean_bgr, dtype=dtype,
                                max_frames=max_frames, class_names=names,
                                video_out=video_out if k == len(to_run) - 1 else None)
        rows.append(row)
        if row["interrupted"]:
            break
    print(live.format_live_table(rows))
    _say(f"time: {sum(r['compile_s'] for r in rows):.1f} s compiling (untimed warm-up), "
         f"{sum(r['wall_s'] for r in rows):.1f} s running")
    if rows and rows[-1]["video_out"]:
        _say(f"video: {video_out} ({rows[-1]['frames']} frames, {rows[-1]['schedule']})")
    if output:
        results.write_json(output, {
            "config": config.to_dict(), "data": data, "mode": rows[0]["mode"] if rows else None,
            "weights": origin, "dtype": dtype, "max_frames": max_frames,
            "target_rate": target_rate, "target_ms": target_ms, **provenance.record(),
            "results": rows})
    return rows
