"""Tests for cwfcn.data.translate."""

from __future__ import annotations

import numpy as np
import pytest

from cwfcn.data.translate import SCORED_FRAMES, make_translated_frames


def _image_and_label(h: int, w: int, dtype=np.uint8, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3)).astype(dtype)
    label = (image[..., 0].astype(np.int64) % 21).astype(np.uint8)
    return image, label


@pytest.mark.parametrize(
    ("h", "w", "shift", "frame_hw"),
    [
        (30, 20, 3, (15, 20)),  # portrait: slides vertically, 30 - 5*3 = 15 rows
        (20, 30, 3, (20, 15)),  # landscape: slides horizontally
        (24, 24, 2, (14, 24)),  # square: slides vertically, 24 - 5*2 = 14
    ],
)
def test_shapes(h, w, shift, frame_hw):
    image, label = _image_and_label(h, w)
    frames, labels = make_translated_frames(image, label, shift)
    assert frames.shape == (6, *frame_hw, 3)
    assert labels.shape == (6, *frame_hw)


def test_num_frames_and_minimal_window():
    image, label = _image_and_label(10, 7)
    frames, _ = make_translated_frames(image, label, shift=3, num_frames=4)
    assert frames.shape == (4, 1, 7, 3)  # 10 - 3*3 = 1 row: the smallest legal window
    frames, _ = make_translated_frames(image, label, shift=4, num_frames=1)
    np.testing.assert_array_equal(frames[0], image)


@pytest.mark.parametrize(("h", "w"), [(30, 20), (20, 30)])
def test_content_is_translated_window(h, w):
    shift = 3
    image, label = _image_and_label(h, w, seed=1)
    frames, labels = make_translated_frames(image, label, shift)
    win = max(h, w) - 5 * shift
    vertical = h >= w
    for k in range(6):
        start = k * shift
        if vertical:
            expected_img, expected_lab = image[start : start + win], label[start : start + win]
        else:
            expected_img, expected_lab = (
                image[:, start : start + win],
                label[:, start : start + win],
            )
        np.testing.assert_array_equal(frames[k], expected_img)
        np.testing.assert_array_equal(labels[k], expected_lab)
        # Labels cut from the same window as the frame.
        np.testing.assert_array_equal(labels[k], frames[k][..., 0].astype(np.int64) % 21)
    for k in range(5):
        # Consecutive frames overlap in all but `shift` rows/cols, moved by `shift`.
        if vertical:
            np.testing.assert_array_equal(frames[k + 1][: win - shift], frames[k][shift:])
        else:
            np.testing.assert_array_equal(frames[k + 1][:, : win - shift], frames[k][:, shift:])


@pytest.mark.parametrize(("img_dtype", "lab_dtype"), [(np.uint8, np.uint8), (np.float32, np.int32)])
def test_dtype_preserved(img_dtype, lab_dtype):
    image, label = _image_and_label(16, 12, dtype=img_dtype)
    frames, labels = make_translated_frames(image, label.astype(lab_dtype), 2)
    assert frames.dtype == img_dtype
    assert labels.dtype == lab_dtype


def test_scored_frames():
    assert list(range(6))[SCORED_FRAMES] == [2, 3, 4, 5]


def test_error_image_too_small():
    image, label = _image_and_label(10, 8)
    with pytest.raises(ValueError, match=r"too small.*smaller shift or fewer frames"):
        make_translated_frames(image, label, shift=2)  # needs L > 10


@pytest.mark.parametrize("shift", [0, -2, 1.5, True])
def test_error_bad_shift(shift):
    image, label = _image_and_label(30, 20)
    with pytest.raises(ValueError, match="shift"):
        make_translated_frames(image, label, shift)


def test_error_bad_num_frames():
    image, label = _image_and_label(30, 20)
    with pytest.raises(ValueError, match="num_frames"):
        make_translated_frames(image, label, 2, num_frames=0)


def test_error_label_shape_mismatch():
    image, label = _image_and_label(30, 20)
    with pytest.raises(ValueError, match="label shape"):
        make_translated_frames(image, label[:, :-1], 2)


@pytest.mark.parametrize("shape", [(30, 20), (30, 20, 4), (1, 30, 20, 3)])
def test_error_bad_image_rank(shape):
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        make_translated_frames(np.zeros(shape, np.uint8), np.zeros((30, 20), np.uint8), 2)
