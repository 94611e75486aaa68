"""Training inputs: the batches and validation examples of `config.data`, from its record.

`make_batches(config)` and `val_examples(config)` look `config.data.name` up in the data-set
registry (`datasets.get`): each data set's `Training` says how it reads them. Data sets of
labelled photos train on whole images, one per step, as FCN does (`image_training`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import ml_collections
import numpy as np

from cwfcn.data import datasets


def whole_image_batches(
    config: ml_collections.ConfigDict, num: int, read: Callable[[int], tuple]
) -> datasets.Batches:
    """Whole images, one per step, as FCN trains (batch size one).

    Args:
      config: its `seed` orders the epochs; `train.batch_size` must be 1.
      num: the number of training examples.
      read: `i -> (image uint8 [H, W, 3], label uint8 [H, W])` for `i` in [0, num).

    Returns:
      `step -> (image uint8 [1, H, W, 3], label uint8 [1, H, W])`: a pure function of
      (seed, step): each epoch visits every image once in a seeded order, each image
      flipped left-right with probability 1/2. Images are read when their step comes.

    Raises:
      ValueError: a batch size other than 1, or no images.
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


def image_training(train: datasets.Images, val: datasets.Images) -> datasets.Training:
    """The `Training` of a data set of labelled photos: whole images of `config.data.split`
    under `config.data.root` (`whole_image_batches`), validated on the images of
    `config.data.val_split` under `config.data.val_root` (or `config.data.root`), batch one.

    Args:
      train: the training images.
      val: the validation images (SBD validates on a VOC2011 split: VOC's images).
    """
    def batches(config: ml_collections.ConfigDict) -> datasets.Batches:
        root, split = train.resolve_root(config.data.root), config.data.split
        ids = train.ids(root, split)
        return whole_image_batches(config, len(ids), lambda i: train.read(root, split, ids[i]))

    def validation(config: ml_collections.ConfigDict) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        data = config.data
        pairs = val.examples(data.val_root or data.root, data.val_split)
        return ((image[None], label[None]) for image, label in pairs)

    return datasets.Training(batches, validation)


def _training(config: ml_collections.ConfigDict) -> datasets.Training | None:
    """`config.data.name`'s `Training`, or None when no data set trains under that name."""
    try:
        record = datasets.get(config.data.name)
    except ValueError:
        return None
    return record.training.get(config.data.name)


def make_batches(config: ml_collections.ConfigDict) -> datasets.Batches:
    """`step -> (images uint8 RGB [N, H, W, 3], labels uint8 [N, H, W])` for `config.data`.

    Raises:
      ValueError: no data set trains under `config.data.name`.
    """
    found = _training(config)
    if found is None:
        names = [name for record in datasets.records() for name in record.training]
        raise ValueError(f"config.data.name must be one of {names}, got {config.data.name!r}")
    return found.batches(config)


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
