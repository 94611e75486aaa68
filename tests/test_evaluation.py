"""The evaluator: its streaming path, baselines, journal, and its two pieces (scoring a clip
into a record, aggregating records into a row)."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from cwfcn import clockwork, evaluation, metrics, model, results, schedules
from cwfcn.data import datasets, protocol

VOC_MEAN = datasets.get("voc").mean_bgr


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
    assert schedules.parse_thetas("0.25") == [0.25]
    assert schedules.parse_thetas("0.05:0.25:0.05") == [0.05, 0.1, 0.15, 0.2, 0.25]
    for bad in ("x", "0.5:0.1:0.1", "0.1:0.5:0", "1:2"):
        with pytest.raises(ValueError, match="bad --theta"):
            schedules.parse_thetas(bad)


def test_truncated_baselines_score_the_truncated_net():
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    blocks = rng.choice([0, 255], (4, 6, 7, 3)).astype(np.uint8)  # saturated colour blocks
    rgb = blocks.repeat(4, axis=1).repeat(4, axis=2)
    mean = VOC_MEAN
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
    videos, mean = _videos(4), VOC_MEAN
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
    run = clockwork.CompiledRun.__call__
    monkeypatch.setattr(clockwork.CompiledRun, "__call__",
                        lambda self, frames: runs.append(len(frames)) or run(self, frames))
    got = evaluation.evaluate_schedule(net, videos, "adaptive:0.2", mean_bgr=mean,
                                       journal=journal)
    assert len(runs) == 2  # only the two videos left, each run once: compiling runs none
    timing = evaluation.ROW_TIMING
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
    mean = VOC_MEAN
    labels = np.argmax(np.asarray(pool4(model.preprocess(rgb, mean))), -1).astype(np.uint8)
    row = evaluation.evaluate_schedule(net, [(rgb, labels)], "pool4", baseline_net=pool4,
                                       mean_bgr=mean)
    assert row["schedule"] == "pool4" and row["pixel_acc"] == 1.0
    own = evaluation.evaluate_schedule(net, [(rgb, labels)], "pool4", mean_bgr=mean)
    assert own["pixel_acc"] < 1.0  # FCN-8s's skip scores answer otherwise
    with pytest.raises(ValueError, match="stages=1"):
        evaluation.evaluate_schedule(net, [(rgb, labels)], "pool3", baseline_net=pool4,
                                     mean_bgr=mean)


def test_evaluation_refuses_labels_out_of_range():
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    videos = _videos(1, c=7)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        evaluation.evaluate_schedule(net, videos, "oracle", mean_bgr=VOC_MEAN)


def test_a_clip_scored_into_a_record_aggregates_into_the_row(tmp_path):
    """The two pieces of `evaluate_schedule`: one record per clip (the same JSON-able shape
    fresh or read back from the journal), then the row; its statistics are numpy's metrics
    of the predictions."""
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    videos = _videos(2)
    journal = results.Journal(tmp_path / "j.jsonl", "job")
    row = evaluation.evaluate_schedule(net, videos, "adaptive:0.2", mean_bgr=VOC_MEAN,
                                       journal=journal)
    scorer = evaluation.ClipScorer(net, "adaptive:0.2", mean_bgr=VOC_MEAN)
    records = []
    for i, (rgb, labels) in enumerate(videos):
        clip = protocol.whole(rgb, labels, slice(2, None), str(i))
        record = evaluation.record_on_host(scorer.score(evaluation.label_clip(clip, 5)))
        read_back = results.Journal(tmp_path / "j.jsonl", "job").get(scorer.name, (i, 0))
        assert set(record) == set(read_back)
        timing = evaluation.RECORD_TIMING
        assert {k: v for k, v in record.items() if k not in timing} == {
            k: v for k, v in read_back.items() if k not in timing}
        # The device statistics are numpy's metrics of the predictions.
        preds, _, _ = evaluation.predict(net, model.preprocess(rgb, VOC_MEAN), "adaptive:0.2")
        assert record["hist"] == metrics.confusion(labels[2:], preds[2:], 5).tolist()
        assert record["band_hist"] == metrics.boundary_confusion(labels[2:], preds[2:], 5).tolist()
        assert record["td"] == pytest.approx(metrics.temporal_difference(preds), rel=1e-6)
        records.append(record)
    got = evaluation.aggregate(records, name=scorer.name, schedule=scorer.schedule,
                               dtype=scorer.dtype, wall_s=row["wall_s"])
    timing = evaluation.ROW_TIMING  # and the row adds the compile time
    assert {k: v for k, v in got.items() if k not in timing} == {
        k: v for k, v in row.items() if k not in timing}
    assert row["kind"] == "adaptive" and row["params"]["theta"] == 0.2
    assert row["params"] == clockwork.parse_schedule("adaptive:0.2").params()


def test_baseline_rows_record_their_kind_and_stages_kept():
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    row = evaluation.evaluate_schedule(net, _videos(1), clockwork.parse_schedule("pool4"),
                                       mean_bgr=VOC_MEAN)
    assert row["schedule"] == "pool4 (fcn8s)" and row["kind"] == "frame"
    assert row["params"]["keep"] == 2 and row["fired"] == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="truncated baselines"):
        evaluation.evaluate_schedule(net, _videos(1), "oracle", mean_bgr=VOC_MEAN,
                                     baseline_net=net)
    with pytest.raises(ValueError, match="pred_lut maps 3 classes but the net predicts 5"):
        evaluation.evaluate_schedule(net, _videos(1), "oracle", mean_bgr=VOC_MEAN,
                                     pred_lut=[0, 1, 2])


def _row(name: str, fired: list[float]) -> dict:
    return {"schedule": name, "pixel_acc": 0.5, "mean_acc": 0.5, "mean_iu": 0.5, "fw_iu": 0.5,
            "bdry_mean_iu": None, "bdry_fw_iu": None, "temporal_diff": 0.1, "fired": fired,
            "fired_ref": fired, "flop_fraction": 1.0, "ms_per_frame": 2.0}


def test_table_header_names_the_rows_stages():
    two = evaluation.format_table([_row("oracle", [1.0, 1.0])]).splitlines()
    assert "fired S1/S2" in two[0] and "S2 ref" in two[0] and "S3" not in two[0]
    four = evaluation.format_table([_row("skip", [0.5, 0.5, 0.5, 0.5])]).splitlines()
    assert "fired S1/S2/S3/S4" in four[0] and "S4 ref" in four[0]
    assert four[2].split()[8:10] == ["0.50/0.50/0.50/0.50", "0.50"]
    assert len(four[1]) == len(four[0])


def test_a_clip_timed_repeatedly_keeps_its_fastest_run_and_its_outputs(monkeypatch):
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    rgb, labels = _videos(1)[0]
    item = evaluation.label_clip(protocol.whole(rgb, labels, slice(2, None), "0"), 5)
    once = evaluation.record_on_host(
        evaluation.ClipScorer(net, "adaptive:0.2", mean_bgr=VOC_MEAN).score(item))
    runs = []
    run = clockwork.CompiledRun.__call__
    monkeypatch.setattr(clockwork.CompiledRun, "__call__",
                        lambda self, frames: runs.append(1) or run(self, frames))
    thrice = evaluation.record_on_host(evaluation.ClipScorer(
        net, "adaptive:0.2", mean_bgr=VOC_MEAN, repeats=3).score(item))
    assert len(runs) == 3 and len(thrice["seconds_runs"]) == 3
    assert thrice["seconds"] == min(thrice["seconds_runs"]) and thrice["others_cpu_s"] >= 0
    assert {k: v for k, v in thrice.items() if k not in evaluation.RECORD_TIMING} == {
        k: v for k, v in once.items() if k not in evaluation.RECORD_TIMING}
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        evaluation.ClipScorer(net, "oracle", mean_bgr=VOC_MEAN, repeats=0)


def test_time_fractions_show_their_spread_and_flag_a_disturbed_timing():
    def timed(name, runs, disturbed, others=0.0):
        return {**_row(name, [1.0, 1.0]), "ms_per_frame": min(runs), "ms_per_frame_runs": runs,
                "timing_disturbed": disturbed, "others_cores": others}

    rows = evaluation.add_speedups([timed("oracle", [10.0, 12.0], False),
                                    timed("skip", [5.0, 4.0], False),
                                    timed("alternating", [7.0, 9.0], True, others=0.5)])
    # Repeat r against oracle's repeat r: skip 5/10 and 4/12; alternating 7/10, 9/12.
    assert rows[1]["time_fraction"] == pytest.approx(4.0 / 10.0)
    assert rows[1]["time_fraction_range"] == pytest.approx([4.0 / 12.0, 5.0 / 10.0])
    assert rows[2]["time_fraction_range"] == pytest.approx([0.7, 0.75])
    assert [r["time_fraction_disturbed"] for r in rows] == [False, False, True]
    lines = evaluation.format_table(rows).splitlines()
    assert "spread" in lines[0]
    assert "0.40" in lines[3] and "0.33-0.50" in lines[3] and "*" not in lines[3]
    assert "0.70*" in lines[4] and "0.70-0.75" in lines[4]
    assert lines[-1].startswith("* timing disturbed") and "0.50 CPU cores" in lines[-1]
    # A disturbed oracle marks every fraction; one repeat has no spread.
    rows = evaluation.add_speedups([timed("oracle", [10.0], True), timed("skip", [5.0], False)])
    assert rows[1]["time_fraction_disturbed"] and rows[1]["time_fraction_range"] is None
    assert "0.50*" in evaluation.format_table(rows).splitlines()[3]


def test_schedules_are_interleaved_video_by_video_and_score_as_alone(monkeypatch):
    """evaluate_schedules runs video 0 under every schedule, then video 1, ...; each
    schedule's clips of a video in order; its rows are evaluate_schedule's, timings aside."""
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    videos = _videos(3)
    specs = ["oracle", "skip", "adaptive:0.2"]
    alone = [evaluation.evaluate_schedule(net, videos, s, mean_bgr=VOC_MEAN) for s in specs]
    two_clips = [protocol.whole(rgb, labels, (2, 3), key=f"{i}a") for i, (rgb, labels)
                 in enumerate(videos)]  # skip's stream: two clips per video
    placed = [dataclasses.replace(c, place=(i, j)) for i, c in enumerate(two_clips)
              for j in range(2)]
    order = []
    score = evaluation.ClipScorer.score
    monkeypatch.setattr(evaluation.ClipScorer, "score", lambda self, item, *a: order.append(
        (self.name, item.clip.place or item.clip.key)) or score(self, item, *a))
    rows = evaluation.evaluate_schedules(net, [videos, placed, videos], specs,
                                         mean_bgr=VOC_MEAN)
    assert order == [x for i in range(3) for x in
                     [("oracle", str(i)), ("skip", (i, 0)), ("skip", (i, 1)),
                      ("adaptive:0.2", str(i))]]
    timing = evaluation.ROW_TIMING
    for k in (0, 2):
        assert {a: v for a, v in rows[k].items() if a not in timing} == {
            a: v for a, v in alone[k].items() if a not in timing}
    assert rows[1]["frames"] == 2 * alone[1]["frames"]
    with pytest.raises(ValueError, match="2 clip streams for 3 schedules"):
        evaluation.evaluate_schedules(net, [videos, videos], specs, mean_bgr=VOC_MEAN)


def _cells(table: str, name: str) -> list[str]:
    """The cells of a right-aligned column of `format_table`'s table, one per row."""
    header, _, *lines = table.splitlines()
    end = header.index(f" {name}") + 1 + len(name)  # a cell ends where its header does
    return [line[:end].split()[-1] for line in lines]


def _ages(fired_last) -> list[int]:
    """Reference bucket of each frame: frames since the last stage fired, capped."""
    ages, last = [], None
    for t, fired in enumerate(fired_last):
        last = t if fired else last
        ages.append(evaluation.AGE_BUCKETS if last is None
                    else min(t - last, evaluation.AGE_BUCKETS))
    return ages


def _steady_videos():
    """Two 20-frame videos of changing frames and labels steady but for a few flips (so
    windows of 8 and 16 frames have pixels whose ground truth stays), some ignored."""
    rng = np.random.default_rng(11)
    videos = []
    for _ in range(2):
        labels = np.repeat(rng.integers(0, 5, (1, 24, 24)), 20, axis=0)
        labels = np.where(rng.random(labels.shape) < 0.01, rng.integers(0, 5, labels.shape),
                          labels)
        labels[:, :2] = 255
        videos.append((rng.integers(0, 256, (20, 24, 24, 3), dtype=np.uint8),
                       labels.astype(np.uint8)))
    return videos


def test_rows_report_video_consistency_and_mean_iu_by_the_frames_since_the_last_firing():
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    videos = _steady_videos()
    # Clip 0 scores frames 2..19 (18 consecutive); clip 1 every other frame (no window).
    clips = [protocol.whole(*videos[0], slice(2, None), "0"),
             protocol.whole(*videos[1], range(0, 20, 2), "1")]
    scorer = evaluation.ClipScorer(net, "adaptive:0.2", mean_bgr=VOC_MEAN)
    records = [evaluation.record_on_host(scorer.score(evaluation.label_clip(c, 5)))
               for c in clips]
    row = evaluation.aggregate(records, name=scorer.name, schedule=scorer.schedule,
                               dtype=scorer.dtype, wall_s=0.0)
    a = evaluation.AGE_BUCKETS
    want_hist = np.zeros((a + 1, 5, 5), np.int64)
    want_frames = np.zeros(a + 1, np.int64)
    vc = {k: [0, 0] for k in evaluation.VC_WINDOWS}
    for clip, record in zip(clips, records, strict=True):
        preds, fired, _ = evaluation.predict(net, model.preprocess(clip.frames, VOC_MEAN),
                                             "adaptive:0.2")
        np.testing.assert_array_equal(record["fired"], fired)
        ages = _ages(np.asarray(record["fired"])[:, -1])
        hist = np.zeros((a + 1, 5, 5), np.int64)
        for t in clip.scored:
            hist[ages[t]] += metrics.confusion(clip.labels[t], preds[t], 5)
            want_frames[ages[t]] += 1
        assert record["age_hist"] == hist.tolist()
        want_hist += hist
        for i, k in enumerate(evaluation.VC_WINDOWS):  # windows of consecutive frames
            counts = [0, 0]
            for start in range(clip.scored[0], 21 - k):
                if all(t in clip.scored for t in range(start, start + k)):
                    gt, pr = clip.labels[start : start + k], preds[start : start + k]
                    common = (gt == gt[0]).all(0) & (gt[0] != 255)
                    counts[0] += int((common & (pr == pr[0]).all(0)).sum())
                    counts[1] += int(common.sum())
            assert record["vc"][i] == counts
            vc[k] = [x + y for x, y in zip(vc[k], counts, strict=True)]
    assert len(set(_ages(np.asarray(records[0]["fired"])[:, -1]))) > 2  # several ages met
    assert vc[8][1] > 0 and vc[16][1] > 0 and records[1]["vc"] == [[0, 0], [0, 0]]
    assert row["mvc_8"] == vc[8][0] / vc[8][1] and row["mvc_16"] == vc[16][0] / vc[16][1]
    assert row["frames_by_age"] == want_frames.tolist() and sum(want_frames) == 18 + 10
    assert row["mean_iu_by_age"] == [metrics.scores(h)["mean_iu"] if h.sum() else None
                                     for h in want_hist]
    table = evaluation.format_table([row])
    assert _cells(table, "mVC8") == [f"{100 * row['mvc_8']:.1f}"]
    assert _cells(table, "mVC16") == [f"{100 * row['mvc_16']:.1f}"]


def test_oracle_scores_every_frame_fresh_and_a_baseline_never_fires_the_last_stage():
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    videos = _videos(2)  # 6 frames, 2..5 scored: no window of 8
    oracle = evaluation.evaluate_schedule(net, videos, "oracle", mean_bgr=VOC_MEAN)
    assert oracle["frames_by_age"] == [8] + [0] * evaluation.AGE_BUCKETS
    assert oracle["mean_iu_by_age"] == [oracle["mean_iu"]] + [None] * evaluation.AGE_BUCKETS
    assert oracle["mvc_8"] is None and oracle["mvc_16"] is None
    pool4 = evaluation.evaluate_schedule(net, videos, "pool4", mean_bgr=VOC_MEAN)
    assert pool4["frames_by_age"] == [0] * evaluation.AGE_BUCKETS + [8]
    assert pool4["mean_iu_by_age"] == [None] * evaluation.AGE_BUCKETS + [pool4["mean_iu"]]
    table = evaluation.format_table([oracle, {**oracle, "mvc_8": 0.5}])
    assert _cells(table, "mVC8") == ["-", "50.0"] and _cells(table, "mVC16") == ["-", "-"]


@pytest.mark.parametrize("spec", ["pool4", "pipeline3", "adaptive:0.2@0.5/4/0.25"])
def test_a_streamed_clip_scores_as_the_whole_video_held_at_once(spec, monkeypatch):
    """Issue 17 (7): a `StreamClip` run part by part (state carried; a baseline and a
    pipeline too) gives the record of the whole video held and run at once."""
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    rgb = np.random.default_rng(5).choice([0, 255], (7, 6, 6, 3)).astype(np.uint8)
    rgb = rgb.repeat(4, 1).repeat(4, 2)
    monkeypatch.setattr(clockwork, "DEFAULT_CHUNK", 3)  # parts of 3, 3 and 1 (padded)
    scorer = evaluation.ClipScorer(net, spec, mean_bgr=VOC_MEAN)
    held = protocol.whole(rgb, np.full(rgb.shape[:3], 255, np.uint8), slice(None))
    want = evaluation.record_on_host(scorer.score(evaluation.label_clip(held, 5)))
    got = evaluation.record_on_host(scorer.score(protocol.StreamClip(lambda: iter(rgb))))
    assert want["td"] > 0 and got["td"] == pytest.approx(want["td"], abs=1e-6)
    for key in want.keys() - {"td", "seconds", "seconds_runs", "others_cpu_s", "latency"}:
        np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float),
                                   err_msg=key)


def test_a_part_of_a_stream_holds_at_most_its_bytes_and_at_least_a_frame():
    """Issue 17 (7, 8): frames and float32 scores of a part stay under STREAM_PART_BYTES
    (256 MiB): 720p with 5 classes is 256 MiB // (720*1280*8*4 B) = 9 frames; a 4000x3000
    frame is over it alone and runs one at a time; small frames take a whole chunk."""
    assert evaluation.STREAM_PART_BYTES == 256 * 2**20
    assert evaluation.part_frames((720, 1280, 3), 5) == 268435456 // 29491200 == 9
    assert evaluation.part_frames((3000, 4000, 3), 21) == 1
    assert evaluation.part_frames((24, 32, 3), 21) == clockwork.DEFAULT_CHUNK
