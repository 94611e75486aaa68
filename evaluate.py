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
from cwfcn.data import samples, sources, video

ALL = ("oracle", "skip", "exponential", "alternating", "adaptive", "pipeline2", "pipeline3",
       "pool4", "pool3")

config_flags.DEFINE_config_file("config", "configs/sample.py", "Config file.", lock_config=True)
flags.DEFINE_string("schedule", "adaptive",
                    f"Schedule, comma-separated schedules, or 'all'. {clockwork.SCHEDULE_HELP}; "
                    "or the truncated baselines pool4, pool3.")
flags.DEFINE_string("theta", str(clockwork.DEFAULT_THETA),
                    "Threshold of the adaptive clock in [0, 1], or a sweep start:stop:step.")
flags.DEFINE_float("target_rate", None,
                   "Pick theta so that S3 fires on about this fraction of frames, in (0, 1], "
                   "calibrated without labels on the first --calibration_frames frames.")
flags.DEFINE_integer("calibration_frames", 30, "Frames used to calibrate --target_rate.")
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


def schedules_from_flags(spec: str, thetas: list[float]) -> list[clockwork.Schedule | str]:
    """The schedules to run, oracle first (the reference for time and accuracy).

    "adaptive" stands for one adaptive schedule per theta of the sweep.
    """
    names = list(ALL) if spec.strip().lower() == "all" else spec.split(",")
    expanded = []
    for n in names:
        if n.strip().lower() == "adaptive":
            expanded += [f"adaptive:{t}" for t in thetas]
        else:
            expanded.append(n)
    schedules = [n.strip().lower() if n.strip().lower() in evaluation.BASELINES
                 else clockwork.parse_schedule(n) for n in expanded]
    if all(getattr(s, "name", s) != "oracle" for s in schedules):
        schedules.insert(0, clockwork.parse_schedule("oracle"))
    return schedules


def calibrated_theta(net, source, mean, rate: float, frames: int) -> float:
    """Theta for a target S3 firing rate, from the first frames of the first video (no labels)."""
    first, _ = next(iter(source))
    maps = calibrate.clock_maps(net, model.preprocess(first[:frames], mean))
    return calibrate.theta_for_rate(maps, rate)


def write_outputs(rows, source, net, mean) -> None:
    """The plots and the overlay video the flags ask for."""
    if FLAGS.plot:
        os.makedirs(FLAGS.plot, exist_ok=True)
        sweep = [r for r in rows if r["schedule"].startswith("adaptive")]
        fixed = [r for r in rows if not r["schedule"].startswith("adaptive")]
        paths = [plots.plot_tradeoff(os.path.join(FLAGS.plot, "tradeoff.png"), sweep, fixed)]
        for r in sweep[:1]:  # the clock of the first adaptive schedule, frame by frame
            theta = float(r["schedule"].partition(":")[2])
            paths.append(plots.plot_timeline(
                os.path.join(FLAGS.plot, "timeline.png"), np.asarray(r["timeline"]["change"]),
                np.asarray(r["timeline"]["fired"]), theta, title=f"{source.name}: {r['schedule']}"))
        print("plots: " + ", ".join(map(str, paths)), file=sys.stderr)
    if FLAGS.video_out:
        rgb, _ = next(iter(source))
        name = rows[-1]["schedule"]
        schedule = name if name in evaluation.BASELINES else clockwork.parse_schedule(name)
        preds, fired, _ = evaluation.predict(net, model.preprocess(rgb, mean), schedule)
        n = video.write_overlay(FLAGS.video_out, rgb, preds, num_classes=net.num_classes,
                                fired=fired[:, -1])
        print(f"video: {FLAGS.video_out} ({n} frames, {name})", file=sys.stderr)


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
    thetas = parse_thetas(FLAGS.theta)
    if FLAGS.target_rate is not None and not 0.0 < FLAGS.target_rate <= 1.0:
        raise ValueError(f"--target_rate must be in (0, 1], got {FLAGS.target_rate}: pick the "
                         "fraction of frames on which S3 should fire, e.g. 0.5")
    schedules_from_flags(FLAGS.schedule, thetas)  # fail on bad names before any work
    if FLAGS.output:
        results.check_writable(FLAGS.output)
    source = sources.open_source(FLAGS.data, data_dir=FLAGS.data_dir, config=config,
                                 max_frames=FLAGS.max_frames)
    if source.num_classes != config.model.num_classes:
        raise ValueError(f"data {source.name!r} has {source.num_classes} classes but the "
                         f"config's net has {config.model.num_classes}: pass a config for "
                         "this data set (--config configs/...)")
    mean = model.MEAN_BGR[source.mean]
    net, origin = load_net(config, FLAGS.checkpoint, mean)
    print(f"device: {jax.devices()[0].platform}; data: {source.name}; net: FCN-8s "
          f"({config.model.widths}), {origin}", file=sys.stderr)
    if FLAGS.target_rate is not None:
        thetas = [calibrated_theta(net, source, mean, FLAGS.target_rate,
                                   FLAGS.calibration_frames)]
        print(f"target rate {FLAGS.target_rate}: theta = {thetas[0]:.4f}", file=sys.stderr)
    schedules = schedules_from_flags(FLAGS.schedule, thetas)
    journal = None
    if FLAGS.output:  # per-video results, so that a killed run resumes where it stopped
        job = json.dumps([config.to_dict(), source.name, origin, FLAGS.dtype, FLAGS.max_frames],
                         sort_keys=True, default=str)
        part = f".p{process}" if processes > 1 else ""  # each process's own videos
        journal = results.Journal(f"{FLAGS.output}{part}.partial.jsonl", job)
        if len(journal):
            print(f"resuming: {len(journal)} videos done earlier ({journal.path})",
                  file=sys.stderr)
    rows = [evaluation.evaluate_schedule(net, source, s, mean_bgr=mean,
                                         boundary_radius=config.clock.boundary_radius,
                                         dtype=FLAGS.dtype, journal=journal,
                                         shard=(process, processes) if processes > 1 else None)
            for s in schedules]
    evaluation.add_speedups(rows)
    if not lead:
        if journal is not None:
            journal.remove()
        return
    print(evaluation.format_table(rows))
    if FLAGS.target_rate is not None:
        achieved = [r["fired"][-1] for r in rows if r["schedule"].startswith("adaptive")]
        print(f"target rate {FLAGS.target_rate}: achieved S3 rate "
              + ", ".join(f"{a:.3f}" for a in achieved), file=sys.stderr)
    write_outputs(rows, source, net, mean)
    if FLAGS.output:
        results.write_json(FLAGS.output, {
            "config": config.to_dict(), "data": source.name, "weights": origin,
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
