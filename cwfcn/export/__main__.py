"""Exports a net's clockwork step (`cwfcn.export.export_step`) to one file.

    python -m cwfcn.export --schedule adaptive:0.25 --height 384 --width 512 --out step.bin
    python -m cwfcn.export --config configs/pascal.py --checkpoint workdir/ \\
        --schedule pipeline3 --height 500 --width 500 --out step.bin

The net is loaded as evaluate.py loads it (--checkpoint: a train.py --workdir or a weight
file; default: the config's own model, trained once into the cache). Load the file with
`cwfcn.export.load` (it needs jax and numpy, not the model code).
"""

from absl import flags

from cwfcn import cli, clockwork, evaluate_lib, export
from cwfcn.data import datasets

PROG = "python -m cwfcn.export"
cli.define_config(PROG, "configs/sample.py", program=__name__ == "__main__")
flags.DEFINE_string("checkpoint", None,
                    "An orbax checkpoint directory (train.py --workdir) or a weight file. "
                    "Default: the config's model, trained once.")
flags.DEFINE_string("schedule", f"adaptive:{clockwork.DEFAULT_THETA}",
                    f"The clockwork schedule ({clockwork.SCHEDULE_HELP}).")
flags.DEFINE_integer("height", None, "Frame height the step takes.", lower_bound=1)
flags.DEFINE_integer("width", None, "Frame width the step takes.", lower_bound=1)
flags.DEFINE_enum("dtype", "float32", sorted(clockwork.DTYPES), "Compute dtype.")
flags.DEFINE_list("platforms", list(export.DEFAULT_PLATFORMS),
                  "Platforms to lower for (jax.export), e.g. cpu,cuda.")
flags.DEFINE_string("out", None, "The artefact to write, e.g. step.bin.")
flags.mark_flags_as_required(["height", "width", "out"])
FLAGS = flags.FLAGS


def job() -> None:
    config = FLAGS.config
    mean_bgr = datasets.mean_bgr_of(config)
    net, origin = evaluate_lib.load_net(config, FLAGS.checkpoint, mean_bgr)
    classes = datasets.get(config.data.name).classes
    meta = export.export_step(
        net, FLAGS.schedule, (FLAGS.height, FLAGS.width, 3), FLAGS.out, dtype=FLAGS.dtype,
        platforms=FLAGS.platforms, mean_bgr=mean_bgr,
        class_names=classes if len(classes) == datasets.net_classes(config) else None)
    print(f"wrote {FLAGS.out}: {meta['schedule']} on {FLAGS.height}x{FLAGS.width} frames, "
          f"{meta['num_classes']} classes, {meta['dtype']}, for {','.join(meta['platforms'])}; "
          f"weights: {origin}")


if __name__ == "__main__":
    cli.main(PROG, job)
