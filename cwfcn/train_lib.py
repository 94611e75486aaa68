"""Training: the FCN loss, one jitted SGD step, and a small training loop.

The step is a pure function of (params, optimiser state, batch) under `jax.jit`,
with the old state's buffers donated. As in FCN's reference nets, the learned
upsamplers (`upscore2`, `upscore_pool4`) stay fixed at bilinear interpolation
unless `config.optim.train_upsampling`. With a workdir, the loop appends one JSON
line per logged step (and per validation pass) to `<workdir>/metrics.jsonl`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from cwfcn import checkpoint, config_check, distributed, metrics, model, weights
from cwfcn.data import cityscapes, nyud, samples, synthetic, voc
from cwfcn.durable import append_json_line

# FCN's deconvolution layers with lr_mult 0: fixed bilinear upsampling.
UPSAMPLING_PARAMS = ("upscore2", "upscore_pool4")
# Synthetic validation scenes are the batches of these steps on: never trained on.
VAL_STEP_OFFSET = 10**6
METRICS_FILE = "metrics.jsonl"


def build_net(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> model.FCN8s:
    """The net `config.model` says: FCN-8s, or with `arch` "pool3"/"pool4" the paper's
    truncated baseline (`model.TruncatedFCN`); widths "vgg16" or "narrow"."""
    widths = {"vgg16": model.VGG16_WIDTHS, "narrow": model.NARROW_WIDTHS}
    if config.model.widths not in widths:
        raise ValueError(f"config.model.widths must be one of {sorted(widths)}, "
                         f"got {config.model.widths!r}")
    arch = config.model.arch
    if arch not in model.ARCHS:
        raise ValueError(f"config.model.arch must be one of {model.ARCHS}, got {arch!r}")
    if arch != "fcn8s":
        return model.TruncatedFCN(model.TRUNCATED_STAGES[arch], config.model.num_classes,
                                  widths=widths[config.model.widths],
                                  zero_init_scores=config.model.zero_init_scores, rngs=rngs)
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


def param_labels(params) -> object:
    """"frozen" for the leaves of `UPSAMPLING_PARAMS`, "train" for the rest (same tree)."""

    def label(path, _) -> str:
        top = path[0]
        name = getattr(top, "key", getattr(top, "name", None))
        return "frozen" if name in UPSAMPLING_PARAMS else "train"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """`config.optim.name`: "sgd" (with momentum, as FCN) or "adam"; with weight decay.

    Unless `config.optim.train_upsampling`, the upsampling deconvolutions get zero updates
    (and no weight decay), as FCN's lr_mult 0.
    """
    o = config.optim
    if o.name == "sgd":
        step = optax.sgd(o.learning_rate, momentum=o.momentum)
    elif o.name == "adam":
        step = optax.adam(o.learning_rate)
    else:
        raise ValueError(f"config.optim.name must be 'sgd' or 'adam', got {o.name!r}")
    tx = optax.chain(optax.add_decayed_weights(o.weight_decay), step)
    if o.get("train_upsampling", False):
        return tx
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, param_labels)


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


def whole_image_batches(
    config: ml_collections.ConfigDict, num: int, read: Callable[[int], tuple]
) -> Callable[[int], tuple]:
    """Whole images, one per step, as FCN trains (batch size one).

    Args:
      config: its `seed` orders the epochs; `train.batch_size` must be 1.
      num: the number of training examples.
      read: `i -> (image uint8 [H, W, 3], label uint8 [H, W])` for `i` in [0, num).

    Returns:
      `step -> (image uint8 [1, H, W, 3], label uint8 [1, H, W])`: a pure function of
      (seed, step): each epoch visits every image once in a seeded order, each image
      flipped left-right with probability 1/2. Images are read when their step comes.
    """
    if config.train.batch_size != 1:
        raise ValueError(f"training on whole {config.data.name} images needs "
                         "config.train.batch_size = 1")
    if num == 0:
        raise ValueError(f"the {config.data.name} split {config.data.split!r} holds no images")

    def batch(step: int):
        epoch, k = divmod(step, num)
        order = np.random.default_rng([config.seed, epoch]).permutation(num)
        image, label = read(int(order[k]))
        if np.random.default_rng([config.seed, step, 1]).random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return np.ascontiguousarray(image)[None], np.ascontiguousarray(label)[None]

    return batch


def voc_batches(config: ml_collections.ConfigDict) -> Callable[[int], tuple]:
    """Whole images of the VOC-layout `config.data.root`, split `config.data.split`."""
    root = voc_root(config)
    ids = voc.split_ids(root, config.data.split)
    return whole_image_batches(config, len(ids), lambda i: voc.read_example(root, ids[i]))


def sbd_batches(config: ml_collections.ConfigDict) -> Callable[[int], tuple]:
    """Whole images of SBD (`config.data.root` = benchmark_RELEASE), FCN's PASCAL training set."""
    root = config.data.root
    ids = voc.sbd_split_ids(root, config.data.split)
    return whole_image_batches(config, len(ids), lambda i: voc.read_sbd_example(root, ids[i]))


def nyud_batches(config: ml_collections.ConfigDict) -> Callable[[int], tuple]:
    """Whole labelled NYUDv2 photos (40 classes) of split `config.data.split`."""
    root = config.data.root
    ids = nyud.split_ids(root, config.data.split)
    return whole_image_batches(config, len(ids), lambda i: nyud.read_example(root, ids[i]))


def _cityscapes_example(root: str, split: str, frame_id: str) -> tuple[np.ndarray, np.ndarray]:
    frames, labels = cityscapes.read_snippet(root, split, frame_id, num_frames=1)
    return frames[0], labels[0]


def cityscapes_batches(config: ml_collections.ConfigDict) -> Callable[[int], tuple]:
    """Whole gtFine-labelled Cityscapes frames (19 trainIds) of split `config.data.split`."""
    root, split = config.data.root, config.data.split
    ids = cityscapes.labelled_frame_ids(root, split)
    return whole_image_batches(config, len(ids),
                               lambda i: _cityscapes_example(root, split, ids[i]))


_WHOLE_IMAGE_SOURCES = {"voc": voc_batches, "sbd": sbd_batches, "nyud": nyud_batches,
                        "cityscapes": cityscapes_batches}


def make_batches(config: ml_collections.ConfigDict) -> Callable[[int], tuple]:
    """`step -> (images uint8 RGB [N, H, W, 3], labels uint8 [N, H, W])` for `config.data`."""
    if config.data.name == "synthetic":
        return functools.partial(synthetic_batch, config)
    if config.data.name in _WHOLE_IMAGE_SOURCES:
        return _WHOLE_IMAGE_SOURCES[config.data.name](config)
    names = ["synthetic", *_WHOLE_IMAGE_SOURCES]
    raise ValueError(f"config.data.name must be one of {names}, got {config.data.name!r}")


def val_examples(config: ml_collections.ConfigDict) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The validation set of `config.data`: `(images uint8 [N, H, W, 3], labels uint8 [N, H, W])`.

    Synthetic: `config.data.num_val` held-out batches (steps from `VAL_STEP_OFFSET`).
    Otherwise the images of `config.data.val_split` under `config.data.val_root` (or
    `config.data.root`), batch one; for "sbd" that is a VOC2011 split of a VOCdevkit
    (FCN validates on seg11valid).
    """
    d = config.data
    if d.name == "synthetic":
        return (synthetic_batch(config, VAL_STEP_OFFSET + i) for i in range(d.num_val))
    root = d.val_root or (voc_root(config) if d.name == "voc" else d.root)
    if d.name in ("voc", "sbd"):
        pairs = voc.examples(root, d.val_split)
    elif d.name == "nyud":
        pairs = nyud.examples(root, d.val_split)
    elif d.name == "cityscapes":
        ids = cityscapes.labelled_frame_ids(root, d.val_split)
        pairs = (_cityscapes_example(root, d.val_split, i) for i in ids)
    else:
        raise ValueError(f"no validation data for config.data.name {d.name!r}")
    return ((image[None], label[None]) for image, label in pairs)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def predict(params, images: jax.Array, *, graphdef) -> jax.Array:
    """Class ids int32 `[N, H, W]` of the full net (no dropout) on preprocessed images."""
    return jnp.argmax(nnx.merge(graphdef, params)(images), axis=-1).astype(jnp.int32)


def validate(config: ml_collections.ConfigDict, graphdef, params) -> dict[str, float]:
    """Mean IU and pixel accuracy of the full net (every stage fresh: the oracle) on
    `val_examples(config)`.

    Returns:
      {"val_mean_iu", "val_pixel_acc"}, from the confusion summed over the set.
    """
    mean = model.MEAN_BGR[config.data.mean]
    c = config.model.num_classes
    hist = np.zeros((c, c), np.int64)
    for images, labels in val_examples(config):
        preds = predict(params, model.preprocess(images, mean), graphdef=graphdef)
        hist += metrics.confusion(np.asarray(labels), np.asarray(preds), c)
    s = metrics.scores(hist)
    return {"val_mean_iu": s["mean_iu"], "val_pixel_acc": s["pixel_acc"]}


def append_metrics(workdir: str, record: dict) -> None:
    """Appends `record` as one JSON line to `<workdir>/metrics.jsonl`, flushed and synced."""
    os.makedirs(workdir, exist_ok=True)
    append_json_line(os.path.join(workdir, METRICS_FILE), record)


def init_net(config: ml_collections.ConfigDict, key: jax.Array) -> model.FCN8s:
    """A fresh net; with `config.model.init` set, its convolutions come from a weight file
    ("vgg16_onnx": the ImageNet VGG16 of the embedded sample; or a path), or from an FCN-8s
    checkpoint directory (`train.py --workdir` of an FCN-8s config): a truncated baseline
    fine-tuned from FCN-8s takes the convolutions it has."""
    net = build_net(config, nnx.Rngs(key))
    if config.model.init:
        path = config.model.init
        if path == "vgg16_onnx":
            path = samples.fetch(["vgg16_onnx"])["vgg16_onnx"]
        if os.path.isdir(path):
            source = build_net(with_arch(config, "fcn8s"), nnx.Rngs(0))
            checkpoint.load_params(path, source)
            _copy_convs(source, net)
        else:
            weights.load(net, path, mean_bgr=model.MEAN_BGR[config.data.mean])
    return net


def with_arch(config: ml_collections.ConfigDict, arch: str) -> ml_collections.ConfigDict:
    """A copy of `config` for another net of `model.ARCHS` (an FCN-8s init checkpoint, a
    truncated baseline beside FCN-8s); `config` itself is left as it is (it may be locked)."""
    other = ml_collections.ConfigDict(config.to_dict())
    other.model.arch = arch
    return other


def _copy_convs(source: nnx.Module, target: nnx.Module) -> None:
    """The VGG convolutions `target` has, copied from `source` (shapes checked)."""
    for name in weights.VGG_CONVS:
        if not hasattr(target, name):
            continue
        src, dst = getattr(source, name), getattr(target, name)
        for attr in ("kernel", "bias"):
            a, b = getattr(src, attr), getattr(dst, attr)
            if a.shape != b.shape:
                raise ValueError(f"config.model.init: {name}.{attr} has shape {a.shape} in the "
                                 f"checkpoint but {b.shape} in this net (widths?)")
            b.set_value(a[...])


def train(
    config: ml_collections.ConfigDict, workdir: str | None = None, *, mesh: Mesh | None = None
) -> tuple[model.FCN8s, list[float]]:
    """Trains FCN-8s on `config.data` up to step `config.train.steps`.

    With a `workdir`, resumes from its latest checkpoint and saves every
    `config.train.checkpoint_every` steps and at the end. Every `config.train.log_every`
    steps (and at the end) it appends {"step", "loss" (mean since the last log),
    "images_per_s", "learning_rate"} to `<workdir>/metrics.jsonl`; every
    `config.train.eval_every` steps (0: never) it validates (`validate`) and appends
    {"step", "val_mean_iu", "val_pixel_acc"}. Steps count completed steps, as checkpoints.

    With a `mesh` (`distributed.make_mesh`) it trains data-parallel: params and optimiser
    state replicated, each batch sharded by rows over the devices (`config.train.batch_size`
    must split over them), so `train_step` all-reduces the gradients. In a multi-process
    run every process calls this; each feeds its own rows and only process 0 writes the log.

    Returns:
      The trained net and the loss of every step run by this call.

    Raises:
      ValueError: a bad config value (`config_check`), bad data, or a `workdir` that
        cannot be written (`checkpoint.CheckpointError`).
    """
    config_check.check(config)
    if workdir is not None:
        checkpoint.check_writable(workdir)
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
    if mesh is not None:
        params, opt_state = distributed.replicate(mesh, (params, opt_state))
    log = workdir is not None and jax.process_index() == 0
    losses = []
    bar = tqdm(range(start, config.train.steps), desc="train", file=sys.stderr,
               initial=start, total=config.train.steps, disable=jax.process_index() > 0)
    eval_every = config.train.get("eval_every", 0)
    since, images_since, tic = 0, 0, time.perf_counter()
    for step in bar:
        images, labels = batches(step)
        if mesh is not None:
            images, labels = distributed.shard_batch(mesh, (images, labels))
        params, opt_state, loss = train_step(params, opt_state, model.preprocess(images, mean),
                                             jnp.asarray(labels, jnp.int32),
                                             jax.random.fold_in(key, step),
                                             graphdef=graphdef, tx=tx)
        losses.append(float(loss))
        since, images_since = since + 1, images_since + len(images)
        done = step + 1
        if done % config.train.log_every == 0 or done == config.train.steps:
            rate = images_since / max(time.perf_counter() - tic, 1e-9)
            record = {"step": done, "loss": float(np.mean(losses[-since:])),
                      "images_per_s": rate, "learning_rate": float(config.optim.learning_rate)}
            bar.set_postfix(loss=f"{record['loss']:.4g}", img_s=f"{rate:.3g}")
            if log:
                append_metrics(workdir, record)
            since, images_since = 0, 0
        if eval_every and (done % eval_every == 0 or done == config.train.steps):
            val = validate(config, graphdef, params)
            bar.write(f"step {done}: val mean IU {val['val_mean_iu']:.4f}, "
                      f"pixel acc {val['val_pixel_acc']:.4f}", file=sys.stderr)
            if log:
                append_metrics(workdir, {"step": done, **val})
        if workdir is not None and (done % config.train.checkpoint_every == 0
                                    or done == config.train.steps):
            checkpoint.save(workdir, done, params, opt_state,
                            max_to_keep=config.train.keep_checkpoints)
        if since == 0:
            tic = time.perf_counter()  # throughput leaves validation and saving out
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
