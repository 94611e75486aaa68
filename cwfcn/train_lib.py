"""Training: the FCN loss, one jitted SGD step, and a small training loop.

The step is a pure function of (params, optimiser state, batch) under `jax.jit`,
with the old state's buffers donated. As in FCN's reference nets, the learned
upsamplers (`upscore2`, `upscore_pool4`) stay fixed at bilinear interpolation
unless `config.optim.train_upsampling`; with `config.optim.train_trunk` False the VGG
convolutions stay fixed too, and each step runs only the rest of the net on their maps,
computed once per distinct input (`head_step`). With a workdir, the loop appends one JSON
line per logged step (and per validation pass) to `<workdir>/metrics.jsonl`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from cwfcn import checkpoint, config_check, distributed, metrics, model, weights
from cwfcn.data import datasets, samples, training
from cwfcn.durable import append_json_line, write_atomically

# The global batch of a step, as a run reads it (`training.make_batches`).
make_batches = training.make_batches
# FCN's deconvolution layers with lr_mult 0: fixed bilinear upsampling.
UPSAMPLING_PARAMS = ("upscore2", "upscore_pool4")
METRICS_FILE = "metrics.jsonl"
# A fixed trunk's maps kept for reuse (`_head_stepper`): the sample's 6 inputs take 60 MB.
TRUNK_MAPS_BYTES = 2 << 30


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
        return model.TruncatedFCN(model.TRUNCATED_STAGES[arch], datasets.net_classes(config),
                                  widths=widths[config.model.widths],
                                  zero_init_scores=config.model.zero_init_scores, rngs=rngs)
    return model.FCN8s(
        datasets.net_classes(config),
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
    optim = config.optim
    if optim.name == "sgd":
        step = optax.sgd(optim.learning_rate, momentum=optim.momentum)
    elif optim.name == "adam":
        step = optax.adam(optim.learning_rate)
    else:
        raise ValueError(f"config.optim.name must be 'sgd' or 'adam', got {optim.name!r}")
    tx = optax.chain(optax.add_decayed_weights(optim.weight_decay), step)
    if optim.get("train_upsampling", False):
        return tx
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, param_labels)


def _update(loss_of, params, opt_state, tx):
    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


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
    return _update(lambda p: loss_fn(nnx.merge(graphdef, p)(images, dropout_key=key), labels),
                   params, opt_state, tx)


def is_trunk(path, _) -> bool:
    """An `nnx` filter: the VGG convolutions' parameters (conv1_1 .. conv5_3), which stay
    fixed unless `config.optim.train_trunk`."""
    return str(path[0]) in weights.VGG_CONVS


@functools.partial(jax.jit, static_argnames=("graphdef",))
def trunk_maps(trunk, head, images, *, graphdef):
    """`FCN8s.trunk` of preprocessed images float32 `[N, H, W, 3]`: (pool3, pool4, pool5)."""
    return nnx.merge(graphdef, trunk, head).trunk(images)


@functools.partial(jax.jit, static_argnames=("graphdef", "tx"), donate_argnums=(0, 1))
def head_step(head, opt_state, trunk, maps, labels, key, *, graphdef, tx):
    """`train_step` with the VGG convolutions fixed, from their maps: the step runs only
    what follows them (`FCN8s.head`), and gives the same update to the rest of the net.

    Args:
      head: the parameters outside the trunk (`nnx.split(net, is_trunk, ...)`; donated).
      opt_state: the optimiser's state of `head` (donated).
      trunk: the trunk's parameters (unchanged).
      maps: (pool3, pool4, pool5) of the batch's images (`trunk_maps`).
      labels: int32 `[N, H, W]`, 255 = ignore.
      key: the PRNG key of this step's dropout.

    Returns:
      (head, opt_state, loss).
    """
    return _update(lambda p: loss_fn(nnx.merge(graphdef, trunk, p).head(
        *maps, labels.shape[1:3], key), labels), head, opt_state, tx)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def predict(params, images: jax.Array, *, graphdef) -> jax.Array:
    """Class ids int32 `[N, H, W]` of the full net (no dropout) on preprocessed images."""
    return jnp.argmax(nnx.merge(graphdef, params)(images), axis=-1).astype(jnp.int32)


def validate(config: ml_collections.ConfigDict, graphdef, params) -> dict[str, float]:
    """Mean IU and pixel accuracy of the full net (every stage fresh: the oracle) on
    `training.val_examples(config)`.

    Returns:
      {"val_mean_iu", "val_pixel_acc"}, from the confusion summed over the set.
    """
    mean = datasets.mean_bgr_of(config)
    num_classes = datasets.net_classes(config)
    hist = np.zeros((num_classes, num_classes), np.int64)
    for images, labels in training.val_examples(config):
        preds = predict(params, model.preprocess(images, mean), graphdef=graphdef)
        hist += metrics.confusion(np.asarray(labels), np.asarray(preds), num_classes)
    s = metrics.scores(hist)
    return {"val_mean_iu": s["mean_iu"], "val_pixel_acc": s["pixel_acc"]}


def is_due(completed: int, every: int, last: int) -> bool:
    """Whether a periodic action (a log row, a validation pass, a checkpoint) runs once
    `completed` steps are done: every `every` steps and after the `last` step; never when
    `every` is 0."""
    return bool(every) and (completed % every == 0 or completed == last)


def append_metrics(workdir: str, record: dict) -> None:
    """Appends `record` as one JSON line to `<workdir>/metrics.jsonl`, flushed and synced."""
    os.makedirs(workdir, exist_ok=True)
    append_json_line(os.path.join(workdir, METRICS_FILE), record)


def _forget_metrics_after(workdir: str, step: int) -> None:
    """Drops the log rows of steps after `step` (a killed run logged them after its last
    checkpoint; the resumed run logs them again), so that each step has one row."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.readlines()
    # A row torn by the kill (no newline, or not JSON) is dropped too.
    kept = [line for line in lines if line.endswith("\n") and _row_step(line) <= step]
    if len(kept) != len(lines):
        write_atomically(path, lambda f: f.writelines(kept))


def _row_step(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return float("inf")


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
            weights.load(net, path, mean_bgr=datasets.mean_bgr_of(config))
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


def host_shard(batch_size: int, mesh: Mesh | None) -> tuple[int, int]:
    """(index, count): the block of every global batch's rows that this process feeds
    (`distributed.host_rows`), for `training.make_input`; (0, 1) without a mesh."""
    if mesh is None:
        return 0, 1
    rows = distributed.host_rows(batch_size, mesh)
    size = rows.stop - rows.start
    return rows.start // size, batch_size // size


def _global_batch(mesh: Mesh, batch_size: int, rows):
    """This process's rows of a global batch of `batch_size` as global arrays sharded by rows
    over "data" (every process passes its own block, `host_shard`)."""
    sharding = NamedSharding(mesh, P(distributed.DATA_AXIS))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        sharding, np.asarray(x), (batch_size, *x.shape[1:])), rows)


def _open_input(config: ml_collections.ConfigDict, inputs: training.Input, workdir: str | None,
                start: int) -> training.Reader:
    """The reader of steps [start, config.train.steps): from the input state saved with
    checkpoint `start` in `workdir`, or, for a checkpoint saved without one (an older
    format), afresh at batch `start` (the same batches: a step's batch depends on it alone)."""
    if workdir is None or start == 0:
        return inputs.open(config.train.steps)
    saved = checkpoint.restore_input(workdir, start)
    if saved is None:
        print(f"checkpoint step {start} in {workdir} holds no input state (saved by an older "
              f"version): the input resumes at batch {start} by its index", file=sys.stderr)
    return inputs.open(config.train.steps, start, saved,
                       where=f"checkpoint step {start} in {workdir!r}")


class Interrupted(Exception):
    """Training stopped between two steps because `train`'s `stop` asked (train.py: at a
    SIGINT or SIGTERM), no save in flight.

    Attributes:
      signum: what `stop` returned (the signal's number).
      step: the steps completed.
      checkpoint: the latest step saved in the workdir, or None (no workdir, or none yet).
    """

    def __init__(self, signum: int, step: int, checkpoint: int | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        last = "none yet" if checkpoint is None else f"step {checkpoint}"
        super().__init__(f"interrupted at step {step}; the last checkpoint is {last}")


def train(
    config: ml_collections.ConfigDict, workdir: str | None = None, *, mesh: Mesh | None = None,
    stop: Callable[[], int | None] | None = None,
) -> tuple[model.FCN8s, list[float]]:
    """Trains FCN-8s on `config.data` up to step `config.train.steps`.

    The batches come from the data's grain pipeline (`training.make_input`): step s reads
    the batch of index s, shuffled by `config.seed`, with `config.data.workers` processes.
    With a `workdir`, resumes from its latest checkpoint and saves every
    `config.train.checkpoint_every` steps and at the end, each checkpoint with the input's
    state (`training.Reader.state`), so a resumed run reads the batches an uninterrupted
    one would. Every `config.train.log_every`
    steps (and at the end) it appends {"step", "loss" (mean since the last log),
    "images_per_s", "learning_rate"} to `<workdir>/metrics.jsonl`; every
    `config.train.eval_every` steps (0: never) it validates (`validate`) and appends
    {"step", "val_mean_iu", "val_pixel_acc"}. Steps count completed steps, as checkpoints.

    With a `mesh` (`distributed.make_mesh`) it trains data-parallel: params and optimiser
    state replicated, each batch sharded by rows over the devices (`config.train.batch_size`
    must split over them), so `train_step` all-reduces the gradients. In a multi-process
    run every process calls this; each reads only its own rows (`host_shard`) and only
    process 0 writes the log and holds the workdir (`checkpoint.hold_workdir`: a second run
    on it fails at once, naming this one).

    `stop`, called before each step, ends training there (raising `Interrupted`) when it
    returns a number: every save is complete by then, since `checkpoint.save` waits for it.

    Returns:
      The trained net and the loss of every step run by this call.

    Raises:
      ValueError: a bad config value (`config_check`), bad data, or a `workdir` that
        cannot be written, is held by another run (`checkpoint.WorkdirBusyError`), or holds
        a checkpoint that does not fit (`checkpoint.CheckpointError`).
      Interrupted: `stop` asked.
    """
    config_check.check(config)
    frozen = not config.optim.get("train_trunk", True)
    if frozen and (config.model.arch != "fcn8s" or jax.process_count() > 1):
        raise ValueError("config.optim.train_trunk = False (the VGG convolutions fixed, their "
                         "maps computed once per input) trains FCN-8s in one process; set it "
                         "True for a truncated baseline or a multi-host run")
    if workdir is None:
        return _train(config, None, mesh, stop, frozen)
    checkpoint.check_writable(workdir)
    with (checkpoint.hold_workdir(workdir) if jax.process_index() == 0
          else contextlib.nullcontext()):
        return _train(config, workdir, mesh, stop, frozen)


def _train(config: ml_collections.ConfigDict, workdir: str | None, mesh: Mesh | None,
           stop: Callable[[], int | None] | None, frozen: bool
           ) -> tuple[model.FCN8s, list[float]]:
    """`train` after its checks, with the workdir held; `frozen`: the trunk stays fixed."""
    key, init_key = jax.random.split(jax.random.key(config.seed))
    net = init_net(config, init_key)
    # The parameters the optimiser updates, and the fixed trunk's (None: it trains too).
    if frozen:
        graphdef, trunk, params = nnx.split(net, is_trunk, ...)
    else:
        (graphdef, params), trunk = nnx.split(net), None
    inputs = training.make_input(config, host_shard(config.train.batch_size, mesh))
    mean = datasets.mean_bgr_of(config)
    tx = make_optimizer(config)
    opt_state = tx.init(params)
    start = 0
    if workdir is not None and checkpoint.latest_step(workdir) is not None:
        whole = params if trunk is None else nnx.merge_state(trunk, params)
        start, whole, opt_state = checkpoint.restore(workdir, whole, opt_state)
        trunk, params = nnx.split_state(whole, is_trunk, ...) if frozen else (None, whole)
        print(f"resuming from step {start} in {workdir}", file=sys.stderr)
        if jax.process_index() == 0:
            _forget_metrics_after(workdir, start)
    if mesh is not None:
        trunk, params, opt_state = distributed.replicate(mesh, (trunk, params, opt_state))
    reader = _open_input(config, inputs, workdir, start)
    stepper = _full_stepper(graphdef, tx) if trunk is None else _head_stepper(graphdef, tx, trunk)
    try:
        params, losses = _loop(config, workdir, mesh, reader, stepper, params, opt_state, mean,
                               key, start, stop)
    finally:
        reader.close()
    return nnx.merge(graphdef, stepper.whole(params)), losses


class _Stepper(NamedTuple):
    """How `_loop` trains: `step(params, opt_state, raw, images, labels, key) -> (params,
    opt_state, loss)` on a batch as read (`raw`) and preprocessed (`images`), and
    `whole(params)`: the net's whole state (to validate and checkpoint)."""

    graphdef: nnx.GraphDef
    step: Callable
    whole: Callable[[nnx.State], nnx.State]


def _full_stepper(graphdef, tx) -> _Stepper:
    """`train_step` on the whole net (`raw` is unused)."""
    def step(params, opt_state, raw, images, labels, key):
        del raw
        return train_step(params, opt_state, images, labels, key, graphdef=graphdef, tx=tx)
    return _Stepper(graphdef, step, lambda params: params)


def _head_stepper(graphdef, tx, trunk: nnx.State) -> _Stepper:
    """`head_step` with the trunk's parameters fixed. The trunk's maps of each distinct
    batch (by the bytes of `raw`) are computed once and kept, up to `TRUNK_MAPS_BYTES` in
    all: the few photos of a small set, each flipped or not, then cost one trunk pass each
    for the whole run."""
    kept, held = {}, [0]

    def step(params, opt_state, raw, images, labels, key):
        digest = hashlib.sha256(np.ascontiguousarray(raw)).digest()
        maps = kept.get(digest)
        if maps is None:
            maps = trunk_maps(trunk, params, images, graphdef=graphdef)
            size = sum(m.nbytes for m in maps)
            if held[0] + size <= TRUNK_MAPS_BYTES:
                kept[digest], held[0] = maps, held[0] + size
        return head_step(params, opt_state, trunk, maps, labels, key, graphdef=graphdef, tx=tx)
    return _Stepper(graphdef, step, lambda params: nnx.merge_state(trunk, params))


def _loop(config, workdir, mesh, reader, stepper: _Stepper, params, opt_state, mean, key,
          start, stop):
    """`train`'s steps [start, config.train.steps) on the batches of `reader`, until `stop`
    returns a number (`Interrupted`).

    Returns:
      The trained parameters and the loss of every step run.
    """
    log = workdir is not None and jax.process_index() == 0
    losses = []
    bar = tqdm(range(start, config.train.steps), desc="train", file=sys.stderr,
               initial=start, total=config.train.steps, disable=jax.process_index() > 0)
    eval_every, last = config.train.get("eval_every", 0), config.train.steps
    # Steps and images since the last log row, and when its throughput clock started.
    steps_since_log, images_since_log, log_clock = 0, 0, time.perf_counter()
    saved = start if workdir is not None and start else None  # the latest checkpoint's step
    for step in bar:
        signum = stop() if stop is not None else None
        if signum:
            bar.close()  # its line ends before the caller reports the interruption
            raise Interrupted(signum, step, saved)
        raw, labels = next(reader)
        images = raw
        if mesh is not None:
            images, labels = _global_batch(mesh, config.train.batch_size, (raw, labels))
        params, opt_state, loss = stepper.step(params, opt_state, raw,
                                               model.preprocess(images, mean),
                                               jnp.asarray(labels, jnp.int32),
                                               jax.random.fold_in(key, step))
        losses.append(float(loss))
        steps_since_log, images_since_log = steps_since_log + 1, images_since_log + len(images)
        completed = step + 1  # steps completed, as the log rows and checkpoints count them
        if is_due(completed, config.train.log_every, last):
            rate = images_since_log / max(time.perf_counter() - log_clock, 1e-9)
            record = {"step": completed, "loss": float(np.mean(losses[-steps_since_log:])),
                      "images_per_s": rate, "learning_rate": float(config.optim.learning_rate)}
            bar.set_postfix(loss=f"{record['loss']:.4g}", img_s=f"{rate:.3g}")
            if log:
                append_metrics(workdir, record)
            steps_since_log, images_since_log = 0, 0
        if is_due(completed, eval_every, last):
            val = validate(config, stepper.graphdef, stepper.whole(params))
            bar.write(f"step {completed}: val mean IU {val['val_mean_iu']:.4f}, "
                      f"pixel acc {val['val_pixel_acc']:.4f}", file=sys.stderr)
            if log:
                append_metrics(workdir, {"step": completed, **val})
        if workdir is not None and is_due(completed, config.train.checkpoint_every, last):
            # The last step may leave the optimiser state out (a cache of the trained net).
            drop = completed == last and not config.train.get("save_final_optimizer", True)
            checkpoint.save(workdir, completed, stepper.whole(params),
                            None if drop else opt_state,
                            input_state=reader.state(completed),
                            max_to_keep=config.train.keep_checkpoints)
            saved = completed
        if steps_since_log == 0:
            log_clock = time.perf_counter()  # throughput leaves validation and saving out
    return params, losses


def loss_summary(losses: list[float]) -> str:
    """One line on a run's losses: the mean of the first and of the last tenth of its steps."""
    tenth = max(1, len(losses) // 10)
    return (f"loss: first {np.mean(losses[:tenth]):.4f} -> last {np.mean(losses[-tenth:]):.4f} "
            f"over {len(losses)} steps")


def train_job(config: ml_collections.ConfigDict, workdir: str | None, *,
              data_parallel: bool = False, stop: Callable[[], int | None] | None = None) -> str:
    """train.py's job: `train` on one device, or data-parallel over every device when asked
    or when several processes run, until done or `stop` asks; returns the `loss_summary`
    line."""
    parallel = data_parallel or jax.process_count() > 1
    mesh = distributed.make_mesh() if parallel else None
    return loss_summary(train(config, workdir, mesh=mesh, stop=stop)[1])


def ensure_trained(config: ml_collections.ConfigDict, workdir: str) -> tuple[model.FCN8s, bool]:
    """The net of `config` trained to `config.train.steps`, training (or resuming) only if
    `workdir` holds no checkpoint that far yet.

    A cache shared by runs started together (two terminals, a job array): the first trains
    and the others wait for it (saying so), then load what it saved.

    Returns:
      (net, trained_now).
    """
    while True:
        step = checkpoint.latest_step(workdir)
        if step is not None and step >= config.train.steps:
            net = build_net(config, nnx.Rngs(0))
            checkpoint.load_params(workdir, net, step)
            return net, False
        try:
            return train(config, workdir)[0], True
        except checkpoint.WorkdirBusyError as busy:
            print(f"{busy.holder} is training this model into {workdir}: waiting for it to "
                  "finish, then using what it saved", file=sys.stderr)
            checkpoint.wait_for_workdir(workdir)
