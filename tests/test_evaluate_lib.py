"""What evaluate.py and the notebook share, called as they call it (explicit arguments)."""

import hashlib
import json
import shutil

import av
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import tiny
from cwfcn import (
    checkpoint,
    clockwork,
    evaluate_lib,
    evaluation,
    metrics,
    model,
    results,
    schedules,
    train_lib,
)
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
                                                    "clocks.png", "iu_by_age.png"]
    for path in paths:
        with Image.open(path) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    clip = tmp_path / "overlay.mp4"
    frames = evaluate_lib.write_overlay(clip, net, source, to_run[1], fps=4)
    rgb, _ = next(iter(source))
    assert frames == len(rgb) and video.read_video(clip).shape[:3] == rgb.shape[:3]


def test_the_overlay_reuses_the_scored_run_of_the_first_clip(synthetic, tmp_path, monkeypatch):
    """run_schedules hands the last schedule's first clip's frames, class maps and firings
    to on_first_clip, once, as it scores it (the overlay is written from them)."""
    net, source = synthetic
    to_run = [clockwork.parse_schedule(s) for s in ("skip", "adaptive:0.2")]
    scored = []
    rows = evaluate_lib.run_schedules(net, source, to_run,
                                      on_first_clip=lambda *x: scored.append(x))
    assert len(rows) == 2 and len(scored) == 1  # the last schedule's alone
    frames, maps, fired = scored[0]
    first = next(source.clips(to_run[-1]))
    np.testing.assert_array_equal(frames, first.frames)
    want, want_fired, _ = evaluation.predict(net, model.preprocess(first.frames,
                                                                   source.mean_bgr), to_run[-1])
    np.testing.assert_array_equal(maps, want)
    np.testing.assert_array_equal(fired, want_fired)


def test_a_video_file_is_scored_and_overlaid_part_by_part(synthetic, tmp_path, monkeypatch):
    """Issue 17 (7): --data video:PATH is decoded, run and overlaid a part at a time (the
    clock state carried), never held whole; the overlay written during the run is the one a
    fresh run writes."""
    net, _ = synthetic
    rng = np.random.default_rng(3)
    rgb = rng.choice([0, 255], (8, 8, 8, 3)).astype(np.uint8).repeat(4, 1).repeat(4, 2)
    video.write_video(tmp_path / "clip.avi", rgb, fps=5)
    decoded = video.read_video(tmp_path / "clip.avi")
    monkeypatch.setattr(clockwork, "DEFAULT_CHUNK", 3)  # 8 frames: parts of 3, 3 and 2
    source = sources.open_source(f"video:{tmp_path / 'clip.avi'}", config=tiny.get_config())
    schedule = clockwork.parse_schedule("adaptive:0.2")
    parts = []
    (row,) = evaluate_lib.run_schedules(net, source, [schedule],
                                        on_first_clip=lambda *x: parts.append(x))
    assert [len(f) for f, _, _ in parts] == [3, 3, 2]
    np.testing.assert_array_equal(np.concatenate([f for f, _, _ in parts]), decoded)
    want = clockwork.run(net, model.preprocess(decoded, source.mean_bgr), schedule)
    maps = np.concatenate([m for _, m, _ in parts])
    np.testing.assert_array_equal(maps, np.argmax(np.asarray(want.scores), -1))
    np.testing.assert_array_equal(np.concatenate([f for _, _, f in parts]), want.fired)
    assert row["frames"] == 8 and row["fired"] == np.asarray(want.fired).mean(0).tolist()
    assert row["temporal_diff"] == pytest.approx(metrics.temporal_difference(maps), abs=1e-6)
    assert row["temporal_diff"] > 0 and row["mean_iu"] is None
    frames = evaluate_lib.write_overlay(tmp_path / "o.mp4", net, source, schedule, fps=5)
    assert frames == 8 and video.read_video(tmp_path / "o.mp4").shape[:3] == decoded.shape[:3]


def test_repeats_outside_one_to_a_hundred_fail_before_any_work(tmp_path):
    for repeats in (0, evaluate_lib.MAX_REPEATS + 1):
        with pytest.raises(ValueError, match=r"--repeats must be in \[1, 100\]"):
            evaluate_lib.evaluate(tiny.get_config(), data="synthetic", repeats=repeats,
                                  output=str(tmp_path / "never.json"))
    assert not list(tmp_path.iterdir())


def _evaluate(tmp_path, steps: int = 0, **options) -> list[dict]:
    """evaluate.py's job on the tiny config's net (trained `steps`), oracle only, --output."""
    config = tiny.get_config()
    config.train.steps, config.train.checkpoint_every = steps, max(steps, 1)
    return evaluate_lib.evaluate(config, schedule="oracle", repeats=1,
                                 output=str(tmp_path / "r.json"), **options)


@pytest.fixture
def killed_after_the_clips(tmp_path, monkeypatch):
    """Each run as if killed once its clips were done: the resume journal stays."""
    monkeypatch.setenv("CWFCN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(results.Journal, "remove", lambda self: None)


@pytest.mark.slow
def test_a_rerun_resumes_on_the_same_weights_and_data_only(tmp_path, killed_after_the_clips,
                                                            capsys):
    """Issue 18: the journal was keyed by paths and by "trained now"/"trained earlier", so a
    first run killed never resumed, and weights or a video replaced at a path were mixed."""
    _evaluate(tmp_path, steps=1, data="synthetic")
    assert "trained now" in capsys.readouterr().err
    _evaluate(tmp_path, steps=1, data="synthetic")  # the same net, from the cache this time
    err = capsys.readouterr().err
    assert "trained earlier" in err and "resuming: 2 clips done earlier" in err
    config = tiny.get_config()
    for seed, resumed in ((1, False), (2, False), (2, True)):  # a net replaced at one path
        shutil.rmtree(tmp_path / "ck", ignore_errors=True)
        checkpoint.save(tmp_path / "ck", 2, nnx.state(train_lib.build_net(config,
                                                                          nnx.Rngs(seed))))
        _evaluate(tmp_path, data="synthetic", checkpoint_path=str(tmp_path / "ck"))
        assert ("resuming" in capsys.readouterr().err) == resumed, seed
    clips = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32, 3), np.uint8)
    for clip, resumed in ((0, False), (1, False), (1, True)):  # a video replaced at one path
        video.write_video(tmp_path / "clip.mp4", clips[clip], fps=5)  # written anew each time
        _evaluate(tmp_path, data=f"video:{tmp_path / 'clip.mp4'}",
                  checkpoint_path=str(tmp_path / "ck"))
        assert ("resuming" in capsys.readouterr().err) == resumed, clip


@pytest.mark.slow
def test_a_failed_plot_loses_neither_the_results_nor_the_video(tmp_path, monkeypatch):
    """Issue 18: the JSON came last, so a plot that failed after the run lost it."""
    monkeypatch.setenv("CWFCN_CACHE", str(tmp_path / "cache"))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate_lib, "write_plots", full)
    with pytest.raises(OSError, match=r"cannot write --plot '.*plots': .*No space left.*the "
                                      r"results were written to .*r\.json"):
        _evaluate(tmp_path, data="synthetic", plot=str(tmp_path / "plots"),
                  video_out=str(tmp_path / "o.mp4"))
    assert json.loads((tmp_path / "r.json").read_text())["results"]
    assert len(video.read_video(tmp_path / "o.mp4")) == tiny.get_config().data.num_frames


def test_a_video_of_one_pixel_in_grey_is_evaluated(synthetic, tmp_path):
    """Issue 17 (8): a 1x1 grayscale video runs (FCN-8s pads its input by 100 px)."""
    net, _ = synthetic
    path = tmp_path / "pixel.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=5)
        stream.height = stream.width = 1
        stream.pix_fmt = "gray"
        for value in (10, 200, 90):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(
                np.full((1, 1), value, np.uint8), format="gray")))
        container.mux(stream.encode(None))
    source = sources.open_source(f"video:{path}", config=tiny.get_config())
    (row,) = evaluate_lib.run_schedules(net, source, [clockwork.parse_schedule("adaptive:0.2")])
    assert row["frames"] == 3 and row["fired"][0] == 1.0 and row["mean_iu"] is None


@pytest.mark.parametrize("frames", [1, 2])
def test_a_video_of_one_or_two_frames_is_scored_whole(synthetic, tmp_path, frames):
    """Issue 18: frames 0-1 of a translated video are never scored, and a short unlabelled
    video once stacked no scored frame; every frame of an unlabelled one counts."""
    net, _ = synthetic
    clip = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), np.uint8)
    video.write_video(tmp_path / "clip.mp4", clip, fps=5)
    source = sources.open_source(f"video:{tmp_path / 'clip.mp4'}", config=tiny.get_config(),
                                 max_frames=frames)
    rows = evaluate_lib.run_schedules(net, source, schedules.parse_schedules("adaptive", [0.25]))
    assert [r["frames"] for r in rows] == [frames, frames]
