"""Semantic-segmentation metrics of FCN / Clockwork FCN.

The confusion matrix is the single sufficient statistic: accumulate it over a data set, then call
`scores` once. Per-batch confusions may be computed on device (jax path, int32), but totals over a
whole data set should be summed in int64 on the host, e.g.
``total += np.asarray(hist, np.int64)``, since int32 overflows past ~2e9 pixels.

Also provides the "boundary" variant of the metrics (scores restricted to a band around object
boundaries), the temporal-difference statistic of label videos and VSPW's video consistency
(`video_consistency`). `confusion`, `band_confusion`, `temporal_difference` and
`video_consistency_counts` take numpy or jax input: a jax Array (a tracer too) selects a jit-able
jax.numpy path with the same results, which is what the evaluator runs on the device.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

IGNORE_LABEL = 255


def _is_jax(x: Any) -> bool:
    # Tracers are jax.Array instances too, so this also selects the jax path inside jit.
    return isinstance(x, jax.Array)


def _confusion_jax(labels: jax.Array, preds: jax.Array, num_classes: int) -> jax.Array:
    labels = jnp.asarray(labels).astype(jnp.int32).ravel()
    preds = jnp.asarray(preds).astype(jnp.int32).ravel()
    valid = (labels >= 0) & (labels < num_classes)
    # Invalid pixels are sent to bin 0 with weight 0, keeping shapes static for jit.
    idx = jnp.where(valid, num_classes * labels + preds, 0)
    hist = jnp.zeros(num_classes * num_classes, dtype=int).at[idx].add(valid.astype(int))
    return hist.reshape(num_classes, num_classes)


def _check_num_classes(num_classes: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or (
        num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def check_labels(labels: Any, num_classes: int) -> None:
    """Raises ValueError unless every value of the integer array `labels` (any shape, numpy or
    jax) lies in ``[0, num_classes)`` or is `IGNORE_LABEL`."""
    labels = np.asarray(labels)
    stray = labels[((labels < 0) | (labels >= num_classes)) & (labels != IGNORE_LABEL)]
    if stray.size:
        raise ValueError(
            f"labels must lie in [0, {num_classes}) or be {IGNORE_LABEL} (ignore), got "
            f"{np.unique(stray)[:8].tolist()}: map void pixels to {IGNORE_LABEL}, or pass the "
            "data set's number of classes"
        )


def _confusion_np(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    check_labels(labels, num_classes)
    labels = np.asarray(labels).astype(np.int64).ravel()
    preds = np.asarray(preds).astype(np.int64).ravel()
    valid = (labels >= 0) & (labels < num_classes)
    labels, preds = labels[valid], preds[valid]
    if preds.size and (preds.min() < 0 or preds.max() >= num_classes):
        raise ValueError(
            f"predictions must lie in [0, {num_classes}) where the label is valid; got range "
            f"[{preds.min()}, {preds.max()}]. Pass argmax class indices, not scores."
        )
    hist = np.bincount(num_classes * labels + preds, minlength=num_classes * num_classes)
    return hist.astype(np.int64).reshape(num_classes, num_classes)


def confusion(labels: Any, preds: Any, num_classes: int) -> np.ndarray | jax.Array:
    """Confusion matrix of a labelling.

    Args:
      labels: integer ground truth of any shape, in ``[0, num_classes)`` or 255 (ignore, not
        counted). Other values raise on the numpy path; the jax path (which may run under
        jit, where nothing can raise) does not count them.
      preds: integer predictions, same shape as ``labels``, assumed in ``[0, num_classes)``
        (checked on the numpy path; undefined placement on the jax path).
      num_classes: number of classes C, a positive int (static under jit).

    Returns:
      ``[C, C]`` counts, rows = truth, columns = prediction. If either input is a jax Array
      (including a tracer inside ``jax.jit``) it is computed with jax.numpy and returned as a jax
      Array of JAX's default int (int32 unless x64 is enabled); otherwise a numpy int64 array.
      Sum data-set totals in int64 on the host: ``np.asarray(hist, np.int64)``.

    Raises:
      ValueError: if the shapes of ``labels`` and ``preds`` differ, ``num_classes`` is not a
        positive int, or (numpy path) a label or prediction is out of range.
    """
    _check_num_classes(num_classes)
    if np.shape(labels) != np.shape(preds):
        raise ValueError(
            f"labels and preds must have the same shape, got {np.shape(labels)} and "
            f"{np.shape(preds)}"
        )
    if _is_jax(labels) or _is_jax(preds):
        return _confusion_jax(labels, preds, num_classes)
    return _confusion_np(labels, preds, num_classes)


def scores(hist: Any) -> dict[str, float]:
    """FCN scores from a confusion matrix.

    Per class i, with ``t_i`` the row sum (truth) and ``p_i`` the column sum (prediction):
    accuracy ``n_ii / t_i`` and IU ``n_ii / (t_i + p_i - n_ii)``.

    * A class absent from both truth and prediction drops out of every mean.
    * A class predicted but absent from truth counts with IU 0 in mean IU, and is left out of
      mean accuracy (its accuracy is undefined).
    * ``fw_iu = sum_i t_i IU_i / sum_i t_i``; ``pixel_acc = trace / total``.

    Args:
      hist: ``[C, C]`` confusion matrix (numpy int64 or jax), rows = truth.

    Returns:
      Dict of python floats with keys 'pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu'. An all-zero
      matrix gives nan for every key (silently).
    """
    hist = np.asarray(hist, dtype=np.int64).astype(np.float64)
    diag = np.diag(hist)
    truth = hist.sum(axis=1)
    pred = hist.sum(axis=0)
    union = truth + pred - diag
    present = union > 0
    labelled = truth > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iu = diag / union
        acc = diag / truth
        # Explicit sum/count instead of np.mean: an empty selection gives nan without a warning.
        return {
            "pixel_acc": float(diag.sum() / hist.sum()),
            "mean_acc": float(acc[labelled].sum() / np.float64(labelled.sum())),
            "mean_iu": float(iu[present].sum() / np.float64(present.sum())),
            "fw_iu": float((truth[present] * iu[present]).sum() / truth.sum()),
        }


def _disk(radius: int) -> np.ndarray:
    """Disk structuring element, ``[2r+1, 2r+1]`` bool: offset (dy, dx) in iff dy²+dx² <= r²."""
    dy, dx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return dy**2 + dx**2 <= radius**2


def _check_radius(radius: Any) -> None:
    if isinstance(radius, bool) or not isinstance(radius, int | np.integer) or radius < 1:
        raise ValueError(f"radius must be a positive int, got {radius!r}")


def boundary_mask(label: Any, radius: int = 5) -> np.ndarray:
    """Band around object boundaries, where the paper's "boundary" metrics are scored.

    Foreground is ``(label > 0) & (label != 255)``; the band is the dilation of the foreground by
    a disk of the given radius XOR its erosion by the same disk. The image border neither erodes
    nor dilates: objects cut by the border get no band along it.

    Args:
      label: ``[H, W]`` integer label map (numpy or jax).
      radius: disk radius in pixels, positive int.

    Returns:
      ``[H, W]`` bool numpy array, True inside the band.

    Raises:
      ValueError: if radius is not a positive int or label is not rank 2.
    """
    _check_radius(radius)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be [H, W], got shape {label.shape}")
    fg = (label > 0) & (label != IGNORE_LABEL)
    disk = _disk(int(radius))
    dilated = ndimage.binary_dilation(fg, structure=disk, border_value=0)
    eroded = ndimage.binary_erosion(fg, structure=disk, border_value=1)
    return dilated ^ eroded


def band_confusion(labels: Any, preds: Any, bands: Any, num_classes: int
                   ) -> np.ndarray | jax.Array:
    """Confusion matrix of the pixels inside given bands (e.g. `boundary_mask`'s).

    Args:
      labels: integer ground truth of any shape, as `confusion`'s.
      preds: predictions of the same shape, in ``[0, num_classes)``.
      bands: bool, the same shape: True where a pixel counts.
      num_classes: number of classes C, a positive int (static under jit).

    Returns:
      ``[C, C]`` counts over the band pixels (ignore labels still ignored), as `confusion`
      returns them: a jax Array of JAX's default int if any input is a jax Array (including
      a tracer inside ``jax.jit``), otherwise a numpy int64 array.

    Raises:
      ValueError: if the shapes differ, or as `confusion`.
    """
    if np.shape(bands) != np.shape(labels):
        raise ValueError(
            f"bands and labels must have the same shape, got {np.shape(bands)} and "
            f"{np.shape(labels)}"
        )
    if _is_jax(labels) or _is_jax(preds) or _is_jax(bands):
        # Pixels outside the band become ignore labels: shapes stay static for jit.
        labels = jnp.where(jnp.asarray(bands), jnp.asarray(labels), IGNORE_LABEL)
        return confusion(labels, jnp.asarray(preds), num_classes)
    bands = np.asarray(bands, bool)
    return confusion(np.asarray(labels)[bands], np.asarray(preds)[bands], num_classes)


def boundary_confusion(labels: Any, preds: Any, num_classes: int, radius: int = 5) -> np.ndarray:
    """Confusion matrix restricted to the boundary band of each label map.

    The bands come from `boundary_mask` (scipy, on the host); a caller holding them already
    (e.g. on a device) calls `band_confusion`.

    Args:
      labels: ``[H, W]`` or ``[N, H, W]`` integer ground truth (numpy or jax).
      preds: predictions of the same shape, in ``[0, num_classes)``.
      num_classes: number of classes C.
      radius: band radius, see `boundary_mask`.

    Returns:
      ``[C, C]`` numpy int64 counts over band pixels only (ignore labels still ignored).

    Raises:
      ValueError: on shape mismatch, rank other than 2 or 3, a bad radius or num_classes, or
        labels or predictions out of range (as `confusion`).
    """
    _check_num_classes(num_classes)
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    if labels.shape != preds.shape:
        raise ValueError(
            f"labels and preds must have the same shape, got {labels.shape} and {preds.shape}"
        )
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be [H, W] or [N, H, W], got shape {labels.shape}")
    _check_radius(radius)
    check_labels(labels, num_classes)  # all of them, not only the band's
    maps = labels.reshape(-1, *labels.shape[-2:])  # [N, H, W], N = 1 for one map
    bands = np.zeros(maps.shape, bool)  # no maps ([0, H, W]): no band, an empty confusion
    for i, label in enumerate(maps):
        bands[i] = boundary_mask(label, radius)
    bands = bands.reshape(labels.shape)
    return band_confusion(labels, preds, bands, num_classes)


def temporal_difference(label_maps: Any) -> float | jax.Array:
    """Mean fraction of pixels whose label changes from the previous frame.

    Frame 0 has no predecessor and counts as 0, so the result is
    ``sum_{t>=1} frac_t / T``; a single frame gives 0.

    Args:
      label_maps: ``[T, H, W]`` integer label video (numpy or jax).

    Returns:
      The mean changed fraction in [0, 1): a python float for numpy input; for a jax Array
      (including a tracer inside ``jax.jit``) a float32 jax scalar computed with jax.numpy.

    Raises:
      ValueError: if ``label_maps`` is not rank 3.
    """
    xp = jnp if _is_jax(label_maps) else np
    maps = xp.asarray(label_maps)
    if maps.ndim != 3:
        raise ValueError(f"label_maps must be [T, H, W], got shape {maps.shape}")
    changed = xp.mean(maps[1:] != maps[:-1], axis=(1, 2))  # [T - 1]
    mean = xp.sum(changed) / maps.shape[0]  # an empty sum is 0: one frame gives 0
    return mean if xp is jnp else float(mean)


def video_consistency_counts(labels: Any, preds: Any, k: int, times: Any = None
                             ) -> tuple[Any, Any]:
    """The counts of VSPW's video consistency VC_k over one video's labelled frames.

    A window is k consecutive frames ``s..s+k-1`` (VSPW's VC_perclip.py). Its ground-truth
    common pixels are those whose label is the same on every frame of the window and not
    `IGNORE_LABEL` (a pixel ignored on any frame of the window does not count); its
    consistent pixels are those of them whose prediction is also the same on every frame of
    the window (whether or not it is right: VC measures stability, not accuracy). Every
    window counts, the last included (VSPW's loop, ``range(len - k)``, leaves the last
    out). Pooling the counts over windows (and videos) weights each pixel alike, as the
    confusion matrix does; VSPW averages the windows' ratios instead.

    Args:
      labels: integer ground truth ``[S, H, W]`` (numpy or jax) of S labelled frames in
        time order, 255 = ignore.
      preds: integer predictions ``[S, H, W]`` on the same frames.
      k: the window length, a positive int (static under jit); VSPW's mVC_8 and mVC_16
        are k = 8 and 16.
      times: int ``[S]``, the frames' indices in the video, increasing; a window counts
        only where they are consecutive (``times[s+k-1] - times[s] == k - 1``). None:
        the frames are consecutive (0..S-1).

    Returns:
      (consistent, total): the consistent and the ground-truth common pixels summed over
      the windows, both 0 when there is none (S < k, or no run of k consecutive frames).
      Python ints for numpy input; for a jax Array (a tracer too) jax scalars of JAX's
      default int, computed with jax.numpy.

    Raises:
      ValueError: if the shapes differ or are not rank 3, `times` is not ``[S]``, or k is
        not a positive int.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if np.shape(labels) != np.shape(preds) or len(np.shape(labels)) != 3:
        raise ValueError(f"labels and preds must be [S, H, W] of one shape, got "
                         f"{np.shape(labels)} and {np.shape(preds)}")
    s = np.shape(labels)[0]
    if times is not None and np.shape(times) != (s,):
        raise ValueError(f"times must be [S] = [{s}], got shape {np.shape(times)}")
    xp = jnp if _is_jax(labels) or _is_jax(preds) or _is_jax(times) else np
    if s < k:  # no window: static, so a python branch under jit too
        return (jnp.zeros((), int), jnp.zeros((), int)) if xp is jnp else (0, 0)
    labels, preds = xp.asarray(labels).astype(xp.int32), xp.asarray(preds).astype(xp.int32)
    windows = s - k + 1
    gt_common = labels[:windows] != IGNORE_LABEL  # [windows, H, W]: window w from frame w
    pred_common = xp.ones(gt_common.shape, bool)
    for j in range(1, int(k)):  # frame w + j of window w against its first, w
        gt_common = gt_common & (labels[j : j + windows] == labels[:windows])
        pred_common = pred_common & (preds[j : j + windows] == preds[:windows])
    if times is not None:
        times = xp.asarray(times).astype(xp.int32)
        runs = (times[k - 1 :] - times[:windows]) == k - 1  # [W]: consecutive frames
        gt_common = gt_common & runs[:, None, None]
    consistent, total = (xp.sum(gt_common & pred_common), xp.sum(gt_common))
    if xp is jnp:
        return consistent.astype(int), total.astype(int)
    return int(consistent), int(total)


def video_consistency(labels: Any, preds: Any, k: int, times: Any = None) -> float | None:
    """VSPW's video consistency VC_k of one video: the fraction of the pixels whose ground
    truth stays the same over a window of k consecutive frames on which the prediction
    does too, pooled over the windows (`video_consistency_counts`, which has the details;
    under jit call it and divide later).

    Args:
      labels: integer ground truth ``[S, H, W]`` of labelled frames in time order.
      preds: integer predictions ``[S, H, W]``.
      k: the window length, a positive int.
      times: int ``[S]``, the frames' indices (None: consecutive).

    Returns:
      The fraction in [0, 1], a python float; None where no window has a common pixel.

    Raises:
      ValueError: as `video_consistency_counts`.
    """
    consistent, total = video_consistency_counts(labels, preds, k, times)
    total = int(total)
    return None if total == 0 else int(consistent) / total
