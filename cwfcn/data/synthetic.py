"""Synthetic labelled scenes: a stand-in for real data in smoke runs and tests.

Each class has its own colour; objects are discs and boxes over a class-0
background, with pixel noise, so a net can learn them in a few steps. Turned
into video with `translate.make_translated_frames`, like the paper's PASCAL video.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np

from cwfcn.data import datasets, protocol, translate, voc

# Synthetic validation scenes are the batches of these steps on: never trained on.
VAL_STEP_OFFSET = 10**6
# The classes of the default config's scenes: as many as PASCAL VOC's.
DEFAULT_NUM_CLASSES = len(voc.VOC_CLASSES)


def scene(
    rng: np.random.Generator, height: int, width: int, num_classes: int, num_objects: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """A random scene of coloured objects.

    Args:
      rng: numpy random generator (explicit, so scenes are reproducible).
      height, width: image size in pixels.
      num_classes: C; objects take classes 1..C-1, the background is 0.
      num_objects: objects drawn, later ones over earlier ones.

    Returns:
      image uint8 `[H, W, 3]` RGB and label uint8 `[H, W]` in [0, C).
    """
    palette = np.random.default_rng(num_classes).uniform(0, 255, (num_classes, 3))
    label = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(num_objects):
        cls = rng.integers(1, num_classes)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.1, 0.3) * min(height, width)
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        else:
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= 0.7 * r)
        label[mask] = cls
    image = palette[label] + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def synthetic_batch(config: ml_collections.ConfigDict, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch of `step`: images uint8 RGB `[N, S, S, 3]`, labels uint8 `[N, S, S]`.

    A pure function of (seed, step), so a resumed run sees the same batches; the scenes
    have the config's net's classes (`datasets.net_classes`).
    """
    rng = np.random.default_rng([config.seed, step])
    size, n = config.data.size, config.train.batch_size
    num_classes = datasets.net_classes(config)
    pairs = [scene(rng, size, size, num_classes) for _ in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def validation_batches(
    config: ml_collections.ConfigDict,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`config.data.num_val` held-out batches: those of steps `VAL_STEP_OFFSET` on."""
    return (synthetic_batch(config, VAL_STEP_OFFSET + i) for i in range(config.data.num_val))


def scenes(
    *, seed: int, num_videos: int, size: int, shift: int, num_frames: int, num_classes: int
) -> Sequence[protocol.Video]:
    """READ of `--data synthetic`: `num_videos` translated videos of synthetic scenes
    (`scene` of `size + shift * (num_frames - 1)` x `size`, then
    `translate.translated_video`): frames uint8 `[T, S, S, 3]`, every frame labelled, frames
    2.. scored; keyed "scene <i>".

    The scenes are drawn one after another from one generator seeded with `seed`, so video i
    is the same however the videos are visited: the generator's state before each video is
    kept (a few bytes), and a video is drawn from the nearest state before it.
    """
    states = {0: np.random.default_rng(seed).bit_generator.state}

    def draw(i: int) -> protocol.Video:
        start = max(j for j in states if j <= i)
        rng = np.random.default_rng()
        rng.bit_generator.state = states[start]
        for j in range(start, i + 1):
            image, label = scene(rng, size + shift * (num_frames - 1), size, num_classes)
            states[j + 1] = rng.bit_generator.state
        return translate.translated_video(f"scene {i}", image, label, shift, num_frames)

    return protocol.Lazy(num_videos, draw, keep=False)


def synthetic_videos(
    *, seed: int, num_videos: int, size: int, shift: int, num_frames: int, num_classes: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The videos of `scenes` as `(frames uint8 [T, S, S, 3], labels uint8 [T, S, S])`."""
    return protocol.pairs(scenes(seed=seed, num_videos=num_videos, size=size, shift=shift,
                                 num_frames=num_frames, num_classes=num_classes))


def _read(request: datasets.Request) -> Sequence[protocol.Video]:
    """The translated scenes `config.data` describes, of the config's net's classes."""
    config = request.config
    if config is None:
        raise ValueError("data 'synthetic' needs a config (config.data, config.model)")
    data = config.data
    return scenes(seed=config.seed, num_videos=data.num_videos, size=data.size,
                  shift=data.shift, num_frames=data.num_frames,
                  num_classes=datasets.net_classes(config))


DATASET = datasets.DataSet(
    name="synthetic",
    classes=tuple(f"class {i}" for i in range(DEFAULT_NUM_CLASSES)),
    mean_bgr=voc.DATASET.mean_bgr,
    frame_size="config.data.size square scenes; videos slide config.data.shift px a frame",
    videos={"synthetic": datasets.Videos(_read, protocol.form_whole, translate.PROTOCOL,
                                         "synthetic", needs_dir=False, config_classes=True)},
    training={"synthetic": datasets.Training(
        lambda config: functools.partial(synthetic_batch, config), validation_batches)},
)
