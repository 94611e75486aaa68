"""Synthetic labelled scenes: a stand-in for real data in smoke runs and tests.

Each class has its own colour; objects are discs and boxes over a class-0
background, with pixel noise, so a net can learn them in a few steps. Turned
into video with `translate.make_translated_frames`, like the paper's PASCAL video.
"""

from __future__ import annotations

import numpy as np


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
