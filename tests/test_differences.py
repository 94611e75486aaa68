"""Tests for cwfcn.differences (Table 1, Fig. 2), against hand computations in numpy."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from cwfcn import checkpoint, differences, model, plots
from cwfcn.data import datasets, youtube

H, W = 16, 20  # the fixture's raw frames, kept as they are with --max-dim 20
SHOTS = ("cat/0001/001", "dog/0002/003")


def _frames(t: int, seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    """A moving random texture: consecutive frames differ, but not completely."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w + 2 * t, 3), dtype=np.uint8)
    return np.stack([base[:, 2 * k:2 * k + w] for k in range(t)])


def _rel(new: np.ndarray, old: np.ndarray) -> float:
    """The notebook's relative difference, in float64, NaN (0/0) set to 0."""
    new, old = new.astype(np.float64), old.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(new - old) / ((np.abs(new) + np.abs(old)) / 2.0)
    rel[np.isnan(rel)] = 0
    return float(rel.mean())


def _by_hand(net, frames: np.ndarray, mean_bgr) -> dict[str, np.ndarray]:
    """The notebook's loop over frames: every layer of every frame, then differences."""
    data = np.asarray(model.preprocess(frames, mean_bgr))
    layers = {k: np.asarray(v) for k, v in net.score_layers(jnp.asarray(data)).items()}
    layers["data"] = data
    out = {}
    for name, x in layers.items():
        out[name] = np.array([_rel(x[ix], x[max(ix - 1, 0)]) for ix in range(len(x))])
        if name != "data":
            am = x.argmax(axis=-1)
            out[f"{name}-argmax"] = np.array(
                [np.mean(am[ix] != am[max(ix - 1, 0)]) for ix in range(len(x))])
    return out


# ---------------------------------------------------------------------------------------------
# layer_changes


def test_layer_changes_match_a_hand_computation(net):
    frames = _frames(5)
    got = differences.layer_changes(net, frames)
    want = _by_hand(net, frames, datasets.get("voc").mean_bgr)
    assert set(got) == set(want) == set(differences.MEASURES) - {"label"}
    for name in want:
        assert got[name].shape == (5,) and got[name].dtype == np.float32
        assert got[name][0] == 0, name  # frame 0 is compared with itself
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # the measures are not trivially zero: the layers and the input change
    for name in ("data", *differences.LAYERS, "score_pool3-argmax", "score_pool4-argmax"):
        assert got[name][1:].min() > 0, name


def test_zero_over_zero_counts_as_no_change(net):
    zeroed = nnx.clone(net)
    zeroed.score_fr.kernel[...] = jnp.zeros_like(zeroed.score_fr.kernel[...])
    zeroed.score_fr.bias[...] = jnp.zeros_like(zeroed.score_fr.bias[...])
    frames = _frames(4, seed=1)
    frames[:, :3, :3] = 0  # with a zero mean, these input elements are 0 in every frame
    got = differences.layer_changes(zeroed, frames, mean_bgr=(0.0, 0.0, 0.0))
    want = _by_hand(zeroed, frames, (0.0, 0.0, 0.0))
    for name in want:
        assert np.isfinite(got[name]).all(), name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # score_fr is all zeros: every element is 0/0 -> 0, every argmax a tie -> class 0
    np.testing.assert_array_equal(got["score_fr"], 0)
    np.testing.assert_array_equal(got["score_fr-argmax"], 0)
    assert got["data"][1:].min() > 0  # the other input elements still count


def test_chunking_gives_the_result_of_one_chunk(net):
    frames = _frames(7, seed=2)
    whole = differences.layer_changes(net, frames)  # one chunk (of 16, padded)
    for chunk in (1, 3):  # a carry at every frame; two carries and a padded last chunk
        part = differences.layer_changes(net, frames, chunk=chunk)
        for name in whole:
            np.testing.assert_allclose(part[name], whole[name], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}, chunk {chunk}")


def test_layer_changes_rejects_bad_frames(net):
    with pytest.raises(ValueError, match="uint8"):
        differences.layer_changes(net, _frames(2).astype(np.float32))
    with pytest.raises(ValueError, match="T >= 1"):
        differences.layer_changes(net, np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="chunk"):
        differences.layer_changes(net, _frames(2), chunk=0)


# ---------------------------------------------------------------------------------------------
# label_changes and summarize


def test_label_changes_compare_labelled_frames_only():
    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[0, :3] = 8  # 3 of 20 pixels change
    c = b.copy()
    c[1:3, :] = 8  # 10 more change
    unlabelled = np.full((4, 5), 255, np.uint8)
    labels = np.stack([a, unlabelled, unlabelled, b, unlabelled, c, c])
    got = differences.label_changes(labels)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [0, 0, 0, 3 / 20, 0, 10 / 20, 0])


def test_label_changes_need_a_labelled_first_frame():
    with pytest.raises(ValueError, match="frame 0"):
        differences.label_changes(np.full((2, 3, 3), 255, np.uint8))


def test_summarize_mean_and_std_of_per_shot_means():
    per_shot = [{"a": np.array([0.0, 0.2, 0.4]), "b": np.array([1.0, 1.0])},
                {"a": np.array([0.5]), "b": np.array([0.0, 0.0, 0.0, 1.0])}]
    got = differences.summarize(per_shot)
    # a: per-shot means 0.2, 0.5; b: 1.0, 0.25 (population std, as np.std)
    assert got["a"] == pytest.approx((0.35, 0.15))
    assert got["b"] == pytest.approx((0.625, 0.375))
    with pytest.raises(ValueError, match="no shots"):
        differences.summarize([])
    with pytest.raises(ValueError, match="measures"):
        differences.summarize([{"a": [1.0]}, {"b": [1.0]}])


def test_table_names_the_paper_rows():
    summary = {name: (0.1, 0.05) for name in differences.MEASURES}
    text = differences.table(summary, shots=2, frames=24)
    for row in ("pixels (data)", "pool3 (score_pool3)", "pool4 (score_pool4)",
                "fc7 (score_fr)", "label difference"):
        assert row in text
    assert "0.100 ± 0.050" in text


# ---------------------------------------------------------------------------------------------
# Fig. 2


def test_differences_figure_and_png(tmp_path):
    traces = {"pool4": np.linspace(0, 0.3, 100), "fc7": np.linspace(0, 0.05, 100)}
    fig = plots.differences_figure(traces, "cat vid 0001 shot 001", frames=75)
    lines = fig.axes[0].lines
    assert [line.get_label() for line in lines] == ["pool4", "fc7"]
    np.testing.assert_allclose(lines[0].get_ydata(), traces["pool4"][:75])
    path = plots.plot_differences(tmp_path / "fig2.png", traces, "t")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(ValueError, match="no traces"):
        plots.differences_figure({})


# ---------------------------------------------------------------------------------------------
# the command line, on the real YouTube-Objects layout


def _write_shot(root: Path, shot_id: str, seed: int) -> None:
    """Raw frames 1..12 under v1/ (a moving texture), masks of frames 1 and 11."""
    cls, video, shot = shot_id.split("/")
    v1 = root / "v1" / cls / "data" / video / "shots" / shot
    v1.mkdir(parents=True)
    for n, frame in enumerate(_frames(12, seed=seed, h=H, w=W), start=1):
        Image.fromarray(frame).save(v1 / f"frame{n:04d}.jpg", quality=95)
    labels = root / "youtube_masks" / cls / "data" / video / "shots" / shot / "labels"
    labels.mkdir(parents=True)
    for n, columns in ((1, 6), (11, 9)):
        mask = np.zeros((H, W), np.uint8)
        mask[:, :columns] = 255
        Image.fromarray(mask).save(labels / f"{n:05d}.jpg", quality=100)


@pytest.fixture
def fixture(tmp_path, net):
    root = tmp_path / "youtube"
    for seed, shot_id in enumerate(SHOTS):
        _write_shot(root, shot_id, seed)
    ckpt = tmp_path / "ckpt"
    checkpoint.save(ckpt, 0, nnx.state(net))
    return root, ckpt


def test_cli_end_to_end(fixture, tmp_path, net, capsys):
    root, ckpt = fixture
    out = tmp_path / "out"
    rc = differences.main(["--checkpoint", str(ckpt), "--data-dir", str(root), "--widths",
                           "narrow", "--num-classes", "5", "--max-dim", "20", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "fc7 (score_fr)" in printed and "label difference" in printed
    record = json.loads((out / "differences.json").read_text())
    assert record["shots"] == 2 and record["frames"] == 24
    assert (out / "differences.txt").read_text().strip() == printed.strip()

    per_shot = []
    for shot_id in SHOTS:  # the library's own computation
        frames, labels = youtube.full_rate_shot(root, shot_id, max_dim=20)
        changes = differences.layer_changes(net, frames)
        changes["label"] = differences.label_changes(labels)
        per_shot.append(changes)
        saved = record["per_shot"][shot_id]
        assert saved["frames"] == 12
        for name, values in changes.items():
            np.testing.assert_allclose(saved["per_frame"][name], values, rtol=1e-5, atol=1e-7,
                                       err_msg=f"{shot_id} {name}")
        assert saved["per_frame"]["label"][10] > 0  # the masks of frames 1 and 11 differ
    for name, (mean, std) in differences.summarize(per_shot).items():
        assert record["summary"][name]["mean"] == pytest.approx(mean, rel=1e-5, abs=1e-7)
        assert record["summary"][name]["std"] == pytest.approx(std, rel=1e-5, abs=1e-7)
    for shot_id in SHOTS:
        png = out / f"fig2_{shot_id.replace('/', '_')}.png"
        with Image.open(png) as im:
            assert im.format == "PNG"


def test_cli_plots_and_shots_limits(fixture, tmp_path, capsys):
    root, ckpt = fixture
    out = tmp_path / "out"
    rc = differences.main(["--checkpoint", str(ckpt), "--data-dir", str(root), "--widths",
                           "narrow", "--num-classes", "5", "--max-dim", "20", "--out", str(out),
                           "--shots", SHOTS[1], "--max-frames", "4", "--plots", "0"])
    assert rc == 0
    record = json.loads((out / "differences.json").read_text())
    assert list(record["per_shot"]) == [SHOTS[1]] and record["frames"] == 4
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("case", ["missing dir", "no shots", "bad shot", "no flag"])
def test_cli_bad_input_is_one_line_and_exit_2(fixture, tmp_path, capsys, case):
    root, ckpt = fixture
    empty = tmp_path / "empty"
    (empty / "youtube_masks").mkdir(parents=True)
    argv = {"missing dir": ["--data-dir", str(tmp_path / "nowhere")],
            "no shots": ["--data-dir", str(empty)],
            "bad shot": ["--data-dir", str(root), "--shots", "cat/0009/001"],
            "no flag": []}[case]
    rc = differences.main(["--checkpoint", str(ckpt), "--widths", "narrow", *argv])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("differences: error: "), err
