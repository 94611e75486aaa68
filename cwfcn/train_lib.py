"""Training: the FCN loss, one jitted SGD step, and a small training loop.

The step is a pure function of (params, optimiser state, batch) under `jax.jit`,
with the old state's buffers donated.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from cwfcn import checkpoint, model, weights
from cwfcn.data import samples, synthetic, voc


def build_net(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> model.FCN8s:
    """FCN-8s as `config.model` says (widths: "vgg16" or "narrow")."""
    widths = {"vgg16": model.VGG16_WIDTHS, "narrow": model.NARROW_WIDTHS}
    if config.model.widths not in widths:
        raise ValueError(f"config.model.widths must be one of {sorted(widths)}, "
                         f"got {config.model.widths!r}")
    return model.FCN8s(
        config.model.num_classes,
        widths=widths[config.model.widths],
        dropout_rate=config.model.dropout_rate,
        zero_init_scores=config.model.zero_init_scores,
        rngs=rngs,
    )


def loss_fn(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Pixelwise softmax cross-entropy, averaged over labelled pixels.

    FCN sums instead (with learning rates near 1e-10); the mean makes the learning
    rate independent of the image size.

    Args:
      scores: float32 `[N, H, W, C]`.
      labels: int `[N, H, W]`; values outside [0, C) (e.g. 255) are ignored.

    Returns:
      float32 scalar (0 when no pixel is labelled).
    """
    valid = (labels >= 0) & (labels < scores.shape[-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(scores, jnp.where(valid, labels, 0))
    return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(valid.sum(), 1)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """`config.optim.name`: "sgd" (with momentum, as FCN) or "adam"; with weight decay."""
    o = config.optim
    if o.name == "sgd":
        step = optax.sgd(o.learning_rate, momentum=o.momentum)
    elif o.name == "adam":
        step = optax.adam(o.learning_rate)
    else:
        raise ValueError(f"config.optim.name must be 'sgd' or 'adam', got {o.name!r}")
    return optax.chain(optax.add_decayed_weights(o.weight_decay), step)


@functools.partial(jax.jit, static_argnames=("graphdef", "tx"), donate_argnums=(0, 1))
def train_step(params, opt_state, images, labels, key, *, graphdef, tx):
    """One SGD step with dropout.

    Args:
      params: the net's `nnx.State` (donated).
      opt_state: the optimiser's state (donated).
      images: float32 `[N, H, W, 3]`, preprocessed.
      labels: int32 `[N, H, W]`, 255 = ignore.
      key: the PRNG key of this step's dropout.

    Returns:
      (params, opt_state, loss).
    """

    def loss_of(p):
        return loss_fn(nnx.merge(graphdef, p)(images, dropout_key=key), labels)

    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def synthetic_batch(config: ml_collections.ConfigDict, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch of `step`: images uint8 RGB `[N, S, S, 3]`, labels uint8 `[N, S, S]`.

    A pure function of (seed, step), so a resumed run sees the same batches.
    """
    rng = np.random.default_rng([config.seed, step])
    size, n = config.data.size, config.train.batch_size
    pairs = [synthetic.scene(rng, size, size, config.model.num_classes) for _ in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def voc_root(config: ml_collections.ConfigDict) -> str:
    """The VOC-layout directory of `config.data.root`; "sample" is the embedded sample."""
    if config.data.root == "sample":
        return str(samples.fetch(["voc_images"])["voc_images"])
    return config.data.root


def voc_batches(config: ml_collections.ConfigDict) -> Callable[[int], tuple]:
    """Whole VOC-layout images, one per step, as FCN trains (batch size one).

    Returns:
      `step -> (image uint8 [1, H, W, 3], label uint8 [1, H, W])`: a pure function of
      (seed, step): each epoch visits every image once in a seeded order, each image
      flipped left-right with probability 1/2.
    """
    if config.train.batch_size != 1:
        raise ValueError("training on whole VOC images needs config.train.batch_size = 1")
    root = voc_root(config)
    pairs = [voc.read_example(root, i) for i in voc.split_ids(root, config.data.split)]

    def batch(step: int):
        epoch, k = divmod(step, len(pairs))
        order = np.random.default_rng([config.seed, epoch]).permutation(len(pairs))
        image, label = pairs[order[k]]
        if np.random.default_rng([config.seed, step, 1]).random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return image[None], label[None]

    return batch


def make_batches(config: ml_collections.ConfigDict) -> Callable[[int], tuple]:
    """`step -> (images uint8 RGB [N, H, W, 3], labels uint8 [N, H, W])` for `config.data`."""
    if config.data.name == "synthetic":
        return functools.partial(synthetic_batch, config)
    if config.data.name == "voc":
        return voc_batches(config)
    raise ValueError(f"config.data.name must be 'synthetic' or 'voc', got {config.data.name!r}")


def init_net(config: ml_collections.ConfigDict, key: jax.Array) -> model.FCN8s:
    """A fresh net; with `config.model.init` set, its convolutions come from a weight file
    ("vgg16_onnx": the ImageNet VGG16 of the embedded sample; or a path)."""
    net = build_net(config, nnx.Rngs(key))
    if config.model.init:
        path = config.model.init
        if path == "vgg16_onnx":
            path = samples.fetch(["vgg16_onnx"])["vgg16_onnx"]
        weights.load(net, path, mean_bgr=model.MEAN_BGR[config.data.mean])
    return net


def train(
    config: ml_collections.ConfigDict, workdir: str | None = None
) -> tuple[model.FCN8s, list[float]]:
    """Trains FCN-8s on `config.data` up to step `config.train.steps`.

    With a `workdir`, resumes from its latest checkpoint and saves every
    `config.train.checkpoint_every` steps and at the end.

    Returns:
      The trained net and the loss of every step run by this call.
    """
    key, init_key = jax.random.split(jax.random.key(config.seed))
    graphdef, params = nnx.split(init_net(config, init_key))
    batches = make_batches(config)
    mean = model.MEAN_BGR[config.data.mean]
    tx = make_optimizer(config)
    opt_state = tx.init(params)
    start = 0
    if workdir is not None and checkpoint.latest_step(workdir) is not None:
        start, params, opt_state = checkpoint.restore(workdir, params, opt_state)
        print(f"resuming from step {start} in {workdir}", file=sys.stderr)
    losses = []
    bar = tqdm(range(start, config.train.steps), desc="train", file=sys.stderr,
               initial=start, total=config.train.steps)
    for step in bar:
        images, labels = batches(step)
        params, opt_state, loss = train_step(params, opt_state, model.preprocess(images, mean),
                                             jnp.asarray(labels, jnp.int32),
                                             jax.random.fold_in(key, step),
                                             graphdef=graphdef, tx=tx)
        losses.append(float(loss))
        if step % config.train.log_every == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
        done = step + 1
        if workdir is not None and (done % config.train.checkpoint_every == 0
                                    or done == config.train.steps):
            checkpoint.save(workdir, done, params, opt_state,
                            max_to_keep=config.train.keep_checkpoints)
    return nnx.merge(graphdef, params), losses


def ensure_trained(config: ml_collections.ConfigDict, workdir: str) -> tuple[model.FCN8s, bool]:
    """The net of `config` trained to `config.train.steps`, training (or resuming) only if
    `workdir` holds no checkpoint that far yet.

    Returns:
      (net, trained_now).
    """
    step = checkpoint.latest_step(workdir)
    if step is not None and step >= config.train.steps:
        net = build_net(config, nnx.Rngs(0))
        checkpoint.load_params(workdir, net, step)
        return net, False
    return train(config, workdir)[0], True
