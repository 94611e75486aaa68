"""Synthetic video from a still image: a crop window translated along the longer axis.

This is the paper's "translated PASCAL" benchmark: every frame is a shifted crop of the same image,
so ground truth is known for every frame and the motion is a pure translation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cwfcn.data import protocol

# The paper scores frames 2..5 of each 6-frame video: the pipelined schedules fill their first
# frames from earlier ones, so scoring only later frames compares every method on the same frames.
SCORED_FRAMES = slice(2, None)
# How the translated videos are scored, for tables and results.
PROTOCOL = "translated videos of 6 frames, frames 2..5 scored (pascal-translate-exp)"


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}; pass e.g. {name}=1")


def _window(axis: int, start: int, size: int) -> tuple[slice, ...]:
    """Index selecting ``[start, start + size)`` along ``axis`` (0 or 1) and everything else."""
    crop = slice(start, start + size)
    return (crop,) if axis == 0 else (slice(None), crop)


def make_translated_frames(
    image: Any, label: Any, shift: int, num_frames: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Slide a crop window along the image's longer axis to make a video.

    With L the length of the longer axis (height on a tie), frame k is the window
    ``[k*shift, k*shift + L - shift*(num_frames-1))`` along that axis and the full extent along
    the other, cut identically from image and label.

    Args:
      image: ``[H, W, 3]`` image, any dtype (kept).
      label: ``[H, W]`` label map, any dtype (kept).
      shift: translation between consecutive frames in pixels, positive int.
      num_frames: number of frames T, positive int.

    Returns:
      ``(frames, labels)``: ``[T, H', W', 3]`` and ``[T, H', W']`` numpy arrays, where the
      sliding axis has length ``L - shift*(T-1)``.

    Raises:
      ValueError: for a non-positive or non-int shift / num_frames, a bad image or label shape,
        or an image too small for the requested translation.
    """
    _check_positive_int("shift", shift)
    _check_positive_int("num_frames", num_frames)
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image.shape}; pass an RGB image")
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"label shape {label.shape} must equal the image's (H, W) = {image.shape[:2]}; "
            "pass the label map matching this image"
        )
    axis = 0 if image.shape[0] >= image.shape[1] else 1
    length = image.shape[axis]
    travel = shift * (num_frames - 1)
    window = length - travel
    if window < 1:
        raise ValueError(
            f"image too small for this shift: need L > shift*(num_frames-1) = {travel} along the "
            f"longer axis, got L = {length}; use a smaller shift or fewer frames"
        )
    windows = [_window(axis, k * shift, window) for k in range(num_frames)]
    return np.stack([image[w] for w in windows]), np.stack([label[w] for w in windows])


def translated_video(key: str, image: Any, label: Any, shift: int,
                     num_frames: int = 6) -> protocol.Video:
    """The translated video of one image (`make_translated_frames`) as a `protocol.Video`:
    frames uint8 `[T, H', W', 3]` at times 0..T-1, every frame labelled (`[T, H', W']`),
    frames 2.. scored (`SCORED_FRAMES`)."""
    frames, labels = make_translated_frames(image, label, shift, num_frames)
    return protocol.labelled_video(key, frames, labels, SCORED_FRAMES)
