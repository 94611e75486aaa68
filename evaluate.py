"""Evaluates clockwork schedules: the paper's metrics, frames fired and time per frame.

    python evaluate.py --schedule adaptive --theta 0.25      # the embedded sample
    python evaluate.py --schedule all --theta 0.05:0.5:0.05 --plot plots/   # Fig. 6, Fig. 7
    python evaluate.py --data video:clip.mp4 --target-rate 0.5 --video-out out.mp4
    python evaluate.py --schedule all --data pascal-translated:16 --data-dir VOCdevkit \\
        --checkpoint fcn8s-heavy-pascal.caffemodel --config configs/default.py

With no --checkpoint, the config's own model is used: trained once (minutes for the
default configs/sample.py, the sample model) into the cache and reused afterwards.
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

from cwfcn import calibrate, checkpoint, clockwork, evaluation, model, plots, train_lib, weights
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
flags.DEFINE_string("output", None, "Write the results as JSON here.")
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
    net, trained = train_lib.ensure_trained(config, str(workdir))
    how = "trained now" if trained else "trained earlier"
    return net, f"no --checkpoint: the config's own model, {how}, cached in {workdir}"


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    config = FLAGS.config
    try:
        thetas = parse_thetas(FLAGS.theta)
        if FLAGS.target_rate is not None and not 0.0 < FLAGS.target_rate <= 1.0:
            raise ValueError(f"--target_rate must be in (0, 1], got {FLAGS.target_rate}")
        schedules_from_flags(FLAGS.schedule, thetas)  # fail on bad names before any work
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
        rows = [evaluation.evaluate_schedule(net, source, s, mean_bgr=mean,
                                             boundary_radius=config.clock.boundary_radius)
                for s in schedules]
        evaluation.add_speedups(rows)
        print(evaluation.format_table(rows))
        if FLAGS.target_rate is not None:
            achieved = [r["fired"][-1] for r in rows if r["schedule"].startswith("adaptive")]
            print(f"target rate {FLAGS.target_rate}: achieved S3 rate "
                  + ", ".join(f"{a:.3f}" for a in achieved), file=sys.stderr)
        write_outputs(rows, source, net, mean)
    except (ValueError, OSError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"config": config.to_dict(), "data": source.name, "weights": origin,
                       "device": str(jax.devices()[0]), "target_rate": FLAGS.target_rate,
                       "results": rows}, f, indent=1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, also taking --video-out for --video_out (the dashed spelling)."""
    def undash(arg: str) -> str:
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "." not in name:
            name = "--" + name[2:].replace("-", "_")
        return name + eq + value

    return FLAGS([argv[0], *map(undash, argv[1:])])


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
