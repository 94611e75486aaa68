"""Trains FCN-8s.

    python train.py --config configs/tiny.py [--config.train.steps=100 ...] [--workdir DIR]

It trains on `config.data`: synthetic scenes, or whole images of VOC, SBD (FCN's
PASCAL training set: configs/pascal.py), NYUDv2 (configs/nyud.py) or Cityscapes
(configs/cityscapes.py). With --workdir it saves orbax checkpoints, resumes from the
latest one, and appends the training log (loss, images/s, learning rate, and the
validation mean IU every `config.train.eval_every` steps) to <workdir>/metrics.jsonl.
Killed at any point (even mid-save), it resumes from the latest complete checkpoint and
ends with the same parameters, bit for bit, as a run that was never stopped. Bad input
(a flag, a config key or value, a missing data set, a full disk) ends it with one line
and exit status 2.

--data_parallel trains on every device (batch sharded, params replicated); with
--coordinator HOST:PORT --num_processes P --process_id I (or JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID) the processes of a multi-host run train as one.
"""

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from cwfcn import cli, compilation, distributed, train_lib

config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints go here; a run resumes from the latest.")
flags.DEFINE_bool("data_parallel", False,
                  "Shard each batch over every device (always on with several processes).")
distributed.define_flags()
FLAGS = flags.FLAGS


def train() -> None:
    distributed.initialize_from_flags()
    parallel = FLAGS.data_parallel or jax.process_count() > 1
    mesh = distributed.make_mesh() if parallel else None
    _, losses = train_lib.train(FLAGS.config, FLAGS.workdir, mesh=mesh)
    n = max(1, len(losses) // 10)
    print(f"loss: first {np.mean(losses[:n]):.4f} -> last {np.mean(losses[-n:]):.4f} "
          f"over {len(losses)} steps")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    compilation.enable_cache()
    cli.run_or_fail("train.py", train)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser("train.py"))
