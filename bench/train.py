"""Benchmark: the training step, whole and in parts, and where its backward pass goes.

On the default config's net and optimiser (configs/default.py: FCN-8s, SGD with momentum,
weight decay, the upsamplers fixed), one image of H x W:
- the step (`train_lib.train_step`, params and optimiser state donated): ms per step, the
  median of `--steps` timed steps after one that compiles;
- its parts, each jitted alone and timed round-robin: the forward and the loss, forward
  and backward (`value_and_grad`; backward = the difference), the optimiser's update;
- the fixed-trunk step (`train_lib.head_step`, configs/sample.py's) on the trunk's maps;
- a profile of the backward pass: each piece of the net forward, and forward with its
  backward (`jax.vjp`, the gradient of its parameters and of its input), so the pieces
  whose gradient costs more than the usual twice their forward stand out;
- with `--data_parallel`: images/s of the step data-parallel over every device (one image
  each, e.g. `XLA_FLAGS=--xla_force_host_platform_device_count=2`) against one device at
  batch 1 and at the same batch (forced host devices share the host's cores, so on a CPU
  they cannot beat the one device, which already uses every core);
- with `--peer`: the same step in PyTorch (`bench/peer_torch.py`), eager and under
  `torch.compile`, timed round-robin with cwfcn's; first, one step of each from the same
  weights and batch, without dropout, must give the same loss and updated parameters.

The table comes first; the last stdout line is one JSON object (`ms_per_step`, `parts`).

    python bench/train.py --height 384 --width 384 --steps 5
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python bench/train.py --data_parallel
    python bench/train.py --peer          # needs torch: pip install torch
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Stepping, device_info, round_robin, timed
from configs import default
from cwfcn import distributed, model, train_lib


def _batch(config, height: int, width: int, n: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(n, height, width, 3)) * 50, jnp.float32)
    labels = jnp.asarray(rng.integers(0, config.model.num_classes, (n, height, width)),
                         jnp.int32)
    return images, labels


def _median_ms(stepping: Stepping, steps: int) -> float:
    timed(stepping)  # compiles
    return 1e3 * statistics.median(timed(stepping)[0] for _ in range(steps))


def _parts(net, config, images, labels, key) -> dict[str, Callable]:
    """The step's parts, each jitted alone: forward + loss, forward + backward, optimiser."""
    graphdef, params = nnx.split(net)
    tx = train_lib.make_optimizer(config)
    opt_state = tx.init(params)

    def loss_of(p):
        return train_lib.loss_fn(nnx.merge(graphdef, p)(images, dropout_key=key), labels)

    forward = jax.jit(loss_of)
    both = jax.jit(jax.value_and_grad(loss_of))
    grads = both(params)[1]
    update = jax.jit(lambda g, s, p: jax.tree.map(  # the update applied, not donated
        jnp.add, p, tx.update(g, s, p)[0]))
    return {"forward": lambda: forward(params), "forward+backward": lambda: both(params),
            "optimizer": lambda: update(grads, opt_state, params)}


def _pieces(net, images) -> dict[str, tuple[Callable, jax.Array]]:
    """The net in pieces, each `f(net, x) -> y` with its real input x."""
    pool3, pool4, pool5 = net.trunk(images)
    score_fr = net.fc_scores(pool5)

    def fusion(n, inputs):
        return n.fuse_maps(*inputs, images.shape[1:3])

    return {
        "conv1_1..pool3": (model.vgg_pool3, images),
        "conv4_1..pool4": (model.vgg_pool4, pool3),
        "conv5_1..pool5": (model.vgg_pool5, pool4),
        "fc6, fc7, score_fr": (lambda n, x: n.fc_scores(x), pool5),
        "scores, upsampling, fusion": (fusion, (pool3, pool4, score_fr)),
    }


def _profile(net, images) -> dict[str, Callable]:
    """piece -> forward, piece + " fwd+bwd" -> its vjp (params and input), jitted."""
    graphdef, params = nnx.split(net)
    fns = {}
    for name, (piece, x) in _pieces(net, images).items():
        def apply(p, x, piece=piece):
            return piece(nnx.merge(graphdef, p), x)

        y = jax.eval_shape(apply, params, x)
        cotangent = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), y)
        forward = jax.jit(apply)
        both = jax.jit(lambda p, x, ct, apply=apply: jax.vjp(apply, p, x)[1](ct))
        fns[name] = functools.partial(forward, params, x)
        fns[f"{name} fwd+bwd"] = functools.partial(both, params, x, cotangent)
    return fns


def _data_parallel(config, height: int, width: int, steps: int) -> dict:
    """Images/s of the step on one device (batch 1, and the data-parallel batch), and
    data-parallel over every device (one image per device)."""
    out = {}
    count = jax.device_count()
    for devices, batch_size in sorted({(1, 1), (1, count), (count, count)}):
        mesh = distributed.make_mesh(devices)
        net = train_lib.build_net(config, nnx.Rngs(0))
        graphdef, params = nnx.split(net)
        tx = train_lib.make_optimizer(config)
        state = distributed.replicate(mesh, (params, tx.init(params)))
        images, labels = _batch(config, height, width, batch_size)
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
            distributed.DATA_AXIS))
        batch = jax.device_put((images, labels), sharding)
        step = functools.partial(train_lib.train_step, graphdef=graphdef, tx=tx)
        ms = _median_ms(Stepping(step, state, (*batch, jax.random.key(0))), steps)
        name = f"{devices} device{'s' * (devices > 1)}, batch {batch_size}"
        out[name] = {"ms_per_step": ms, "images_per_s": 1e3 * batch_size / ms}
    return out


def _load_peer():
    """bench.peer_torch, or SystemExit saying how to install torch."""
    try:
        from bench import peer_torch
    except ImportError as error:
        raise SystemExit(f"--peer needs PyTorch ({error}); install it with `pip install "
                         "torch` (not a dependency of cwfcn)") from None
    return peer_torch


def _peer_check(peer_torch, config, images, labels, key) -> dict[str, float]:
    """One step of cwfcn and of the torch peer from the same weights, no dropout: the
    losses, and the largest difference of an updated parameter against the largest update."""
    config = copy.deepcopy(config)
    config.model.dropout_rate = 0.0
    config.model.zero_init_scores = False  # every layer's gradient is then nonzero
    net = train_lib.build_net(config, nnx.Rngs(0))
    step, peer = peer_torch.make_step(net, config, images, labels)
    torch_loss = step()
    graphdef, params = nnx.split(net)
    before = nnx.to_pure_dict(params)
    tx = train_lib.make_optimizer(config)
    params, _, loss = train_lib.train_step(jax.tree.map(jnp.copy, params), tx.init(params),
                                           images, labels, key, graphdef=graphdef, tx=tx)
    after, theirs = nnx.to_pure_dict(params), peer.params()
    diff = update = 0.0
    for name, layer in theirs.items():
        for field, value in layer.items():
            ours = np.asarray(after[name][field])
            diff = max(diff, float(np.abs(ours - value).max()))
            update = max(update, float(np.abs(ours - np.asarray(before[name][field])).max()))
    return {"loss": float(loss), "torch_loss": torch_loss, "max_param_diff": diff,
            "max_update": update}


def _peer_timing(peer_torch, net, config, images, labels, cwfcn_step, steps) -> dict:
    """ms per step (best of `steps` rounds) of cwfcn, torch eager and torch.compile."""
    fns = {"cwfcn": cwfcn_step}
    for name, compiled in (("torch eager", False), ("torch.compile", True)):
        fns[name] = peer_torch.make_step(net, config, np.asarray(images), np.asarray(labels),
                                         compiled=compiled)[0]
    best = round_robin(fns, steps, desc="cwfcn and torch, round-robin")
    return {name: 1e3 * r["wall_s"] for name, r in best.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (and rounds)")
    parser.add_argument("--narrow", action="store_true", help="the narrow net (tests)")
    parser.add_argument("--data_parallel", action="store_true",
                        help="also the step data-parallel over every device")
    parser.add_argument("--peer", action="store_true",
                        help="also the same step in PyTorch, eager and compiled (needs torch)")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args(argv)
    peer_torch = _load_peer() if args.peer else None
    config = default.get_config()
    config.model.num_classes = 21
    if args.narrow:
        config.model.widths = "narrow"
    net = train_lib.build_net(config, nnx.Rngs(0))
    images, labels = _batch(config, args.height, args.width, 1)
    key = jax.random.key(0)
    graphdef, params = nnx.split(net)
    tx = train_lib.make_optimizer(config)
    whole = functools.partial(train_lib.train_step, graphdef=graphdef, tx=tx)
    ms_step = _median_ms(Stepping(whole, (jax.tree.map(jnp.copy, params), tx.init(params)),
                                   (images, labels, key)), args.steps)
    _, trunk, head = nnx.split(net, train_lib.is_trunk, ...)
    maps = train_lib.trunk_maps(trunk, head, images, graphdef=graphdef)
    head_tx = train_lib.make_optimizer(config)
    headed = functools.partial(train_lib.head_step, graphdef=graphdef, tx=head_tx)
    ms_head = _median_ms(Stepping(lambda h, s, *r: headed(h, s, trunk, *r),
                                   (jax.tree.map(jnp.copy, head), head_tx.init(head)),
                                   (maps, labels, key)), args.steps)
    best = round_robin({**_parts(net, config, images, labels, key), **_profile(net, images)},
                       args.steps)
    ms = {name: 1e3 * r["wall_s"] for name, r in best.items()}
    parts = {"forward": ms["forward"], "backward": ms["forward+backward"] - ms["forward"],
             "optimizer": ms["optimizer"]}
    pieces = {name: {"forward_ms": ms[name], "backward_ms": ms[f"{name} fwd+bwd"] - ms[name]}
              for name in _pieces(net, images)}
    result = {"benchmark": "train", **device_info(), "height": args.height,
              "width": args.width, "widths": config.model.widths,
              "optimizer": config.optim.name, "ms_per_step": ms_step, "parts": parts,
              "head_step_ms": ms_head, "backward_profile": pieces}
    if peer_torch:
        result["peer_check"] = _peer_check(peer_torch, config, images, labels, key)
        stepping = Stepping(whole, (jax.tree.map(jnp.copy, params), tx.init(params)),
                            (images, labels, key))
        result["peer_ms_per_step"] = _peer_timing(peer_torch, net, config, images, labels,
                                                  stepping, args.steps)
    if args.data_parallel:
        result["data_parallel"] = _data_parallel(config, args.height, args.width, args.steps)
    lines = [f"training step, {args.height}x{args.width}, batch 1, {config.model.widths}, "
             f"{config.optim.name}: {ms_step:.0f} ms (median of {args.steps})",
             f"  parts: forward {parts['forward']:.0f} ms, backward {parts['backward']:.0f} ms, "
             f"optimizer {parts['optimizer']:.0f} ms",
             f"  fixed-trunk step (head_step, on the trunk's maps): {ms_head:.0f} ms "
             f"({ms_step / ms_head:.1f}x faster)",
             f"{'piece':<28}{'fwd ms':>9}{'bwd ms':>9}{'bwd/fwd':>9}"]
    for name, p in pieces.items():
        lines.append(f"{name:<28}{p['forward_ms']:>9.1f}{p['backward_ms']:>9.1f}"
                     f"{p['backward_ms'] / max(p['forward_ms'], 1e-9):>9.2f}")
    if peer_torch:
        check, peers = result["peer_check"], result["peer_ms_per_step"]
        lines.append(f"one step against torch's, no dropout: loss {check['loss']:.6f} vs "
                     f"{check['torch_loss']:.6f}, params within {check['max_param_diff']:.1e}"
                     f" (largest update {check['max_update']:.1e})")
        lines += [f"{name:<16}{ms:>9.0f} ms/step  cwfcn {ms / peers['cwfcn']:.2f}x faster"
                  for name, ms in peers.items()]
    for name, d in result.get("data_parallel", {}).items():
        lines.append(f"data-parallel, {name}: {d['ms_per_step']:.0f} ms/step, "
                     f"{d['images_per_s']:.2f} images/s")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))  # the last line: the JSON
    return result


if __name__ == "__main__":
    main()
