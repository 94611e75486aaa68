"""What evaluate.py and the notebook share, called as they call it (explicit arguments)."""

import hashlib

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import tiny
from cwfcn import clockwork, evaluate_lib, evaluation, model, schedules
from cwfcn.data import sources, video


def test_the_model_cache_is_keyed_by_the_configs_sha256(tmp_path):
    config = tiny.get_config()
    environ = {"CWFCN_CACHE": str(tmp_path)}
    want = hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:12]
    assert evaluate_lib.model_cache_dir(config, environ) == tmp_path / "models" / want
    config.train.steps += 1
    assert evaluate_lib.model_cache_dir(config, environ) != tmp_path / "models" / want


def test_the_configs_own_model_is_trained_once_then_reused(tmp_path, capsys):
    config = tiny.get_config()
    config.train.steps = config.train.checkpoint_every = 1
    config.train.expected_minutes = 0.25
    environ = {"CWFCN_CACHE": str(tmp_path)}
    mean = (0.0, 0.0, 0.0)
    first, origin = evaluate_lib.load_net(config, None, mean, environ)
    assert "trained now" in origin and str(evaluate_lib.model_cache_dir(config, environ)) in origin
    assert ("training the config's model once (about 0.25 minutes on 2 CPU cores, steps left: 1,"
            in capsys.readouterr().err)  # up front, with how long it takes
    again, origin = evaluate_lib.load_net(config, None, mean, environ)
    assert "trained earlier" in origin and "training" not in capsys.readouterr().err
    x = np.random.default_rng(0).normal(size=(1, 24, 24, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(first(x)), np.asarray(again(x)))


def test_baseline_paths_parse_or_fail_clearly():
    assert evaluate_lib.parse_baselines(None) == {}
    assert evaluate_lib.parse_baselines("pool3=a.caffemodel, POOL4 = dir") == {
        "pool3": "a.caffemodel", "pool4": "dir"}
    for bad in ("pool5=x", "pool4", "pool4="):
        with pytest.raises(ValueError, match="bad --baselines"):
            evaluate_lib.parse_baselines(bad)


@pytest.fixture(scope="module")
def synthetic():
    config = tiny.get_config()
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    return net, sources.open_source("synthetic", config=config)


def test_schedules_run_into_rows_with_phases_speedups_and_baseline_nets(synthetic):
    net, source = synthetic
    pool4 = model.TruncatedFCN(2, 5, widths=model.NARROW_WIDTHS, zero_init_scores=False,
                               rngs=nnx.Rngs(7))
    to_run = schedules.parse_schedules("skip,pool4,pool3", [])
    rows = evaluate_lib.run_schedules(net, source, to_run, baseline_nets={"pool4": pool4})
    assert [r["schedule"] for r in rows] == ["oracle", "skip", "pool4", "pool3 (fcn8s)"]
    assert [r["phase"] for r in rows] == [None, "clip", None, None]  # fixed schedules only
    assert rows[0]["time_fraction"] == 1.0
    assert [r["params"]["keep"] for r in rows] == [None, None, 2, 1]
    assert rows[2]["fired"] == [1.0, 1.0, 0.0] and rows[3]["fired"] == [1.0, 0.0, 0.0]


def test_plots_and_overlay_are_written(synthetic, tmp_path):
    net, source = synthetic
    to_run = [clockwork.parse_schedule(s) for s in ("skip", "adaptive:0.1", "adaptive:0.3")]
    rows = evaluate_lib.run_schedules(net, source, to_run)
    paths = evaluate_lib.write_plots(tmp_path / "plots", rows, title="synthetic")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["tradeoff.png", "timeline.png",
                                                    "clocks.png"]
    for path in paths:
        with Image.open(path) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    clip = tmp_path / "overlay.mp4"
    frames = evaluate_lib.write_overlay(clip, net, source, to_run[1], fps=4)
    rgb, _ = next(iter(source))
    assert frames == len(rgb) and video.read_video(clip).shape[:3] == rgb.shape[:3]


def test_the_overlay_reuses_the_scored_run_of_the_first_clip(synthetic, tmp_path, monkeypatch):
    """run_schedules hands the last schedule's first clip, class maps and firings to
    on_first_clip; write_overlay then runs nothing and writes what a fresh run writes."""
    net, source = synthetic
    to_run = [clockwork.parse_schedule(s) for s in ("skip", "adaptive:0.2")]
    scored = []
    rows = evaluate_lib.run_schedules(net, source, to_run,
                                      on_first_clip=lambda *x: scored.append(x))
    assert len(rows) == 2 and len(scored) == 1  # the last schedule's alone
    clip, maps, fired = scored[0]
    first = next(source.clips(to_run[-1]))
    np.testing.assert_array_equal(clip.frames, first.frames)
    want, want_fired, _ = evaluation.predict(net, model.preprocess(first.frames,
                                                                   source.mean_bgr), to_run[-1])
    np.testing.assert_array_equal(maps, want)
    np.testing.assert_array_equal(fired, want_fired)
    fresh = evaluate_lib.write_overlay(tmp_path / "fresh.mp4", net, source, to_run[-1], fps=4)
    monkeypatch.setattr(evaluation, "predict", lambda *a, **k: pytest.fail("ran again"))
    reused = evaluate_lib.write_overlay(tmp_path / "reused.mp4", net, source, to_run[-1], fps=4,
                                        scored=scored[0])
    assert reused == fresh
    np.testing.assert_array_equal(video.read_video(tmp_path / "reused.mp4"),
                                  video.read_video(tmp_path / "fresh.mp4"))


def test_repeats_below_one_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"--repeats must be >= 1"):
        evaluate_lib.evaluate(tiny.get_config(), data="synthetic", repeats=0,
                              output=str(tmp_path / "never.json"))
    assert not list(tmp_path.iterdir())
