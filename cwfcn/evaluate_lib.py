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
    evaluation,
    model,
    plots,
    provenance,
    results,
    schedules,
    train_lib,
    weights,
)
from cwfcn.data import datasets, protocol, samples, sources, video


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
        first, _ = next(iter(source))
        maps = calibrate.clock_maps(net, model.preprocess(first[:frames], source.mean_bgr))
        return calibrate.theta_for_rate(maps, rate)
    clips = source.clips(clockwork.parse_schedule("adaptive"))
    return calibrate.theta_for_rate_over(calibrate.clip_runs(net, clips, source.mean_bgr), rate)


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
        journal=journal, shard=shard, on_first_clip=on_first_clip, repeats=repeats)
    for row in rows:
        row["phase"] = phase if row["kind"] == "fixed" else None
    return evaluation.add_speedups(rows)


def write_plots(folder: str | os.PathLike, rows: Sequence[dict], title: str = "") -> list[str]:
    """The trade-off (Fig. 6) of the adaptive rows against the others, the first adaptive
    row's clock frame by frame (timeline), and, with several adaptive rows, their clocks
    side by side on the first video (Fig. 7).

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
    return paths


def write_overlay(path: str | os.PathLike, net: nnx.Module, source: sources.Source,
                  schedule: clockwork.Schedule, *, baseline_net: nnx.Module | None = None,
                  fps: float = 25.0, scored: tuple | None = None) -> int:
    """The first clip's segmentation under `schedule`, blended over its frames, with a
    mark where the last stage fired (`video.write_overlay`).

    Args:
      path: the video file to write.
      net: the net evaluated.
      source: the data set (its first clip, mean and class mapping).
      schedule: the schedule.
      baseline_net: a truncated baseline's own net (`evaluation.predict`).
      fps: frames per second of the video.
      scored: (clip, class maps int [T, H, W], fired bool [T, N]) of that clip as the
        evaluation ran it (`run_schedules`' `on_first_clip`); None: it is run now.

    Returns:
      The number of frames written.
    """
    if scored is None:
        clip = next(source.clips(schedule))
        preds, fired, _ = evaluation.predict(net, model.preprocess(clip.frames, source.mean_bgr),
                                             schedule, baseline_net=baseline_net)
    else:
        clip, preds, fired = scored
    if source.pred_lut is not None:
        preds = np.asarray(source.pred_lut)[preds]
    return video.write_overlay(path, clip.frames, preds, num_classes=source.num_classes,
                               fired=fired[:, -1], fps=fps)


def _parse_options(config, schedule: str, theta: str, target_rate: float | None,
                   calibration_frames: int | None, repeats: int = 1) -> list[float]:
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
    named = schedules.parse_schedules(schedule, thetas)  # bad names fail before any work
    if target_rate is not None and any(s.signal == "pixels" and s.theta is not None
                                       for s in named):
        raise ValueError("--target_rate calibrates the score_pool4 clock (adaptive) only: give "
                         "the pixel clock its threshold, e.g. adaptive-pixel:0.02")
    if calibration_frames is not None and calibration_frames < 1:
        raise ValueError(f"--calibration_frames must be >= 1, got {calibration_frames}")
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1 (timed runs of each clip), got {repeats}")
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
) -> list[dict]:
    """The whole evaluate.py job: the table printed, the outputs written.

    The arguments are evaluate.py's flags (see its --help). Bad input raises ValueError
    or OSError before any result is written. In a multi-process run (after
    `distributed.initialize`) process i reads and runs the clips of videos i, i + P, ...;
    process 0 alone prints the table and writes the outputs.

    Returns:
      The rows (`run_schedules`), on every process.
    """
    started = time.perf_counter()
    process, processes = jax.process_index(), jax.process_count()
    thetas = _parse_options(config, schedule, theta, target_rate, calibration_frames, repeats)
    baseline_paths = parse_baselines(baselines)
    if output:
        results.check_writable(output)
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
    if target_rate is not None:
        thetas = [calibrated_theta(net, source, target_rate, calibration_frames)]
        _say(f"target rate {target_rate}: theta = {thetas[0]:.4f}")
    to_run = schedules.parse_schedules(schedule, thetas)
    journal = None
    if output:  # per-clip results, so that a killed run resumes where it stopped
        job = json.dumps([config.to_dict(), source.name, origin, dtype, max_frames, phase,
                          baseline_paths, repeats, evaluation.RECORD_FORMAT], sort_keys=True,
                         default=str)
        part = f".p{process}" if processes > 1 else ""  # each process's own clips
        journal = results.Journal(f"{output}{part}.partial.jsonl", job)
        if len(journal):
            _say(f"resuming: {len(journal)} clips done earlier ({journal.path})")
    load_s = time.perf_counter() - started  # the data listed, the nets loaded or trained
    first_clip = []  # the last schedule's first clip as scored, for the overlay
    rows = run_schedules(net, source, to_run, phase=phase,
                         boundary_radius=config.clock.boundary_radius, dtype=dtype,
                         baseline_nets=baseline_nets, journal=journal,
                         shard=(process, processes) if processes > 1 else None, repeats=repeats,
                         on_first_clip=(lambda *scored: first_clip.append(scored))
                         if video_out else None)
    if process != 0:  # process 0 alone reports
        if journal is not None:
            journal.remove()
        return rows
    print(evaluation.format_table(rows))
    compile_s = sum(r["compile_s"] for r in rows)
    _say(f"time: {load_s:.1f} s loading the data and the net, {compile_s:.1f} s compiling, "
         f"{sum(r['wall_s'] for r in rows):.1f} s running and scoring")
    if target_rate is not None:
        achieved = [r["fired_ref"][-1] for r in rows if r["kind"] == "adaptive"]
        _say(f"target rate {target_rate}: achieved S{len(rows[0]['fired'])} rate "
             + ", ".join(f"{a:.3f}" for a in achieved))
    if plot:
        _say("plots: " + ", ".join(write_plots(plot, rows, source.name)))
    if video_out:
        frames = write_overlay(video_out, net, source, to_run[-1],
                               baseline_net=_baseline_net(to_run[-1], baseline_nets),
                               scored=first_clip[0] if first_clip else None)
        _say(f"video: {video_out} ({frames} frames, {rows[-1]['schedule']})")
    if output:
        results.write_json(output, {
            "config": config.to_dict(), "data": source.name, "protocol": source.protocol,
            "phase": phase, "weights": origin, "baselines": baseline_paths,
            "dtype": dtype, "target_rate": target_rate, **provenance.record(),
            "timing": {"load_s": load_s, "compile_s": compile_s,
                       "wall_s": time.perf_counter() - started},
            "results": rows})
        journal.remove()
    return rows
