"""Trains FCN-8s.

    python train.py --config configs/tiny.py [--config.train.steps=100 ...] [--workdir DIR]

It trains on `config.data`: synthetic scenes, or whole images of VOC, SBD (FCN's
PASCAL training set: configs/pascal.py), NYUDv2 (configs/nyud.py) or Cityscapes
(configs/cityscapes.py). With --workdir it saves orbax checkpoints, resumes from the
latest one, and appends the training log (loss, images/s, learning rate, and the
validation mean IU every `config.train.eval_every` steps) to <workdir>/metrics.jsonl.
Killed at any point (even mid-save), it resumes from the latest complete checkpoint and
ends with the same parameters, bit for bit, as a run that was never stopped. SIGINT (Ctrl-C)
or SIGTERM stops it before the next step, with the line "interrupted at step N; the last
checkpoint is step M" and exit status 130 or 143 (a second signal stops it at once). A
workdir is held by its run: a second run on it fails at once, naming the first. Bad input
(a flag, a config key or value, a missing data set, a full disk) ends it with one line
and exit status 2.

--data_parallel trains on every device (batch sharded, params replicated); with
--coordinator HOST:PORT --num_processes P --process_id I (or JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID) the processes of a multi-host run train as one.
"""

from absl import flags

from cwfcn import cli, distributed, train_lib

cli.define_config("train.py", "configs/default.py")  # a bad --flagfile or --config ends here
flags.DEFINE_string("workdir", None, "Checkpoints go here; a run resumes from the latest.")
flags.DEFINE_bool("data_parallel", False,
                  "Shard each batch over every device (always on with several processes).")
distributed.define_flags()
FLAGS = flags.FLAGS


def train() -> None:
    """The whole job (`train_lib.train_job`) with the flags' values, stopped between steps
    by SIGINT or SIGTERM; in a multi-host run, a process that dies (or is stopped so) ends
    the others within `distributed.PEER_TIMEOUT_S`, naming it."""
    if FLAGS.workdir is not None and not FLAGS.workdir.strip():  # else a directory named " "
        raise ValueError("--workdir is empty: give a path, or leave the flag out")
    distributed.initialize_from_flags()
    with cli.deferred_signals("train.py") as stop:
        try:
            with distributed.watch_peers(lambda lost: cli.fail(  # a dead or stopped process:
                    "train.py",  # the others end too
                    f"{lost}; rerun all processes: they resume from the latest checkpoint")):
                summary = train_lib.train_job(FLAGS.config, FLAGS.workdir,
                                              data_parallel=FLAGS.data_parallel, stop=stop)
        except train_lib.Interrupted as e:
            resume = " (rerun the same command to resume from it)" if e.checkpoint else ""
            cli.exit_now(f"train.py: {e}{resume}", cli.signal_status(e.signum))
    print(summary)


if __name__ == "__main__":
    cli.main("train.py", train)
