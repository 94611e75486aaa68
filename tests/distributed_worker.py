"""A process of the multi-device / multi-host tests (tests/test_distributed.py runs it).

    python tests/distributed_worker.py OUT_DIR [--coordinator HOST:PORT --num_processes P
                                                --process_id I]

The caller sets XLA_FLAGS=--xla_force_host_platform_device_count=N, so that this process
has N CPU devices. On a mesh over every device of every process it evaluates the narrow
net with `distributed.evaluate_sharded` and, with --train, trains `train_config()`
data-parallel, saving its checkpoint (params replicated over every device) in OUT_DIR/run;
it writes `<process index>.npz` to OUT_DIR. The inputs come from `inputs()`
and `train_config()`, which the test also uses for its single-device answers.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

NUM_CLASSES, B, T, H, W = 5, 4, 5, 40, 40
NET_SEED = 5  # a random narrow net whose predictions spread over several classes
SCHEDULES = ("adaptive:0.05", "exponential")
SCORED = slice(1, None)


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """Videos float32 [B, T, H, W, 3] (scenes that hold or cut, per stream) and labels
    uint8 [B, T, H, W] (255 in one corner: ignored)."""
    rng = np.random.default_rng(7)
    scenes = np.kron(rng.uniform(-150.0, 150.0, (4, H // 8, W // 8, 3)), np.ones((1, 8, 8, 1)))
    order = rng.integers(0, 4, (B, T))
    labels = rng.integers(0, NUM_CLASSES, (B, T, H, W)).astype(np.uint8)
    labels[..., :5, :5] = 255
    return scenes[order].astype(np.float32), labels


def train_config():
    """The tiny config with a batch of 4 (it splits over 4 devices), 2 steps."""
    from configs import tiny

    config = tiny.get_config()
    config.train.batch_size = 4
    config.train.steps = 2
    return config


def flat_params(net) -> dict[str, np.ndarray]:
    """The net's parameters as {"params/<path>": array}."""
    import jax
    from flax import nnx

    flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(net)))[0]
    return {"params/" + jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--coordinator")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--train", action="store_true", help="also train data-parallel")
    args = parser.parse_args()

    from cwfcn import distributed  # after argparse: jax starts only now

    distributed.initialize(args.coordinator, args.num_processes, args.process_id, env={})
    import jax
    from flax import nnx

    from cwfcn import model, train_lib

    net = model.narrow_fcn8s(num_classes=NUM_CLASSES, rngs=nnx.Rngs(NET_SEED))
    mesh = distributed.make_mesh()
    videos, labels = inputs()
    results = {"devices": np.asarray(jax.device_count())}
    for name in SCHEDULES:
        out = distributed.evaluate_sharded(net, videos, labels, name, mesh, scored=SCORED)
        results[f"{name}/hist"], results[f"{name}/fired"] = out.hist, out.fired
    if args.train:
        trained, losses = train_lib.train(train_config(), os.path.join(args.out, "run"),
                                          mesh=mesh)
        results.update(flat_params(trained), losses=np.asarray(losses))
    np.savez(os.path.join(args.out, f"{jax.process_index()}.npz"), **results)


if __name__ == "__main__":
    main()
