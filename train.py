"""Trains FCN-8s.

    python train.py --config configs/tiny.py [--config.train.steps=100 ...] [--workdir DIR]

It trains on `config.data`: synthetic scenes, or whole images of VOC, SBD (FCN's
PASCAL training set: configs/pascal.py), NYUDv2 (configs/nyud.py) or Cityscapes
(configs/cityscapes.py). With --workdir it saves orbax checkpoints, resumes from the
latest one, and appends the training log (loss, images/s, learning rate, and the
validation mean IU every `config.train.eval_every` steps) to <workdir>/metrics.jsonl.
"""

import sys

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from cwfcn import train_lib

config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints go here; a run resumes from the latest.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    try:
        _, losses = train_lib.train(FLAGS.config, FLAGS.workdir)
    except ValueError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    n = max(1, len(losses) // 10)
    print(f"loss: first {np.mean(losses[:n]):.4f} -> last {np.mean(losses[-n:]):.4f} "
          f"over {len(losses)} steps")


if __name__ == "__main__":
    app.run(main)
