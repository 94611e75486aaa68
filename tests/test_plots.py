"""Tests for cwfcn.plots: PNGs are written and the figures hold the data given."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from cwfcn import evaluate_lib, plots

SWEEP = [  # out of theta order on purpose: the line is sorted by firing rate
    {"schedule": "adaptive:0.1", "params": {"theta": 0.1}, "mean_iu": 0.60,
     "fired": [1.0, 1.0, 0.8]},
    {"schedule": "adaptive:0.5", "params": {"theta": 0.5}, "mean_iu": 0.50,
     "fired": [1.0, 1.0, 0.2]},
    {"schedule": "adaptive:0.25", "params": {"theta": 0.25}, "mean_iu": 0.55,
     "fired": [1.0, 1.0, 0.4]},
]
FIXED = [
    {"schedule": "oracle", "params": {"theta": None}, "mean_iu": 0.62, "fired": [1.0, 1.0, 1.0]},
    {"schedule": "alternating", "params": {"theta": None}, "mean_iu": 0.57,
     "fired": [1.0, 1.0, 0.5]},
]


def _check_png(path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.mode in ("RGB", "RGBA")
        assert im.size[0] > 100 and im.size[1] > 100
        pixels = np.asarray(im.convert("L"))
    assert pixels.min() < 100 < pixels.max(), "blank image"


def test_sweep_theta_reads_the_rows_params_not_its_name():
    assert plots.sweep_theta({"schedule": "my clock", "params": {"theta": 0.3}}) == 0.3
    with pytest.raises(ValueError, match="not an adaptive"):
        plots.sweep_theta({"schedule": "adaptive:0.3", "params": {"theta": None}})


def test_tradeoff_points():
    x, y, names = plots.tradeoff_points(FIXED)
    np.testing.assert_allclose(x, [100.0, 50.0])  # the last stage's rate, %
    np.testing.assert_allclose(y, [62.0, 57.0])
    assert names == ["oracle", "alternating"]


def test_tradeoff_figure_data():
    fig = plots.tradeoff_figure(SWEEP, FIXED)
    try:
        ax = fig.axes[0]
        assert len(ax.lines) == 1 + len(FIXED)
        sweep = ax.lines[0]
        np.testing.assert_allclose(sweep.get_xdata(), [20.0, 40.0, 80.0])
        np.testing.assert_allclose(sweep.get_ydata(), [50.0, 55.0, 60.0])
        np.testing.assert_allclose(ax.lines[2].get_xydata(), [[50.0, 57.0]])
        labels = sorted(t.get_text() for t in ax.texts)
        assert labels == sorted(["0.1", "0.25", "0.5", "oracle", "alternating"])
    finally:
        plt.close(fig)


def test_plot_tradeoff_writes_png(tmp_path):
    path = plots.plot_tradeoff(tmp_path / "sub" / "tradeoff.png", SWEEP, FIXED)
    assert path == str(tmp_path / "sub" / "tradeoff.png")
    _check_png(path)
    _check_png(plots.plot_tradeoff(tmp_path / "sweep_only.png", SWEEP))


@pytest.mark.parametrize(
    "sweep, fixed, match",
    [
        ([], [], "nothing to plot"),
        ([FIXED[0]], [], "not an adaptive"),
        ([{"schedule": "adaptive:0.2", "mean_iu": 0.5}], [], "lacks"),
        ([{"schedule": "adaptive:0.2", "params": {"theta": 0.2}, "mean_iu": 0.5}], [], "lacks"),
        ([], [{"schedule": "oracle", "mean_iu": 0.5, "fired": []}], "no per-stage"),
    ],
)
def test_tradeoff_bad_rows(tmp_path, sweep, fixed, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_tradeoff(tmp_path / "bad.png", sweep, fixed)
    assert not (tmp_path / "bad.png").exists()


CHANGE = np.array([0.0, 0.1, 0.3, 0.05, 0.2, 0.4])
FIRED = np.array([True, False, True, False, False, True])


def test_timeline_figure_data():
    fig = plots.timeline_figure(CHANGE, FIRED, 0.25, title="clip")
    try:
        ax, strip = fig.axes
        np.testing.assert_allclose(ax.lines[0].get_xdata(), np.arange(6))
        np.testing.assert_allclose(ax.lines[0].get_ydata(), CHANGE)
        np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.25, 0.25])  # the threshold
        assert ax.get_title() == "clip"
        (image,) = strip.images
        np.testing.assert_array_equal(np.asarray(image.get_array()), FIRED[None].astype(float))
        assert "3 of 6 fired" in strip.get_xlabel()
    finally:
        plt.close(fig)


def test_plot_timeline_writes_png_black_where_fired(tmp_path):
    path = plots.plot_timeline(tmp_path / "timeline.png", CHANGE, FIRED, 0.25)
    _check_png(path)
    # The strip's pixels: along its middle row, runs of black exactly where fired.
    fig = plots.timeline_figure(CHANGE, FIRED, 0.25)
    try:
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
        strip = fig.axes[1]
        box = strip.get_window_extent()
        height = rgb.shape[0]
        row = height - int((box.y0 + box.y1) / 2)  # display y runs up, arrays down
        for t, f in enumerate(FIRED):
            x_pix, _ = strip.transData.transform((t, 0.5))
            value = rgb[row, int(x_pix)].mean()
            assert (value < 50) if f else (value > 200), (t, value)
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    "change, fired",
    [(CHANGE, FIRED[:-1]), (CHANGE[:, None], FIRED), ([], [])],
)
def test_timeline_bad_shapes(tmp_path, change, fired):
    with pytest.raises(ValueError, match="same T"):
        plots.plot_timeline(tmp_path / "bad.png", change, fired, 0.25)


def test_clocks_figure_one_strip_per_clock():
    fig = plots.clocks_figure({"adaptive:0.25": [1, 0, 0, 1], "adaptive-pixel:0.02": [1, 1, 1, 1]})
    strips = [ax.images[0].get_array() for ax in fig.axes]
    np.testing.assert_array_equal(strips[0], [[1, 0, 0, 1]])
    np.testing.assert_array_equal(strips[1], [[1, 1, 1, 1]])
    assert "50% fired" in fig.axes[0].get_ylabel() and "100% fired" in fig.axes[1].get_ylabel()
    with pytest.raises(ValueError, match="one T"):
        plots.clocks_figure({"a": [1, 0], "b": [1, 0, 1]})


AGED = [  # mean_iu_by_age of 3 buckets: ages 0, 1, then 2 or more
    {"schedule": "oracle", "mean_iu_by_age": [0.62, None, None]},
    {"schedule": "adaptive:0.25", "mean_iu_by_age": [0.60, 0.55, 0.40]},
    {"schedule": "pool4", "mean_iu_by_age": [None, None, 0.50]},
]


def test_iu_by_age_figure_one_line_per_row_gaps_where_none():
    fig = plots.iu_by_age_figure(AGED, title="t")
    try:
        lines = fig.axes[0].lines
        assert len(lines) == 3 and [ln.get_label() for ln in lines] == [
            "oracle", "adaptive:0.25", "pool4"]
        np.testing.assert_array_equal(lines[1].get_xdata(), [0, 1, 2])
        np.testing.assert_allclose(lines[1].get_ydata(), [60.0, 55.0, 40.0])
        np.testing.assert_array_equal(np.isnan(lines[0].get_ydata()), [False, True, True])
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1", ">=2"]
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="lack"):
        plots.iu_by_age_figure([{"schedule": "x", "mean_iu": 0.5}])
    with pytest.raises(ValueError, match="one non-zero length"):
        plots.iu_by_age_figure([AGED[0], {"schedule": "y", "mean_iu_by_age": [0.5]}])
    with pytest.raises(ValueError, match="no rows"):
        plots.iu_by_age_figure([])


def test_plot_iu_by_age_writes_png_and_write_plots_adds_it(tmp_path):
    _check_png(plots.plot_iu_by_age(tmp_path / "a" / "iu_by_age.png", AGED))
    rows = [{**FIXED[0], **AGED[0], "kind": "frame"},
            {**SWEEP[0], **AGED[1], "kind": "adaptive",
             "timeline": {"change": CHANGE.tolist(), "fired": FIRED.tolist()}}]
    paths = evaluate_lib.write_plots(tmp_path / "b", rows)
    assert str(tmp_path / "b" / "iu_by_age.png") in paths
    _check_png(tmp_path / "b" / "iu_by_age.png")
    old = [{k: v for k, v in r.items() if k != "mean_iu_by_age"} for r in rows]
    assert not any(p.endswith("iu_by_age.png")
                   for p in evaluate_lib.write_plots(tmp_path / "c", old))
