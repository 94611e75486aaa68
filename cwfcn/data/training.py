"""Training inputs: one grain pipeline over `config.data`'s examples, and its validation set.

`make_input(config, shard)` looks `config.data.name` up in the data-set registry
(`datasets.get`; a name "tfds:NAME/CONFIG:SPLIT" reads a prepared TFDS set through
`cwfcn.data.prepared`) and builds its `grain` pipeline (`Input`):

    examples (random access: len, [i]) -> shuffle(config.seed), reshuffled every epoch
      -> repeat -> left-right flip, seeded by position -> batch -> this host's rows

so the batch of step s is a pure function of (config, s): item s of `Input.batches`.
Data sets of labelled photos train on whole images (FCN: one per step, `image_training`);
synthetic scenes come whole by step (`datasets.Training.batches`) and take the same path
from "batch" on. A run reads its batches through a grain iterator (`Input.open`, a
`Reader`), in-process or with `config.data.workers` worker processes; the reader's state
(`Reader.state`) goes into each checkpoint (`checkpoint.save(..., input_state=)`), so a
resumed run reads on from where the checkpoint was taken, batch for batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags

from cwfcn.checkpoint import CheckpointError
from cwfcn.data import datasets

TFDS_PREFIX = "tfds:"
# The checkpoint item's format; `Reader.state` writes it, `Input.open` reads it.
STATE_FORMAT = "cwfcn-input-1"
# Example positions a pipeline addresses (more than any run reads): grain's lengths must
# fit an index, so the epochs repeat a finite number of times.
_POSITIONS = 2**40
# In-process reading (config.data.workers = 0): grain's read threads, a few batches ahead.
_READ = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


def image_training(train: datasets.Images, val: datasets.Images) -> datasets.Training:
    """The `Training` of a data set of labelled photos: the whole images of
    `config.data.split` under `config.data.root` (random access, read when their step comes),
    validated on the images of `config.data.val_split` under `config.data.val_root` (or
    `config.data.root`), one at a time.

    Args:
      train: the training images.
      val: the validation images (SBD validates on a VOC2011 split: VOC's images).
    """
    def examples(config: ml_collections.ConfigDict) -> Sequence[tuple[np.ndarray, np.ndarray]]:
        return train.indexed(config.data.root, config.data.split)

    def validation(config: ml_collections.ConfigDict) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        data = config.data
        pairs = val.examples(data.val_root or data.root, data.val_split)
        return ((image[None], label[None]) for image, label in pairs)

    return datasets.Training(None, validation, examples)


def prepared_training(spec: str) -> datasets.Training:
    """The `Training` of a prepared TFDS set, `config.data.name = "tfds:" + spec` with spec
    "NAME/CONFIG:SPLIT" (`prepared.parse_spec`): its examples under the TFDS data dir
    `config.data.root`, validated on the split `config.data.val_split` of the same
    NAME/CONFIG (under `config.data.val_root`, or `config.data.root`)."""
    from cwfcn.data import prepared  # tensorflow_datasets only for prepared sets

    name, builder_config, _ = prepared.parse_spec(spec)

    def examples(config: ml_collections.ConfigDict) -> Sequence[tuple[np.ndarray, np.ndarray]]:
        return prepared.images(spec, config.data.root)

    def validation(config: ml_collections.ConfigDict) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        data = config.data
        pairs = prepared.images(f"{name}/{builder_config}:{data.val_split}",
                                data.val_root or data.root)
        return ((image[None], label[None]) for image, label in pairs)

    return datasets.Training(None, validation, examples)


def _flip(example: tuple[np.ndarray, np.ndarray], rng: np.random.Generator):
    """`(image [H, W, 3], label [H, W])` flipped left-right with probability 1/2."""
    image, label = example
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def _stack(name: str, examples: Sequence[tuple[np.ndarray, np.ndarray]]):
    """`(images [L, H, W, 3], labels [L, H, W])` of same-sized examples."""
    shapes = sorted({image.shape[:2] for image, _ in examples})
    if len(shapes) > 1:
        raise ValueError(f"a batch of {name} images of different sizes {shapes}: whole images "
                         "of different sizes train with config.train.batch_size = 1")
    return (np.stack([image for image, _ in examples]),
            np.stack([label for _, label in examples]))


def _rows(index: int, count: int, batch: tuple[np.ndarray, np.ndarray]):
    """Block `index` of `count` equal blocks of a batch's rows."""
    size = len(batch[0]) // count
    return tuple(x[index * size:(index + 1) * size] for x in batch)


def _step_batch(batches: datasets.Batches, step: int):
    """The whole batch of `step` (grain's range gives numpy ints)."""
    return batches(int(step))


@dataclasses.dataclass(frozen=True)
class Input:
    """A run's training input on this host.

    Attributes:
      batches: item s is this host's rows of step s's batch: (images uint8 RGB
        [L, H, W, 3], labels uint8 [L, H, W]), L = config.train.batch_size / shard count;
        a grain `MapDataset` (random access, read when asked for).
      pipeline: what the order of the batches depends on (JSON): the data set, seed,
        batch size, number of host shards and of examples; a checkpoint's must match.
      workers: worker processes reading ahead (`config.data.workers`; 0: in-process).
    """

    batches: grain.MapDataset
    pipeline: dict
    workers: int

    def open(self, steps: int, start: int = 0, saved: dict | None = None,
             where: str = "the checkpoint") -> Reader:
        """A `Reader` of the batches of steps [start, steps), in order.

        Args:
          steps: the run's last step (`config.train.steps`).
          start: the first step to read (a checkpoint's step).
          saved: the input state saved with checkpoint step `start` (`Reader.state`): the
            grain iterator goes on from it (with another worker count, the reader starts
            afresh at batch `start`: the same batches); None: a fresh reader at `start`,
            whose batches are those an uninterrupted run reads (item s depends on s alone).
          where: the checkpoint, for errors.

        Raises:
          CheckpointError: `saved` is not an input state of this format, or of another
            pipeline (another data set, seed, batch size, host count or number of examples)
            or step.
        """
        if saved is None:
            return Reader(self, steps, start)
        _check_state(saved, self.pipeline, start, where)
        if saved["workers"] != self.workers:
            return Reader(self, steps, start)
        return Reader(self, steps, saved["offset"], saved["grain"])


class Reader:
    """This host's batches of steps [offset, steps) in order, read by a grain iterator
    (`iter(...)` over `Input.batches[offset:steps]`, with `Input.workers` processes)."""

    def __init__(self, inputs: Input, steps: int, offset: int, state: dict | None = None):
        self._inputs, self._offset = inputs, offset
        data = inputs.batches[offset:max(offset, steps)].to_iter_dataset(_READ)
        if inputs.workers:
            if not flags.FLAGS.is_parsed():  # a library call: grain's workers read absl flags
                flags.FLAGS.mark_as_parsed()
            data = data.mp_prefetch(grain.MultiprocessingOptions(num_workers=inputs.workers))
        self._iterator = iter(data)
        if state is not None:
            self._iterator.set_state(state)

    def __iter__(self) -> Reader:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        """The next step's (images uint8 [L, H, W, 3], labels uint8 [L, H, W])."""
        return next(self._iterator)

    def state(self, step: int) -> dict:
        """The checkpoint item once `step` steps are done (JSON): {"format", "next_step":
        step, "pipeline": `Input.pipeline`, "workers", "offset": the step this reader
        started at, "grain": the iterator's `get_state()`, relative to `offset`}."""
        return {"format": STATE_FORMAT, "next_step": step, "pipeline": self._inputs.pipeline,
                "workers": self._inputs.workers, "offset": self._offset,
                "grain": self._iterator.get_state()}

    def close(self) -> None:
        """Stops the read-ahead threads and worker processes."""
        self._iterator.close()


def _check_state(saved: Any, pipeline: dict, step: int, where: str) -> None:
    """Raises CheckpointError unless `saved` is an input state of `pipeline` at `step`."""
    keys = {"format", "next_step", "pipeline", "workers", "offset", "grain"}
    if (not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT or set(saved) != keys
            or not isinstance(saved["pipeline"], dict)):
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(f"{where}: its input state is not one this version reads "
                              f"(format {found!r}, want {STATE_FORMAT!r}): train into a new "
                              "--workdir")
    grain_index = saved["grain"].get("next_index") if isinstance(saved["grain"], dict) else None
    if (saved["next_step"] != step or not 0 <= saved["offset"] <= step
            or grain_index not in (None, step - saved["offset"])):
        raise CheckpointError(f"{where}: its input state is of step {saved['next_step']} "
                              f"(from {saved['offset']}), not {step}: the checkpoint is damaged; "
                              "delete its step directory to use the step before")
    changed = {k: (saved["pipeline"].get(k), v) for k, v in pipeline.items()
               if saved["pipeline"].get(k) != v}
    if changed or set(saved["pipeline"]) != set(pipeline):
        what = ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in changed.items())
        raise CheckpointError(f"{where} was trained on another input ({what or 'other keys'}): "
                              "resuming would read other batches; resume with the config it "
                              "was trained with, or train into a new --workdir")


def _training(config: ml_collections.ConfigDict) -> datasets.Training | None:
    """`config.data.name`'s `Training`, or None when no data set trains under that name."""
    name = config.data.name
    if name.startswith(TFDS_PREFIX):
        return prepared_training(name[len(TFDS_PREFIX):])
    try:
        record = datasets.get(name)
    except ValueError:
        return None
    return record.training.get(name)


def make_input(config: ml_collections.ConfigDict, shard: tuple[int, int] = (0, 1)) -> Input:
    """The training input of `config.data` on this host.

    Args:
      config: `data.name` (and what its `Training` reads), `seed` (the shuffle of every
        epoch and the flips), `train.batch_size` (the global batch), `data.workers`.
      shard: (index, count): this host's block of every global batch's rows, of `count`
        equal blocks (`train_lib.host_shard`); (0, 1): the whole batch.

    Returns:
      An `Input`: item s of its `batches` is block `index` of step s's global batch, so the
      hosts' blocks of a step are disjoint and make up the batch a single host reads.

    Raises:
      ValueError: no data set trains under `config.data.name`, no examples, or a batch size
        that does not split into `count` blocks.
    """
    found = _training(config)
    if found is None:
        names = [name for record in datasets.records() for name in record.training]
        raise ValueError(f"config.data.name must be one of {names} or "
                         f"'{TFDS_PREFIX}NAME/CONFIG:SPLIT', got {config.data.name!r}")
    index, count = shard
    size = config.train.batch_size
    if size % count or not 0 <= index < count:
        raise ValueError(f"config.train.batch_size = {size} does not split over {count} hosts: "
                         f"use a multiple of {count}")
    pipeline = {"data": config.data.name, "seed": config.seed, "batch_size": size,
                "hosts": count}
    if found.examples is None:  # whole batches by step (synthetic scenes)
        steps = grain.MapDataset.range(_POSITIONS)
        batches = steps.map(functools.partial(_step_batch, found.batches(config)))
        batches = batches.map(functools.partial(_rows, index, count))
    else:
        examples = found.examples(config)
        if len(examples) == 0:
            raise ValueError(f"the {config.data.name} split {config.data.split!r} holds no "
                             "images")
        pipeline.update(split=config.data.split, examples=len(examples))
        stream = grain.MapDataset.source(examples).shuffle(seed=config.seed)
        stream = stream.repeat(-(-_POSITIONS // len(examples))).random_map(_flip,
                                                                            seed=config.seed)
        batch = functools.partial(_stack, config.data.name)
        batches = stream.batch(size // count, drop_remainder=True, batch_fn=batch)[index::count]
    return Input(batches, pipeline, config.data.get("workers", 0))


def make_batches(config: ml_collections.ConfigDict) -> datasets.Batches:
    """`step -> (images uint8 RGB [N, H, W, 3], labels uint8 [N, H, W])`: the global batch of
    a step, as `make_input(config)` reads it (a pure function of (config, step)).

    Raises:
      ValueError: no data set trains under `config.data.name`.
    """
    batches = make_input(config).batches
    return lambda step: batches[step]


def val_examples(config: ml_collections.ConfigDict) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The validation set of `config.data`: `(images uint8 [N, H, W, 3], labels uint8 [N, H, W])`
    (the data set's `Training.validation`).

    Raises:
      ValueError: no data set trains under `config.data.name`.
    """
    found = _training(config)
    if found is None:
        raise ValueError(f"no validation data for config.data.name {config.data.name!r}")
    return found.validation(config)

