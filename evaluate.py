"""Evaluates clockwork schedules: the paper's metrics, frames fired and time per frame.

    python evaluate.py --schedule adaptive --theta 0.25      # the embedded sample
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
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from cwfcn import checkpoint, clockwork, evaluation, model, train_lib, weights
from cwfcn.data import samples, sources

ALL = ("oracle", "skip", "exponential", "alternating", "adaptive", "pipeline2", "pipeline3")

config_flags.DEFINE_config_file("config", "configs/sample.py", "Config file.", lock_config=True)
flags.DEFINE_string("schedule", "adaptive",
                    f"Schedule, comma-separated schedules, or 'all'. {clockwork.SCHEDULE_HELP}.")
flags.DEFINE_float("theta", clockwork.DEFAULT_THETA, "Threshold of the adaptive clock, in [0, 1].")
flags.DEFINE_string("data", "sample", f"Data: {sources.SOURCE_HELP}.")
flags.DEFINE_string("data_dir", None, "Directory of the data set named by --data.")
flags.DEFINE_string("checkpoint", None,
                    "An orbax checkpoint directory (from train.py --workdir) or a weight file "
                    "(.caffemodel, .pth, .onnx). Default: the config's model, trained once.")
flags.DEFINE_string("output", None, "Write the results as JSON here.")
FLAGS = flags.FLAGS


def schedules_from_flags(spec: str, theta: float) -> list[clockwork.Schedule]:
    """The schedules to run, oracle first (the reference for time and accuracy)."""
    names = list(ALL) if spec.strip().lower() == "all" else spec.split(",")
    names = [f"adaptive:{theta}" if n.strip().lower() == "adaptive" else n for n in names]
    schedules = [clockwork.parse_schedule(n) for n in names]
    if all(s.name != "oracle" for s in schedules):
        schedules.insert(0, clockwork.parse_schedule("oracle"))
    return schedules


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
        schedules = schedules_from_flags(FLAGS.schedule, FLAGS.theta)
        source = sources.open_source(FLAGS.data, data_dir=FLAGS.data_dir, config=config)
        if source.num_classes != config.model.num_classes:
            raise ValueError(f"data {source.name!r} has {source.num_classes} classes but the "
                             f"config's net has {config.model.num_classes}: pass a config for "
                             "this data set (--config configs/...)")
        mean = model.MEAN_BGR[source.mean]
        net, origin = load_net(config, FLAGS.checkpoint, mean)
        print(f"device: {jax.devices()[0].platform}; data: {source.name}; net: FCN-8s "
              f"({config.model.widths}), {origin}", file=sys.stderr)
        rows = [evaluation.evaluate_schedule(net, source, s, mean_bgr=mean,
                                             boundary_radius=config.clock.boundary_radius)
                for s in schedules]
    except (ValueError, OSError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    evaluation.add_speedups(rows)
    print(evaluation.format_table(rows))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"config": config.to_dict(), "data": source.name, "weights": origin,
                       "device": str(jax.devices()[0]), "results": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
