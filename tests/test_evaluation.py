"""The evaluator's streaming path and the evaluate.py theta parsing."""

import numpy as np
import pytest
from flax import nnx

import evaluate
from cwfcn import clockwork, evaluation, model, results


def test_long_videos_stream_with_the_same_results_as_one_scan(monkeypatch):
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    frames = np.random.default_rng(0).normal(0, 60, (7, 24, 24, 3)).astype(np.float32)
    schedule = clockwork.parse_schedule("adaptive:0.05")
    scan = evaluation.predict(net, frames, schedule)
    monkeypatch.setattr(clockwork, "DEFAULT_CHUNK", 3)  # 7 frames: chunks of 3, 3 and 1
    streamed = evaluation.predict(net, frames, schedule)
    out = clockwork.run(net, frames, schedule)
    np.testing.assert_array_equal(scan[0], np.argmax(np.asarray(out.scores), -1))
    for a, b in zip(scan, streamed, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_theta_sweeps_include_the_stop_and_reject_nonsense():
    assert evaluate.parse_thetas("0.25") == [0.25]
    assert evaluate.parse_thetas("0.05:0.25:0.05") == [0.05, 0.1, 0.15, 0.2, 0.25]
    for bad in ("x", "0.5:0.1:0.1", "0.1:0.5:0", "1:2"):
        with pytest.raises(ValueError, match="bad --theta"):
            evaluate.parse_thetas(bad)


def test_truncated_baselines_score_the_truncated_net():
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    blocks = rng.choice([0, 255], (4, 6, 7, 3)).astype(np.uint8)  # saturated colour blocks
    rgb = blocks.repeat(4, axis=1).repeat(4, axis=2)
    mean = model.MEAN_BGR["voc"]
    frames = np.asarray(model.preprocess(rgb, mean))
    for name, stages in (("pool3", 1), ("pool4", 2)):
        want = np.argmax(np.asarray(net.truncated(frames, stages)), -1)
        # Labels equal to the truncated net's own answer on frames 2.. give 100% accuracy;
        # the full net's answer would not (checked below), so the baseline is really used.
        labels = want.astype(np.uint8)
        row = evaluation.evaluate_schedule(net, [(rgb, labels)], name, mean_bgr=mean)
        # No separately trained net given: FCN-8s's own skip scores stand in, and say so.
        assert row["schedule"] == f"{name} (fcn8s)" and row["pixel_acc"] == 1.0
        assert row["fired"] == [1.0] * stages + [0.0] * (3 - stages)
        full = np.argmax(np.asarray(net(frames)), -1)
        assert not np.array_equal(full, want)


def _videos(n: int, c: int = 5):
    rng = np.random.default_rng(4)
    return [(rng.integers(0, 256, (6, 24, 24, 3), dtype=np.uint8),
             rng.integers(0, c, (6, 24, 24), dtype=np.uint8)) for _ in range(n)]


def test_a_killed_evaluation_resumes_from_its_journal(tmp_path, monkeypatch):
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    videos, mean = _videos(4), model.MEAN_BGR["voc"]
    want = evaluation.evaluate_schedule(net, videos, "adaptive:0.2", mean_bgr=mean)

    def killed():  # the job dies after two videos
        yield from videos[:2]
        raise RuntimeError("killed")

    path = tmp_path / "results.json.partial.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        evaluation.evaluate_schedule(net, killed(), "adaptive:0.2", mean_bgr=mean,
                                     journal=results.Journal(path, "job"))
    with open(path, "a") as f:
        f.write('{"schedule": "adaptive:0.2", "ind')  # a line the kill cut short
    journal = results.Journal(path, "job")
    assert len(journal) == 2

    runs = []
    predict = evaluation._predict
    monkeypatch.setattr(evaluation, "_predict", lambda *a: runs.append(1) or predict(*a))
    got = evaluation.evaluate_schedule(net, videos, "adaptive:0.2", mean_bgr=mean,
                                       journal=journal)
    assert len(runs) == 1 + 2  # one compiling call, then only the two videos left
    timing = {"ms_per_frame", "wall_s"}
    assert {k: v for k, v in got.items() if k not in timing} == {
        k: v for k, v in want.items() if k not in timing}
    assert len(results.Journal(path, "job")) == 4
    assert len(results.Journal(path, "another job")) == 0  # not this job's: started over


def test_a_truncated_net_of_its_own_is_the_baseline_scored():
    """evaluate.py --baselines: the pool4 row is the TruncatedFCN's predictions."""
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    pool4 = model.TruncatedFCN(2, 5, widths=model.NARROW_WIDTHS, zero_init_scores=False,
                               rngs=nnx.Rngs(7))
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 24, 28, 3), dtype=np.uint8)
    mean = model.MEAN_BGR["voc"]
    labels = np.argmax(np.asarray(pool4(model.preprocess(rgb, mean))), -1).astype(np.uint8)
    row = evaluation.evaluate_schedule(net, [(rgb, labels)], evaluation.Baseline("pool4", pool4),
                                       mean_bgr=mean)
    assert row["schedule"] == "pool4" and row["pixel_acc"] == 1.0
    own = evaluation.evaluate_schedule(net, [(rgb, labels)], "pool4", mean_bgr=mean)
    assert own["pixel_acc"] < 1.0  # FCN-8s's skip scores answer otherwise
    with pytest.raises(ValueError, match="stages=1"):
        evaluation.Baseline("pool3", pool4)


def test_evaluation_refuses_labels_out_of_range():
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    videos = _videos(1, c=7)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        evaluation.evaluate_schedule(net, videos, "oracle", mean_bgr=model.MEAN_BGR["voc"])
