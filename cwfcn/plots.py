"""Figures of the paper's kind, written as PNG files (matplotlib, Agg backend).

  plot_tradeoff  Fig. 6: mean IU vs the fraction of frames on which the last stage
                 fired, for an adaptive theta sweep (a line, points labelled by theta)
                 and fixed schedules (labelled points).
  plot_timeline  Fig. 7: the adaptive clock's change signal per frame, its threshold,
                 and the firings of the last stage as a strip below.
  plot_clocks    Fig. 7 (left): the firings of several clocks over the same video, one
                 strip each (the score_pool4 clock against the pixel-difference clock).
  plot_differences  Fig. 2: per-frame change of score layers over a shot.
  plot_iu_by_age  Beyond the paper: mean IU against the frames since the last stage
                 fired, one line per schedule row.

`tradeoff_figure` / `timeline_figure` build the figures without saving them (for tests
and notebooks); `plot_*` save them and close them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

Row = Mapping[str, Any]


def tradeoff_points(rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of `evaluation` results -> plot coordinates.

    Args:
      rows: dicts with `schedule` (str), `mean_iu` (0..1) and `fired` (per-stage fractions
        of frames on which each stage computed; the last stage's is used).

    Returns:
      x float64 `[n]`: the last stage's firing rate, %; y float64 `[n]`: mean IU, % (NaN, not
      drawn, where it is None: unlabelled video); the schedule names. In the order of `rows`.

    Raises:
      ValueError: if a row lacks a key or has an empty `fired`.
    """
    xs, ys, names = [], [], []
    for row in rows:
        missing = {"schedule", "mean_iu", "fired"} - set(row)
        if missing:
            raise ValueError(f"row {dict(row)!r} lacks {sorted(missing)}")
        fired = np.ravel(np.asarray(row["fired"], np.float64))
        if fired.size == 0:
            raise ValueError(f"row {row['schedule']!r} has no per-stage firing fractions")
        xs.append(100.0 * fired[-1])
        ys.append(np.nan if row["mean_iu"] is None else 100.0 * float(row["mean_iu"]))
        names.append(str(row["schedule"]))
    return np.asarray(xs, np.float64), np.asarray(ys, np.float64), names


def sweep_theta(row: Row) -> float:
    """The adaptive threshold of a sweep row, from its schedule's parameters.

    Args:
      row: an `evaluation` row, with `params` (`Schedule.params`).

    Returns:
      `row["params"]["theta"]`.

    Raises:
      ValueError: if the row lacks `params`, or its schedule is not adaptive (theta None).
    """
    if "params" not in row:
        raise ValueError(f"sweep row {row.get('schedule')!r} lacks ['params'] (the schedule's "
                         "parameters, as evaluation rows record them)")
    theta = row["params"].get("theta")
    if theta is None:
        raise ValueError(f"sweep row {row.get('schedule')!r} is not an adaptive schedule")
    return float(theta)


def tradeoff_figure(sweep_rows: Sequence[Row], fixed_rows: Sequence[Row] = ()) -> Figure:
    """The accuracy / firing-rate trade-off (Fig. 6), not saved.

    Args:
      sweep_rows: rows of adaptive schedules, drawn as one line sorted by firing rate, each
        point annotated with its theta (`sweep_theta`).
      fixed_rows: rows of other schedules, drawn as points labelled with their names.

    Returns:
      The figure; its axes hold the sweep as `lines[0]` (if any) and one line per fixed row.

    Raises:
      ValueError: if both are empty, a row is malformed, or a sweep row is not adaptive.
    """
    if not sweep_rows and not fixed_rows:
        raise ValueError("nothing to plot: no sweep rows and no fixed rows")
    thetas = [sweep_theta(row) for row in sweep_rows]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if sweep_rows:
        x, y, _ = tradeoff_points(sweep_rows)
        order = np.argsort(x, kind="stable")
        ax.plot(x[order], y[order], "o-", color="tab:blue", label="adaptive (theta)")
        for i in order:
            ax.annotate(f"{thetas[i]:g}", (x[i], y[i]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8, color="tab:blue")
    if fixed_rows:
        x, y, names = tradeoff_points(fixed_rows)
        markers = "sD^vP*Xph"
        for i, name in enumerate(names):
            ax.plot([x[i]], [y[i]], markers[i % len(markers)], linestyle="none", label=name)
            ax.annotate(name, (x[i], y[i]), textcoords="offset points", xytext=(4, -10),
                        fontsize=8)
    ax.set_xlabel("frames on which the last stage fired (%)")
    ax.set_ylabel("mean IU (%)")
    ax.set_xlim(0, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _finished(fig: Figure, ax, title: str, legend_at: str) -> Figure:
    """The figure with its grid, legend (at `legend_at`), title (if any) and tight layout."""
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc=legend_at)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def plot_tradeoff(
    path: str | os.PathLike, sweep_rows: Sequence[Row], fixed_rows: Sequence[Row] = ()
) -> str:
    """Writes `tradeoff_figure(sweep_rows, fixed_rows)` as a PNG and returns its path."""
    return _save(tradeoff_figure(sweep_rows, fixed_rows), path)


def timeline_figure(
    change: Sequence[float] | np.ndarray,
    fired: Sequence[bool] | np.ndarray,
    theta: float,
    title: str = "",
) -> Figure:
    """The adaptive clock over a video (Fig. 7), not saved.

    Args:
      change: float `[T]`, the change fraction per frame (`RunOutput.change`).
      fired: bool `[T]`, whether the last stage fired (`RunOutput.fired[:, -1]`).
      theta: the threshold, drawn as a horizontal line.
      title: the figure's title.

    Returns:
      The figure: axes[0] holds the change line (`lines[0]`) and the threshold
      (`lines[1]`); axes[1] the firing strip as a `[1, T]` image, black where fired.

    Raises:
      ValueError: if change and fired are not 1-D of the same non-zero length.
    """
    change = np.asarray(change, np.float64)
    fired = np.asarray(fired, bool)
    if change.ndim != 1 or fired.ndim != 1 or len(change) != len(fired) or not len(change):
        raise ValueError(f"change and fired must be [T] with the same T > 0, got shapes "
                         f"{change.shape} and {fired.shape}")
    t = np.arange(len(change))
    fig, (ax, strip) = plt.subplots(
        2, 1, figsize=(8, 3.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]}
    )
    ax.plot(t, change, "-", color="tab:blue", lw=1, label="change")
    ax.axhline(theta, color="tab:red", ls="--", lw=1, label=f"theta = {theta:g}")
    ax.set_ylabel("fraction of labels changed")
    ax.set_ylim(0, max(1.0, float(change.max())) * 1.02)
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title)
    strip.imshow(fired[None].astype(np.float64), cmap="Greys", vmin=0, vmax=1,
                 aspect="auto", interpolation="nearest",
                 extent=(-0.5, len(fired) - 0.5, 0, 1))
    strip.set_yticks([])
    strip.set_ylabel("fired", rotation=0, ha="right", va="center")
    strip.set_xlabel(f"frame ({int(fired.sum())} of {len(fired)} fired)")
    strip.set_xlim(-0.5, len(fired) - 0.5)
    fig.tight_layout()
    return fig


def plot_timeline(
    path: str | os.PathLike,
    change: Sequence[float] | np.ndarray,
    fired: Sequence[bool] | np.ndarray,
    theta: float,
    title: str = "",
) -> str:
    """Writes `timeline_figure(change, fired, theta, title)` as a PNG and returns its path."""
    return _save(timeline_figure(change, fired, theta, title), path)


def differences_figure(
    traces: Mapping[str, Sequence[float] | np.ndarray], title: str = "", frames: int = 75
) -> Figure:
    """Per-frame differences of one shot (Fig. 2: pool4 and fc7 argmax change), not saved.

    Args:
      traces: legend label -> float `[T]` per-frame change (`differences.layer_changes`),
        drawn in this order: the first green, the second blue (the paper's pool4 and fc7),
        any further ones in other colours.
      title: the figure's title.
      frames: draw only the first this many frames (75 in the paper).

    Returns:
      The figure; its axes hold one line per trace, in the order of `traces`.

    Raises:
      ValueError: if there is no trace, a trace is not 1-D and non-empty, or frames < 1.
    """
    if not traces:
        raise ValueError("nothing to plot: no traces")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    colors = ("tab:green", "tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    longest, peak = 0, 0.0
    for i, (label, values) in enumerate(traces.items()):
        values = np.asarray(values, np.float64)
        if values.ndim != 1 or not len(values):
            raise ValueError(f"trace {label!r} must be [T] with T > 0, got shape {values.shape}")
        values = values[:frames]
        longest, peak = max(longest, len(values)), max(peak, float(np.nanmax(values)))
        ax.plot(np.arange(len(values)), values, "-", color=colors[i % len(colors)], lw=1.2,
                label=label)
    ax.set_xlabel("frame")
    ax.set_ylabel("change from the previous frame")
    ax.set_xlim(0, max(longest - 1, 1))
    ax.set_ylim(0, max(peak * 1.1, 0.01))  # the changes are small: scale to them, not to 1
    return _finished(fig, ax, title, "upper right")


def plot_differences(
    path: str | os.PathLike,
    traces: Mapping[str, Sequence[float] | np.ndarray],
    title: str = "",
    frames: int = 75,
) -> str:
    """Writes `differences_figure(traces, title, frames)` as a PNG and returns its path."""
    return _save(differences_figure(traces, title, frames), path)


def clocks_figure(clocks: Mapping[str, Sequence[bool] | np.ndarray], title: str = "") -> Figure:
    """Several clocks' firings over one video, one black-where-fired strip each (Fig. 7,
    left), not saved.

    Args:
      clocks: label -> bool `[T]`, whether the last stage fired on each frame; all of one T.
      title: the figure's title.

    Returns:
      The figure: one axes per clock, in order, each with its strip as a `[1, T]` image
      and its label with the share of frames fired.

    Raises:
      ValueError: no clocks, or strips that are not 1-D of one non-zero length.
    """
    strips = {label: np.asarray(f, bool) for label, f in clocks.items()}
    lengths = {f.shape for f in strips.values()}
    if not strips or len(lengths) != 1 or len(next(iter(lengths))) != 1 or not min(
            len(f) for f in strips.values()):
        raise ValueError(f"clocks must be [T] bool strips of one T > 0, got shapes "
                         f"{[f.shape for f in strips.values()]}")
    fig, axes = plt.subplots(len(strips), 1, figsize=(8, 0.9 * len(strips) + 0.8),
                             sharex=True, squeeze=False)
    for ax, (label, fired) in zip(axes[:, 0], strips.items(), strict=True):
        ax.imshow(fired[None].astype(np.float64), cmap="Greys", vmin=0, vmax=1, aspect="auto",
                  interpolation="nearest", extent=(-0.5, len(fired) - 0.5, 0, 1))
        ax.set_yticks([])
        ax.set_ylabel(f"{label}\n{100 * fired.mean():.0f}% fired", rotation=0, ha="right",
                      va="center", fontsize=8)
    axes[-1, 0].set_xlabel("frame (black: the full net ran)")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    return fig


def plot_clocks(path: str | os.PathLike, clocks: Mapping[str, Sequence[bool] | np.ndarray],
                title: str = "") -> str:
    """Writes `clocks_figure(clocks, title)` as a PNG and returns its path."""
    return _save(clocks_figure(clocks, title), path)


def iu_by_age_figure(rows: Sequence[Row], title: str = "") -> Figure:
    """Mean IU against the frames since the last stage fired, one line per row, not saved.

    Args:
      rows: `evaluation` rows with `schedule` and `mean_iu_by_age` (A + 1 entries: mean IU
        0..1 or None, for 0..A-1 frames since the last stage fired, then A or more / never).
        A bucket that is None is a gap in its line.
      title: the figure's title.

    Returns:
      The figure; its axes hold one line per row, in order, x the bucket 0..A, y mean IU %.

    Raises:
      ValueError: no rows, a row without `mean_iu_by_age`, or rows of different A.
    """
    if not rows:
        raise ValueError("nothing to plot: no rows")
    missing = [row.get("schedule") for row in rows if "mean_iu_by_age" not in row]
    if missing:
        raise ValueError(f"rows {missing} lack ['mean_iu_by_age']")
    sizes = {len(row["mean_iu_by_age"]) for row in rows}
    if len(sizes) != 1 or not min(sizes):
        raise ValueError(f"rows' mean_iu_by_age must be of one non-zero length, got {sizes}")
    ages = next(iter(sizes)) - 1  # A: the last bucket is A or more
    markers = "os^vDP*Xph"
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, row in enumerate(rows):
        y = [np.nan if v is None else 100.0 * v for v in row["mean_iu_by_age"]]  # nan: a gap
        ax.plot(np.arange(ages + 1), np.asarray(y, np.float64),
                f"{markers[i % len(markers)]}-", lw=1.2, label=str(row["schedule"]))
    ax.set_xticks(range(ages + 1), [*map(str, range(ages)), f">={ages}"])
    ax.set_xlabel("frames since the last stage fired")
    ax.set_ylabel("mean IU (%)")
    return _finished(fig, ax, title, "best")


def plot_iu_by_age(path: str | os.PathLike, rows: Sequence[Row], title: str = "") -> str:
    """Writes `iu_by_age_figure(rows, title)` as a PNG and returns its path."""
    return _save(iu_by_age_figure(rows, title), path)
