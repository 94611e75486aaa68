"""Evaluates clockwork schedules: the paper's metrics, frames fired and time per frame.

    python evaluate.py --schedule adaptive --theta 0.25      # the embedded sample
    python evaluate.py --schedule all --theta 0.05:0.5:0.05 --plot plots/   # Fig. 6, Fig. 7
    python evaluate.py --data video:clip.mp4 --target-rate 0.5 --video-out out.mp4
    python evaluate.py --schedule all --data pascal-translated:16 --data-dir VOCdevkit \\
        --checkpoint fcn8s-heavy-pascal.caffemodel --config configs/default.py

With no --checkpoint, the config's own model is used: trained once (minutes for the
default configs/sample.py, the sample model) into the cache and reused afterwards.

Multi-host (--coordinator, --num_processes, --process_id, as train.py): process i runs
videos i, i + P, ... and the per-video results are gathered, so the metrics equal one
process's; process 0 alone prints the table and writes --output, --plot and --video_out.
Each process keeps its own resume journal (<output>.p<i>.partial.jsonl). A multi-host run
does not train: pass --checkpoint, or let a one-process run cache the config's model first.
"""

import hashlib
import json
import os
import re
import sys

import jax
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from cwfcn import (
    calibrate,
    checkpoint,
    cli,
    clockwork,
    compilation,
    config_check,
    distributed,
    evaluation,
    model,
    plots,
    provenance,
    results,
    train_lib,
    weights,
)
from cwfcn.data import protocol, samples, sources, video

ALL = ("oracle", "skip", "exponential", "alternating", "adaptive", "pipeline2", "pipeline3",
       "pool4", "pool3")

config_flags.DEFINE_config_file("config", "configs/sample.py", "Config file.", lock_config=True)
flags.DEFINE_string("schedule", "adaptive",
                    f"Schedule, comma-separated schedules, or 'all'. {clockwork.SCHEDULE_HELP}; "
                    "or the truncated baselines pool4, pool3 (see --baselines).")
flags.DEFINE_string("baselines", None,
                    "The truncated baselines' own weights, e.g. pool3=voc-fcn-pool3.caffemodel,"
                    "pool4=voc-fcn-pool4.caffemodel (a .caffemodel or a train.py --workdir of "
                    "configs/pascal_baseline.py). Without, pool3/pool4 rows use FCN-8s's own "
                    "skip scores and say so ('pool4 (fcn8s)').")
flags.DEFINE_string("phase", None,
                    "Phase of fixed schedules at the scored frames: "
                    f"{protocol.PHASE_HELP}. Default: the data set's reference protocol.")
flags.DEFINE_string("theta", str(clockwork.DEFAULT_THETA),
                    "Threshold of the adaptive clock in [0, 1], or a sweep start:stop:step.")
flags.DEFINE_float("target_rate", None,
                   "Pick theta so that S3 fires on about this fraction of frames, in (0, 1], "
                   "calibrated without labels over the whole data set (as the paper tuned "
                   "it), or on the first --calibration_frames frames.")
flags.DEFINE_integer("calibration_frames", None,
                     "Calibrate --target_rate on the first N frames of the first video only "
                     "(a live stream's start), not on the whole data set.")
flags.DEFINE_integer("max_frames", None, "Read at most this many frames of a video:PATH.")
flags.DEFINE_string("plot", None, "Write the trade-off and timeline plots (PNG) here.")
flags.DEFINE_string("video_out", None,
                    "Write the first video's segmentation (last schedule) as an overlay video.")
flags.DEFINE_string("data", "sample", f"Data: {sources.SOURCE_HELP}.")
flags.DEFINE_string("data_dir", None, "Directory of the data set named by --data.")
flags.DEFINE_string("checkpoint", None,
                    "An orbax checkpoint directory (from train.py --workdir) or a weight file "
                    "(.caffemodel, .pth, .onnx). Default: the config's model, trained once.")
flags.DEFINE_enum("dtype", "float32", sorted(clockwork.DTYPES),
                  "Compute dtype of the activations (params stay float32).")
flags.DEFINE_string("output", None, "Write the results as JSON here.")
distributed.define_flags()
FLAGS = flags.FLAGS


def parse_thetas(spec: str) -> list[float]:
    """"0.25" -> [0.25]; "0.05:0.5:0.05" -> [0.05, 0.1, ..., 0.5] (stop included)."""
    try:
        parts = [float(p) for p in spec.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts
    if len(parts) == 3 and parts[2] > 0 and parts[0] <= parts[1]:
        n = round((parts[1] - parts[0]) / parts[2]) + 1
        return [round(parts[0] + i * parts[2], 6) for i in range(n)]
    raise ValueError(f"bad --theta {spec!r}: a number in [0, 1] or start:stop:step, "
                     "e.g. 0.05:0.5:0.05")


def split_schedules(spec: str) -> list[str]:
    """Comma-separated schedules; a comma before a digit stays inside (periods:1,2,4)."""
    return [n for n in re.split(r",(?!\d)", spec) if n.strip()]


def schedules_from_flags(spec: str, thetas: list[float], baselines: dict | None = None
                         ) -> list[clockwork.Schedule | evaluation.Baseline]:
    """The schedules to run, oracle first (the reference for time and accuracy).

    "adaptive" (and "adaptive-pixel") stand for one adaptive schedule per theta of the
    sweep; pool3 / pool4 are the truncated baselines, with their own nets where
    `baselines` (name -> net) has them.
    """
    names = list(ALL) if spec.strip().lower() == "all" else split_schedules(spec)
    schedules = []
    for n in (n.strip().lower() for n in names):
        if n in clockwork.ADAPTIVE_SIGNALS:
            schedules += [clockwork.parse_schedule(f"{n}:{t}") for t in thetas]
        elif n in evaluation.BASELINES:
            schedules.append(evaluation.Baseline(n, (baselines or {}).get(n)))
        else:
            schedules.append(clockwork.parse_schedule(n))
    if all(getattr(s, "name", None) != "oracle" for s in schedules):
        schedules.insert(0, clockwork.parse_schedule("oracle"))
    return schedules


def parse_baselines(spec: str | None) -> dict[str, str]:
    """"pool3=A,pool4=B" -> {"pool3": "A", "pool4": "B"}."""
    if not spec:
        return {}
    out = {}
    for item in spec.split(","):
        name, sep, path = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in evaluation.BASELINES or not path.strip():
            raise ValueError(f"bad --baselines {spec!r}: use NAME=FILE pairs with NAME one of "
                             f"{sorted(evaluation.BASELINES)}, e.g. pool4=voc-fcn-pool4.caffemodel")
        out[name] = path.strip()
    return out


def load_baselines(config, paths: dict[str, str], mean_bgr) -> dict:
    """The truncated nets of --baselines, each loaded from its file or checkpoint."""
    nets = {}
    for name, path in paths.items():
        net, origin = load_net(train_lib.with_arch(config, name), path, mean_bgr)
        print(f"baseline {name}: {origin}", file=sys.stderr)
        nets[name] = net
    return nets


def calibrated_theta(net, source, mean, rate: float, frames: int | None) -> float:
    """Theta for a target S3 firing rate, without labels: over the whole data set's adaptive
    clips, counted as its reference counts them; or on the first `frames` frames of the
    first video."""
    if frames is not None:
        first, _ = next(iter(source))
        maps = calibrate.clock_maps(net, model.preprocess(first[:frames], mean))
        return calibrate.theta_for_rate(maps, rate)
    runs = calibrate.clip_runs(net, source.clips(clockwork.parse_schedule("adaptive")), mean)
    return calibrate.theta_for_rate_over(runs, rate)


def write_outputs(rows, schedules, source, net, mean) -> None:
    """The plots and the overlay video the flags ask for."""
    if FLAGS.plot:
        os.makedirs(FLAGS.plot, exist_ok=True)
        sweep = [r for r in rows if r["kind"] == "adaptive"]
        fixed = [r for r in rows if r["kind"] != "adaptive"]
        paths = [plots.plot_tradeoff(os.path.join(FLAGS.plot, "tradeoff.png"), sweep, fixed)]
        for r in sweep[:1]:  # the clock of the first adaptive schedule, frame by frame
            theta = float(r["schedule"].partition(":")[2])
            paths.append(plots.plot_timeline(
                os.path.join(FLAGS.plot, "timeline.png"), np.asarray(r["timeline"]["change"]),
                np.asarray(r["timeline"]["fired"]), theta, title=f"{source.name}: {r['schedule']}"))
        if len(sweep) > 1:  # Fig. 7: the clocks side by side on the first video
            paths.append(plots.plot_clocks(
                os.path.join(FLAGS.plot, "clocks.png"),
                {r["schedule"]: r["timeline"]["fired"] for r in sweep}, title=source.name))
        print("plots: " + ", ".join(map(str, paths)), file=sys.stderr)
    if FLAGS.video_out:
        rgb, _ = next(iter(source))
        preds, fired, _ = evaluation.predict(net, model.preprocess(rgb, mean), schedules[-1])
        if source.pred_lut is not None:
            preds = np.asarray(source.pred_lut)[preds]
        n = video.write_overlay(FLAGS.video_out, rgb, preds, num_classes=source.num_classes,
                                fired=fired[:, -1])
        print(f"video: {FLAGS.video_out} ({n} frames, {rows[-1]['schedule']})", file=sys.stderr)


def load_net(config, path: str | None, mean_bgr) -> tuple[model.FCN8s, str]:
    """The net to evaluate and a line saying where its weights came from."""
    if path:
        net = train_lib.build_net(config, nnx.Rngs(config.seed))
        if os.path.isdir(path):
            step = checkpoint.load_params(path, net)
            return net, f"checkpoint {path} (step {step})"
        report = weights.load(net, path, mean_bgr=mean_bgr)
        return net, f"weights {path}: {report}"
    key = hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:12]
    workdir = samples.resolve_cache_dir(None, os.environ) / "models" / key
    if jax.process_count() > 1 and (checkpoint.latest_step(workdir) or 0) < config.train.steps:
        raise ValueError(f"the config's model is not cached in {workdir} and a multi-host run "
                         "does not train: pass --checkpoint (from train.py --workdir), or run "
                         "evaluate.py once as a single process to train and cache it")
    net, trained = train_lib.ensure_trained(config, str(workdir))
    how = "trained now" if trained else "trained earlier"
    return net, f"no --checkpoint: the config's own model, {how}, cached in {workdir}"


def evaluate() -> None:
    """The whole job; bad input raises ValueError or OSError before any result is written."""
    distributed.initialize_from_flags()
    process, processes = jax.process_index(), jax.process_count()
    lead = process == 0  # prints the table and writes the outputs
    config = FLAGS.config
    config_check.check(config)
    if config.model.arch != "fcn8s":
        raise ValueError(f"evaluate.py runs FCN-8s's schedules, and config.model.arch is "
                         f"{config.model.arch!r}: pass an FCN-8s config, and the baseline's "
                         f"weights with --baselines {config.model.arch}=FILE")
    thetas = parse_thetas(FLAGS.theta)
    if FLAGS.target_rate is not None and not 0.0 < FLAGS.target_rate <= 1.0:
        raise ValueError(f"--target_rate must be in (0, 1], got {FLAGS.target_rate}: pick the "
                         "fraction of frames on which S3 should fire, e.g. 0.5")
    named = schedules_from_flags(FLAGS.schedule, thetas)  # fail on bad names before any work
    if FLAGS.target_rate is not None and any(getattr(s, "signal", None) == "pixels"
                                             and s.theta is not None for s in named):
        raise ValueError("--target_rate calibrates the score_pool4 clock (adaptive) only: give "
                         "the pixel clock its threshold, e.g. adaptive-pixel:0.02")
    baseline_paths = parse_baselines(FLAGS.baselines)
    if FLAGS.calibration_frames is not None and FLAGS.calibration_frames < 1:
        raise ValueError(f"--calibration_frames must be >= 1, got {FLAGS.calibration_frames}")
    if FLAGS.output:
        results.check_writable(FLAGS.output)
    source = sources.open_source(FLAGS.data, data_dir=FLAGS.data_dir, config=config,
                                 max_frames=FLAGS.max_frames)
    phase = source.check_phase(FLAGS.phase)
    if source.net_classes != config.model.num_classes:
        raise ValueError(f"data {source.name!r} needs a net of {source.net_classes} classes but "
                         f"the config's has {config.model.num_classes}: pass a config for "
                         "this data set (--config configs/...)")
    mean = model.MEAN_BGR[source.mean]
    net, origin = load_net(config, FLAGS.checkpoint, mean)
    print(f"device: {jax.devices()[0].platform}; data: {source.name} ({source.protocol}; "
          f"phase {phase}); net: FCN-8s ({config.model.widths}), {origin}", file=sys.stderr)
    baselines = load_baselines(config, baseline_paths, mean)
    if FLAGS.target_rate is not None:
        thetas = [calibrated_theta(net, source, mean, FLAGS.target_rate,
                                   FLAGS.calibration_frames)]
        print(f"target rate {FLAGS.target_rate}: theta = {thetas[0]:.4f}", file=sys.stderr)
    schedules = schedules_from_flags(FLAGS.schedule, thetas, baselines)
    journal = None
    if FLAGS.output:  # per-clip results, so that a killed run resumes where it stopped
        job = json.dumps([config.to_dict(), source.name, origin, FLAGS.dtype, FLAGS.max_frames,
                          phase, baseline_paths], sort_keys=True, default=str)
        part = f".p{process}" if processes > 1 else ""  # each process's own clips
        journal = results.Journal(f"{FLAGS.output}{part}.partial.jsonl", job)
        if len(journal):
            print(f"resuming: {len(journal)} clips done earlier ({journal.path})",
                  file=sys.stderr)
    rows = [evaluation.evaluate_schedule(net, source.clips(s, phase), s, mean_bgr=mean,
                                         boundary_radius=config.clock.boundary_radius,
                                         pred_lut=source.pred_lut, dtype=FLAGS.dtype,
                                         journal=journal,
                                         shard=(process, processes) if processes > 1 else None)
            for s in schedules]
    for row in rows:
        row["phase"] = phase if row["kind"] == "fixed" else None
    evaluation.add_speedups(rows)
    if not lead:
        if journal is not None:
            journal.remove()
        return
    print(evaluation.format_table(rows))
    if FLAGS.target_rate is not None:
        achieved = [r["fired_ref"][-1] for r in rows if r["kind"] == "adaptive"]
        print(f"target rate {FLAGS.target_rate}: achieved S3 rate "
              + ", ".join(f"{a:.3f}" for a in achieved), file=sys.stderr)
    write_outputs(rows, schedules, source, net, mean)
    if FLAGS.output:
        results.write_json(FLAGS.output, {
            "config": config.to_dict(), "data": source.name, "protocol": source.protocol,
            "phase": phase, "weights": origin, "baselines": baseline_paths,
            "dtype": FLAGS.dtype, "target_rate": FLAGS.target_rate, **provenance.record(),
            "results": rows})
        journal.remove()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    compilation.enable_cache()
    cli.run_or_fail("evaluate.py", evaluate)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser("evaluate.py"))
