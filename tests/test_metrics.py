"""Tests for cwfcn.metrics against hand-worked cases and independent loop references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cwfcn import metrics

# ---------------------------------------------------------------------------------------------
# confusion


def _confusion_loop(labels: np.ndarray, preds: np.ndarray, c: int) -> np.ndarray:
    """Reference confusion: one python iteration per pixel."""
    hist = np.zeros((c, c), np.int64)
    for t, p in zip(np.ravel(labels).tolist(), np.ravel(preds).tolist(), strict=True):
        if 0 <= t < c:
            hist[t, p] += 1
    return hist


def test_confusion_hand_worked():
    labels = np.array([[0, 1, 2], [1, 1, 255]])
    preds = np.array([[0, 2, 2], [1, 0, 0]])
    # Pairs (truth, pred): (0,0) (1,2) (2,2) (1,1) (1,0); the 255 pixel is ignored.
    expected = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 1]])
    hist = metrics.confusion(labels, preds, 3)
    assert hist.dtype == np.int64
    np.testing.assert_array_equal(hist, expected)


def test_confusion_ignores_255_and_refuses_other_out_of_range_labels():
    labels = np.array([255, 255, 0, 2])
    preds = np.array([0, 1, 1, 2])
    expected = np.zeros((3, 3), np.int64)
    expected[0, 1] = 1
    expected[2, 2] = 1
    np.testing.assert_array_equal(metrics.confusion(labels, preds, 3), expected)
    for stray in (-1, 3, 7):
        with pytest.raises(ValueError, match=rf"labels must lie in \[0, 3\) or be 255.*{stray}"):
            metrics.confusion(np.array([0, stray]), np.array([0, 0]), 3)
    # uint8 labels: 255 must not wrap into a valid bin through C*label overflow.
    np.testing.assert_array_equal(
        metrics.confusion(np.array([255, 0], np.uint8), np.array([0, 0], np.uint8), 3).sum(), 1
    )


def test_confusion_matches_loop_reference():
    rng = np.random.default_rng(0)
    c = 5
    labels = rng.integers(0, c, size=(2, 7, 9))
    labels[rng.random(labels.shape) < 0.2] = 255
    preds = rng.integers(0, c, size=(2, 7, 9))
    np.testing.assert_array_equal(
        metrics.confusion(labels, preds, c), _confusion_loop(labels, preds, c)
    )


def test_confusion_jax_path_equals_numpy_path():
    rng = np.random.default_rng(1)
    c = 4
    labels = rng.integers(0, c, size=(3, 6, 5)).astype(np.int32)
    labels[0, 0, :] = 255
    labels[1, 2, :] = -1
    preds = rng.integers(0, c, size=(3, 6, 5)).astype(np.int32)
    expected = _confusion_loop(labels, preds, c)

    eager = metrics.confusion(jnp.asarray(labels), jnp.asarray(preds), c)
    assert isinstance(eager, jax.Array)
    assert eager.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(eager), expected)

    # Mixed inputs take the jax path too.
    mixed = metrics.confusion(labels, jnp.asarray(preds), c)
    assert isinstance(mixed, jax.Array)
    np.testing.assert_array_equal(np.asarray(mixed), expected)

    jitted = jax.jit(metrics.confusion, static_argnums=2)(
        jnp.asarray(labels), jnp.asarray(preds), c
    )
    assert jitted.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(jitted), expected)


def test_confusion_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion(jnp.zeros((2, 3), int), jnp.zeros((6,), int), 2)


def test_confusion_numpy_rejects_out_of_range_preds():
    with pytest.raises(ValueError, match="predictions"):
        metrics.confusion(np.array([0, 1]), np.array([0, 3]), 3)


# ---------------------------------------------------------------------------------------------
# scores

# rows = truth, cols = prediction
HIST = np.array([[3, 1, 0], [1, 2, 1], [0, 0, 2]], np.int64)


def test_scores_hand_worked():
    # t (row sums) = [4, 4, 2], p (col sums) = [4, 3, 3], total = 10, trace = 7.
    # acc = [3/4, 2/4, 2/2]; IU = [3/(4+4-3), 2/(4+3-2), 2/(2+3-2)] = [3/5, 2/5, 2/3].
    s = metrics.scores(HIST)
    assert s["pixel_acc"] == pytest.approx(7 / 10)
    assert s["mean_acc"] == pytest.approx((3 / 4 + 2 / 4 + 1) / 3)  # 0.75
    assert s["mean_iu"] == pytest.approx((3 / 5 + 2 / 5 + 2 / 3) / 3)  # 5/9
    assert s["fw_iu"] == pytest.approx((4 * 3 / 5 + 4 * 2 / 5 + 2 * 2 / 3) / 10)  # 8/15
    assert s["mean_iu"] == pytest.approx(5 / 9)
    assert s["fw_iu"] == pytest.approx(8 / 15)
    assert set(s) == {"pixel_acc", "mean_acc", "mean_iu", "fw_iu"}
    assert all(isinstance(v, float) for v in s.values())


def test_scores_accepts_jax():
    s_np = metrics.scores(HIST)
    s_jax = metrics.scores(jnp.asarray(HIST, jnp.int32))
    assert s_jax == pytest.approx(s_np)


def test_scores_class_absent_everywhere_drops_out():
    padded = np.zeros((5, 5), np.int64)
    padded[:3, :3] = HIST  # classes 3 and 4 neither occur nor are predicted
    assert metrics.scores(padded) == pytest.approx(metrics.scores(HIST))


def test_scores_predicted_only_class_counts_with_zero_iu():
    # One class-2 pixel predicted as class 3, which never occurs in truth.
    hist = np.zeros((4, 4), np.int64)
    hist[:3, :3] = HIST
    hist[2, 3] = 1
    # t = [4, 4, 3, 0], p = [4, 3, 3, 1]; IU = [3/5, 2/5, 2/(3+3-2), 0/(0+1-0)] = [.6, .4, .5, 0]
    s = metrics.scores(hist)
    iu_present = [3 / 5, 2 / 5, 1 / 2]
    assert s["mean_iu"] == pytest.approx((sum(iu_present) + 0.0) / 4)  # 0.375
    # Exactly the 3-class mean scaled by 3/4: class 3 adds a zero term to the mean.
    assert s["mean_iu"] == pytest.approx(sum(iu_present) / 3 * 3 / 4)
    # mean_acc skips class 3 (accuracy undefined): (3/4 + 2/4 + 2/3) / 3.
    assert s["mean_acc"] == pytest.approx((3 / 4 + 2 / 4 + 2 / 3) / 3)
    assert s["pixel_acc"] == pytest.approx(7 / 11)
    assert s["fw_iu"] == pytest.approx((4 * 0.6 + 4 * 0.4 + 3 * 0.5) / 11)  # 0.5


def test_scores_perfect_prediction():
    s = metrics.scores(np.diag([5, 0, 3, 9]))
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert s[key] == 1.0


def test_scores_all_zero_gives_nan_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = metrics.scores(np.zeros((3, 3), np.int64))
    assert all(math.isnan(v) for v in s.values())


# ---------------------------------------------------------------------------------------------
# boundary_mask


def _band_brute_force(label: np.ndarray, r: int) -> np.ndarray:
    """Band by distances: dilated iff some fg pixel lies within r; eroded iff the pixel is fg and
    every in-image background pixel lies farther than r."""
    fg = (label > 0) & (label != 255)
    fg_pts = np.argwhere(fg)
    bg_pts = np.argwhere(~fg)
    band = np.zeros(label.shape, bool)
    for y in range(label.shape[0]):
        for x in range(label.shape[1]):
            d2_fg = ((fg_pts - (y, x)) ** 2).sum(axis=1) if len(fg_pts) else np.array([np.inf])
            d2_bg = ((bg_pts - (y, x)) ** 2).sum(axis=1) if len(bg_pts) else np.array([np.inf])
            dilated = d2_fg.min() <= r * r
            eroded = fg[y, x] and d2_bg.min() > r * r
            band[y, x] = dilated and not eroded
    return band


def _square(size: int = 40, lo: int = 10, hi: int = 30, cls: int = 3, bg: int = 0) -> np.ndarray:
    label = np.full((size, size), bg, np.uint8)
    label[lo:hi, lo:hi] = cls
    return label


@pytest.mark.parametrize("radius", [2, 5])
def test_boundary_mask_matches_brute_force(radius):
    label = _square()
    band = metrics.boundary_mask(label, radius)
    assert band.dtype == bool and band.shape == (40, 40)
    np.testing.assert_array_equal(band, _band_brute_force(label, radius))


def test_boundary_mask_specific_pixels():
    band = metrics.boundary_mask(_square(), radius=5)  # square occupies rows/cols 10..29
    assert not band[20, 20]  # centre: 10 px from background
    assert band[9, 20]  # just outside the top edge
    assert band[10, 20]  # just inside the top edge
    assert band[5, 20] and not band[4, 20]  # 5 px out is in, 6 px out is not
    assert band[25, 20] and not band[24, 20]  # inside: 5 px from background row 30 in, 6 px not
    assert not band[0, 0]  # far corner
    # Disk, not square: (7,7) is sqrt(18) from corner (10,10), (6,6) is sqrt(32) > 5.
    assert band[7, 7] and not band[6, 6]


def test_boundary_mask_border_neither_erodes_nor_dilates():
    label = _square(lo=0, hi=20, cls=1)  # square in the top-left corner, touching the border
    band = metrics.boundary_mask(label, radius=3)
    assert not band[0, :17].any() and not band[:17, 0].any()
    assert band[19, 5] and band[20, 5]  # the interior edge still has a band
    np.testing.assert_array_equal(band, _band_brute_force(label, 3))
    assert not metrics.boundary_mask(np.ones((12, 10), np.int32), 2).any()


def test_boundary_mask_ignore_is_background():
    np.testing.assert_array_equal(
        metrics.boundary_mask(_square(bg=255), 3), metrics.boundary_mask(_square(bg=0), 3)
    )
    assert not metrics.boundary_mask(_square(cls=255), 3).any()


def test_boundary_mask_empty_and_jax_input():
    assert not metrics.boundary_mask(np.zeros((15, 15), np.int32), 2).any()
    out = metrics.boundary_mask(jnp.asarray(_square()), 2)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, metrics.boundary_mask(_square(), 2))


@pytest.mark.parametrize("radius", [0, -1, 2.0, True])
def test_boundary_mask_bad_radius(radius):
    with pytest.raises(ValueError, match="radius"):
        metrics.boundary_mask(_square(), radius)


# ---------------------------------------------------------------------------------------------
# boundary_confusion


def test_boundary_confusion_equals_masked_loop():
    rng = np.random.default_rng(2)
    c, r = 4, 2
    labels = np.stack([_square(24, 6, 16, 3), _square(24, 4, 12, 1, bg=255)]).astype(np.int64)
    labels[0, 8:10, 8:14] = 2  # an inner object to give the band more classes
    preds = rng.integers(0, c, size=labels.shape)
    expected = np.zeros((c, c), np.int64)
    for n in range(labels.shape[0]):
        band = metrics.boundary_mask(labels[n], r)
        for y in range(labels.shape[1]):
            for x in range(labels.shape[2]):
                t = labels[n, y, x]
                if band[y, x] and 0 <= t < c:
                    expected[t, preds[n, y, x]] += 1
    hist = metrics.boundary_confusion(labels, preds, c, radius=r)
    assert hist.dtype == np.int64
    np.testing.assert_array_equal(hist, expected)
    assert hist.sum() < (labels < c).sum()  # the band really excludes pixels
    single = metrics.boundary_confusion(labels[0], preds[0], c, radius=r)
    np.testing.assert_array_equal(single, metrics.boundary_confusion(labels[:1], preds[:1], c, r))


def test_boundary_confusion_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        metrics.boundary_confusion(np.zeros((4, 4), int), np.zeros((4, 5), int), 2)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        metrics.boundary_confusion(np.zeros(4, int), np.zeros(4, int), 2)


def test_band_confusion_hand_worked():
    labels = np.array([[0, 1, 2], [1, 255, 2]])
    preds = np.array([[0, 2, 2], [0, 0, 1]])
    bands = np.array([[True, True, False], [True, True, True]])
    # In the band: (0,0) (1,2) (1,0) (2,1); the 255 pixel is ignored, (2,2) lies outside.
    expected = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0]])
    hist = metrics.band_confusion(labels, preds, bands, 3)
    assert isinstance(hist, np.ndarray) and hist.dtype == np.int64
    np.testing.assert_array_equal(hist, expected)
    args = (jnp.asarray(labels), jnp.asarray(preds), jnp.asarray(bands))
    eager = metrics.band_confusion(*args, 3)
    assert isinstance(eager, jax.Array)
    np.testing.assert_array_equal(np.asarray(eager), expected)
    jitted = jax.jit(metrics.band_confusion, static_argnums=3)(*args, 3)
    np.testing.assert_array_equal(np.asarray(jitted), expected)


def test_band_confusion_jax_path_equals_numpy_path_and_boundary_confusion():
    rng = np.random.default_rng(5)
    c, r = 4, 2
    labels = np.stack([_square(24, 6, 16, 3), _square(24, 4, 12, 1, bg=255)]).astype(np.uint8)
    preds = rng.integers(0, c, size=labels.shape).astype(np.int32)
    bands = np.stack([metrics.boundary_mask(label, r) for label in labels])
    want = metrics.boundary_confusion(labels, preds, c, radius=r)
    np.testing.assert_array_equal(metrics.band_confusion(labels, preds, bands, c), want)
    on_device = jax.jit(metrics.band_confusion, static_argnums=3)(
        jnp.asarray(labels), jnp.asarray(preds), jnp.asarray(bands), c)
    np.testing.assert_array_equal(np.asarray(on_device), want)
    # Mixed inputs take the jax path too.
    assert isinstance(metrics.band_confusion(labels, jnp.asarray(preds), bands, c), jax.Array)
    with pytest.raises(ValueError, match="bands and labels must have the same shape"):
        metrics.band_confusion(labels, preds, bands[0], c)


# ---------------------------------------------------------------------------------------------
# temporal_difference


def test_temporal_difference_hand_worked():
    video = np.array(
        [
            [[0, 0], [0, 0]],
            [[0, 1], [0, 0]],  # 1 of 4 pixels changed
            [[1, 1], [2, 0]],  # 2 of 4 changed vs the previous frame
        ]
    )
    assert metrics.temporal_difference(video) == pytest.approx((0 + 1 / 4 + 2 / 4) / 3)


def test_temporal_difference_constant_and_single_frame():
    assert metrics.temporal_difference(np.full((4, 3, 5), 7)) == 0.0
    assert metrics.temporal_difference(np.arange(6).reshape(1, 2, 3)) == 0.0
    assert metrics.temporal_difference(jnp.arange(8).reshape(2, 2, 2)) == pytest.approx(0.5)


def test_temporal_difference_rank_error():
    with pytest.raises(ValueError, match="T, H, W"):
        metrics.temporal_difference(np.zeros((3, 4)))


def test_temporal_difference_jax_path_equals_numpy_path_under_jit():
    video = np.array([[[0, 0], [0, 0]], [[0, 1], [0, 0]], [[1, 1], [2, 0]]])
    want = (0 + 1 / 4 + 2 / 4) / 3  # hand-worked, as above
    eager = metrics.temporal_difference(jnp.asarray(video))
    jitted = jax.jit(metrics.temporal_difference)(jnp.asarray(video))
    for got in (eager, jitted):
        assert isinstance(got, jax.Array) and got.dtype == jnp.float32
        assert float(got) == pytest.approx(want)
    assert float(jax.jit(metrics.temporal_difference)(jnp.zeros((1, 2, 3), int))) == 0.0
    rng = np.random.default_rng(6)
    maps = rng.integers(0, 3, (5, 7, 4))
    assert float(jax.jit(metrics.temporal_difference)(jnp.asarray(maps))) == pytest.approx(
        metrics.temporal_difference(maps), rel=1e-6)
    with pytest.raises(ValueError, match="T, H, W"):
        metrics.temporal_difference(jnp.zeros((3, 4)))


# ---------------------------------------------------------------------------------------------
# video_consistency (VSPW's VC_k)

# Three frames of three pixels a, b, c (one row each):
#   gt    a: 1 1 1   b: 2 2 0   c: 255 3 3
#   pred  a: 1 1 0   b: 0 0 0   c: 1   1 1
VC_LABELS = np.array([[[1, 2, 255]], [[1, 2, 3]], [[1, 0, 3]]], np.uint8)
VC_PREDS = np.array([[[1, 0, 1]], [[1, 0, 1]], [[0, 0, 1]]])


def _vc_loop(labels, preds, k, times=None):
    """Reference VC counts: one python iteration per window and pixel."""
    s, h, w = labels.shape
    times = list(range(s)) if times is None else list(times)
    consistent = total = 0
    for start in range(s - k + 1):
        if times[start + k - 1] - times[start] != k - 1:
            continue
        for y in range(h):
            for x in range(w):
                gt = labels[start : start + k, y, x].tolist()
                pred = preds[start : start + k, y, x].tolist()
                if gt[0] != 255 and gt == [gt[0]] * k:
                    total += 1
                    consistent += pred == [pred[0]] * k
    return consistent, total


def test_video_consistency_hand_worked():
    # k = 2. Window (0, 1): gt common a, b (c is ignored on frame 0); preds steady on both.
    # Window (1, 2): gt common a, c (b changes); preds steady on c only (a: 1 -> 0).
    assert metrics.video_consistency_counts(VC_LABELS, VC_PREDS, 2) == (3, 4)
    assert metrics.video_consistency(VC_LABELS, VC_PREDS, 2) == 0.75
    # k = 3: one window, gt common a only, whose prediction changes.
    assert metrics.video_consistency_counts(VC_LABELS, VC_PREDS, 3) == (0, 1)
    assert metrics.video_consistency(VC_LABELS, VC_PREDS, 3) == 0.0
    # k = 1: every frame its own window; each labelled pixel is consistent with itself.
    assert metrics.video_consistency_counts(VC_LABELS, VC_PREDS, 1) == (8, 8)


def test_video_consistency_counts_only_windows_of_consecutive_frames():
    # Frames 0, 1 and 3 of a video: only window (0, 1) is consecutive.
    assert metrics.video_consistency_counts(VC_LABELS, VC_PREDS, 2, times=[0, 1, 3]) == (2, 2)
    assert metrics.video_consistency(VC_LABELS, VC_PREDS, 2, times=(0, 1, 3)) == 1.0
    assert metrics.video_consistency_counts(VC_LABELS, VC_PREDS, 3, times=[0, 1, 3]) == (0, 0)
    assert metrics.video_consistency(VC_LABELS, VC_PREDS, 3, times=[0, 1, 3]) is None


def test_video_consistency_k_longer_than_the_clip_has_no_window():
    assert metrics.video_consistency_counts(VC_LABELS, VC_PREDS, 4) == (0, 0)
    assert metrics.video_consistency(VC_LABELS, VC_PREDS, 16) is None
    got = jax.jit(metrics.video_consistency_counts, static_argnums=2)(
        jnp.asarray(VC_LABELS), jnp.asarray(VC_PREDS), 4)
    assert [int(x) for x in got] == [0, 0]


def test_video_consistency_ignores_pixels_ignored_on_any_frame_of_the_window():
    labels = np.full((4, 2, 2), 255, np.uint8)  # the same label everywhere, but ignored
    assert metrics.video_consistency_counts(labels, np.zeros((4, 2, 2), int), 2) == (0, 0)
    labels[:, 0, 0] = 4
    labels[2, 0, 0] = 255  # ignored on frame 2 alone: windows (0, 1) only, of k = 2
    assert metrics.video_consistency_counts(labels, np.zeros((4, 2, 2), int), 2) == (1, 1)
    assert metrics.video_consistency_counts(labels, np.zeros((4, 2, 2), int), 3) == (0, 0)


def test_video_consistency_jax_path_equals_numpy_path_and_loop_under_jit():
    rng = np.random.default_rng(8)
    # Few classes changing rarely, so windows have common pixels; some ignored.
    labels = np.repeat(rng.integers(0, 3, (1, 6, 5)), 9, axis=0)
    flips = rng.random(labels.shape) < 0.1
    labels = np.where(flips, rng.integers(0, 3, labels.shape), labels)
    labels[rng.random(labels.shape) < 0.05] = 255
    labels = labels.astype(np.uint8)
    preds = np.where(rng.random(labels.shape) < 0.1, rng.integers(0, 3, labels.shape),
                     np.repeat(rng.integers(0, 3, (1, 6, 5)), 9, axis=0))
    times = np.array([0, 1, 2, 3, 4, 6, 7, 8, 9])  # a gap between frames 4 and 6
    run = jax.jit(metrics.video_consistency_counts, static_argnums=2)
    for k in (1, 2, 3, 4):
        for t in (None, times):
            want = _vc_loop(labels, preds, k, t)
            assert want[1] > 0
            assert metrics.video_consistency_counts(labels, preds, k, t) == want
            got = run(jnp.asarray(labels), jnp.asarray(preds), k,
                      None if t is None else jnp.asarray(t))
            assert all(isinstance(x, jax.Array) for x in got)
            assert tuple(int(x) for x in got) == want


def test_video_consistency_bad_arguments():
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.video_consistency_counts(VC_LABELS, VC_PREDS, 0)
    with pytest.raises(ValueError, match=r"\[S, H, W\]"):
        metrics.video_consistency_counts(VC_LABELS, VC_PREDS[:2], 2)
    with pytest.raises(ValueError, match=r"\[S, H, W\]"):
        metrics.video_consistency_counts(VC_LABELS[0], VC_PREDS[0], 2)
    with pytest.raises(ValueError, match="times must be"):
        metrics.video_consistency_counts(VC_LABELS, VC_PREDS, 2, times=[0, 1])
