"""Training: the FCN loss, one jitted SGD step, and a small training loop.

The step is a pure function of (params, optimiser state, batch) under `jax.jit`,
with the old state's buffers donated.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from cwfcn import checkpoint, model
from cwfcn.data import synthetic


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
    """SGD with high momentum and weight decay, as FCN."""
    return optax.chain(
        optax.add_decayed_weights(config.optim.weight_decay),
        optax.sgd(config.optim.learning_rate, momentum=config.optim.momentum),
    )


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


def synthetic_batch(config: ml_collections.ConfigDict, step: int) -> tuple[jax.Array, jax.Array]:
    """The batch of `step`: images float32 `[N, S, S, 3]`, labels int32 `[N, S, S]`.

    A pure function of (seed, step), so a resumed run sees the same batches.
    """
    rng = np.random.default_rng([config.seed, step])
    size, n = config.data.size, config.train.batch_size
    pairs = [synthetic.scene(rng, size, size, config.model.num_classes) for _ in range(n)]
    images = np.stack([p[0] for p in pairs])
    labels = np.stack([p[1] for p in pairs]).astype(np.int32)
    return model.preprocess(images, model.MEAN_BGR[config.data.mean]), jnp.asarray(labels)


def train(
    config: ml_collections.ConfigDict, workdir: str | None = None
) -> tuple[model.FCN8s, list[float]]:
    """Trains FCN-8s on synthetic scenes up to step `config.train.steps`.

    With a `workdir`, resumes from its latest checkpoint and saves every
    `config.train.checkpoint_every` steps and at the end.

    Returns:
      The trained net and the loss of every step run by this call.
    """
    key, init_key = jax.random.split(jax.random.key(config.seed))
    graphdef, params = nnx.split(build_net(config, nnx.Rngs(init_key)))
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
        images, labels = synthetic_batch(config, step)
        params, opt_state, loss = train_step(params, opt_state, images, labels,
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
