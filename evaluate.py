"""Evaluates clockwork schedules: the paper's metrics, frames fired and time per frame.

    python evaluate.py --schedule adaptive --theta 0.25
    python evaluate.py --schedule all --config configs/tiny.py --output results.json

Data: synthetic translated scenes (`config.data`); real data sets, pretrained
weights and checkpoints plug in through the config as they land.
"""

import json
import sys

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from cwfcn import clockwork, evaluation, model, train_lib
from cwfcn.data import synthetic, translate

ALL = ("oracle", "skip", "exponential", "alternating", "adaptive", "pipeline2", "pipeline3")

config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.", lock_config=True)
flags.DEFINE_string("schedule", "adaptive",
                    f"Schedule, comma-separated schedules, or 'all'. {clockwork.SCHEDULE_HELP}.")
flags.DEFINE_float("theta", clockwork.DEFAULT_THETA, "Threshold of the adaptive clock, in [0, 1].")
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


def synthetic_videos(config) -> list[evaluation.Video]:
    """Translated videos of synthetic scenes, preprocessed for the net."""
    rng = np.random.default_rng(config.seed)
    size, travel = config.data.size, config.data.shift * (config.data.num_frames - 1)
    videos = []
    for _ in range(config.data.num_videos):
        image, label = synthetic.scene(rng, size + travel, size, config.model.num_classes)
        frames, labels = translate.make_translated_frames(
            image, label, config.data.shift, config.data.num_frames)
        videos.append((np.asarray(model.preprocess(frames, model.MEAN_BGR[config.data.mean])),
                       labels))
    return videos


def main(argv):
    del argv
    config = FLAGS.config
    try:
        schedules = schedules_from_flags(FLAGS.schedule, FLAGS.theta)
        net = train_lib.build_net(config, nnx.Rngs(config.seed))
    except ValueError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"device: {jax.devices()[0].platform}; net: FCN-8s ({config.model.widths}) with "
          "random weights (no checkpoint given); data: synthetic translated scenes, "
          f"{config.data.num_videos} videos of {config.data.num_frames} frames at "
          f"{config.data.size}px", file=sys.stderr)
    videos = synthetic_videos(config)
    rows = [evaluation.evaluate_schedule(net, videos, s,
                                         boundary_radius=config.clock.boundary_radius)
            for s in schedules]
    evaluation.add_speedups(rows)
    print(evaluation.format_table(rows))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"config": config.to_dict(), "results": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
