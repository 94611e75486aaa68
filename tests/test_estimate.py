"""Tests for cwfcn.estimate: the modelled firings, clip lengths and seconds against hand counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from cwfcn import cost, estimate, schedules
from cwfcn.data import cityscapes, datasets, protocol, sources, video

MEAN = datasets.get("voc").mean_bgr
TOOK = cost.StageFlops((1.0, 2.0, 3.0), 0.5)  # seconds per stage, and for the fusion


def _schedule(spec: str) -> schedules.Schedule:
    return schedules.parse_schedule(spec, 3)


@pytest.mark.parametrize("spec, length, fired", [
    ("oracle", 6, [6, 6, 6]),
    ("skip", 5, [3, 3, 3]),  # frames 0, 2, 4
    ("exponential", 6, [6, 3, 2]),  # periods 1, 2, 4: frames 0..5; 0, 2, 4; 0, 4
    ("alternating", 7, [7, 7, 4]),
    ("adaptive:0.3", 6, [6, 6, 6]),  # counted at most: every frame
    ("adaptive:0.3@0.25/8", 9, [9, 9, 3]),  # the first frame, then a quarter of the other 8
    ("pool4", 6, [6, 6, 0]),
    ("pool3", 6, [6, 0, 0]),
    ("pipeline3", 4, [4, 4, 4]),
    ("periods:1,3,5", 10, [10, 4, 2]),
])
def test_clip_firings_are_counted_by_hand(spec, length, fired):
    assert estimate.clip_firings(_schedule(spec), length).tolist() == fired


def test_clip_seconds_are_the_firings_by_the_stage_times_and_the_fusion_on_every_frame():
    # skip on 5 frames: 3 firings of each stage (1 + 2 + 3 s), the fusion on all 5 (0.5 s).
    assert estimate.clip_seconds(_schedule("skip"), 5, TOOK) == pytest.approx(3 * 6 + 5 * 0.5)


def _never_read(i):
    raise AssertionError(f"frame {i} read: the estimate forms clips without reading frames")


def _snippet(key: str) -> protocol.Video:
    """A Cityscapes snippet as `cityscapes.snippets` gives it: 20 frames, the last labelled,
    none of them readable."""
    return protocol.Video(key, protocol.Lazy(20, _never_read), tuple(range(20)), (19,),
                          protocol.Lazy(1, _never_read), (19,))


def _cityscapes(videos) -> sources.Source:
    return sources.Source("cityscapes-like", 19, MEAN, videos, cityscapes.form, phase="coin",
                          phases=("coin", "all", "fixed:K", "clip"))


@pytest.mark.parametrize("spec, phase, lengths", [
    ("oracle", "coin", [1]),  # the labelled frame alone
    ("skip", "all", [1, 2]),  # phase 0: the labelled frame; phase 1: the one before, then it
    ("skip", "fixed:1", [2]),
    ("skip", "clip", [2]),  # the snippet's own start, 19 frames on: phase 19 % 2 = 1
    ("exponential", "clip", [4]),  # cycle 4: phase 19 % 4 = 3
    ("adaptive:0.3", "coin", [20]),  # the whole snippet
])
def test_clip_lengths_follow_the_protocol_without_reading_a_frame(spec, phase, lengths):
    source = _cityscapes([_snippet("a"), _snippet("b")])
    got = estimate.clip_lengths(source, _schedule(spec), phase, source.videos[1], 1)
    assert got == lengths


def _whole_videos(count: int, frames: int) -> sources.Source:
    videos = [protocol.Video(str(i), protocol.Lazy(frames, _never_read), tuple(range(frames)),
                             tuple(range(frames)), protocol.Lazy(frames, _never_read),
                             tuple(range(2, frames)))
              for i in range(count)]
    return sources.Source("whole", 21, MEAN, videos, protocol.form_whole)


def _sampled(source: sources.Source, sizes: Sequence[tuple[int, int]]
             ) -> list[estimate.Sampled]:
    return [estimate.Sampled(source.videos[i], i, (*size, 3)) for i, size in enumerate(sizes)]


def test_the_estimate_is_the_modelled_time_of_the_videos_by_the_repeats():
    source = _whole_videos(3, 6)
    to_run = [_schedule("oracle"), _schedule("skip")]
    sampled = _sampled(source, [(8, 8)] * 3)
    guess = estimate.estimate(source, to_run, sampled, 3, TOOK, 10.0, phase="clip", repeats=2)
    # A video: oracle 6 x (1 + 2 + 3) + 6 x 0.5 = 39 s, skip 3 x 6 + 6 x 0.5 = 21 s; 3 videos,
    # 2 repeats. One frame shape and clip length per schedule: 2 compiles of 10 s.
    assert guess.run_s == pytest.approx(60 * 3 * 2)
    assert guess.compile_s == pytest.approx(20.0)
    assert guess.total_s == pytest.approx(380.0)
    assert (guess.schedules, guess.videos, guess.sampled, guess.frames, guess.repeats) == (
        2, 3, 3, 36, 2)
    assert guess.full_frame_s == pytest.approx(6.5) and not guess.open_loop
    # Resumed with 3 of the 6 clips done: half the running is left, all the compiles.
    resumed = estimate.estimate(source, to_run, sampled, 3, TOOK, 10.0, phase="clip",
                                repeats=2, done=3)
    assert resumed.run_s == pytest.approx(180.0) and resumed.compile_s == pytest.approx(20.0)
    finished = estimate.estimate(source, to_run, sampled, 3, TOOK, 10.0, phase="clip",
                                 repeats=2, done=6)
    assert finished.total_s == 0.0


def test_videos_are_scaled_by_their_pixels_and_the_rest_extrapolated_from_the_sample():
    # 8 videos, 4 of them read: 8x8, 16x8 (twice the pixels), 8x8, 8x16 (a third shape).
    source = _whole_videos(8, 4)
    sampled = _sampled(source, [(8, 8), (16, 8), (8, 8), (8, 16)])
    guess = estimate.estimate(source, [_schedule("oracle")], sampled, 8, TOOK, 10.0,
                              phase="clip")
    # The oracle on 4 frames: 4 x 6.5 = 26 s at 8x8; the sample's mean is (1 + 2 + 1 + 2) / 4
    # of that, times 8 videos. Compiles: 3 shapes in the sample, 2 of them new over the 3
    # videos after the first, so 2/3 more for each of the 4 videos not read.
    assert guess.run_s == pytest.approx(26 * 1.5 * 8)
    assert guess.compile_s == pytest.approx(10.0 * (3 + 4 * 2 / 3))
    assert guess.frame_shape == (8, 8, 3) and guess.sampled == 4 and guess.frames == 16


def test_a_stream_of_unknown_length_has_no_estimate_but_a_line_that_says_so(tmp_path):
    path = tmp_path / "clip.mp4"
    video.write_video(path, np.zeros((3, 16, 16, 3), np.uint8))
    clip = video.unlabelled(str(path))
    form = video.DATASET.videos["video"].form
    source = sources.Source("file", 21, MEAN, [clip], form)
    known = estimate.estimate(source, [_schedule("oracle")],
                              [estimate.Sampled(clip, 0, (16, 16, 3))], 1, TOOK, 1.0,
                              phase="clip")
    assert known.frames == 3 and known.run_s == pytest.approx(3 * 6.5)
    unknown = protocol.StreamClip(clip.read, None, clip.key)
    source = sources.Source("file", 21, MEAN, [unknown], form)
    sampled = estimate.sample_videos(source)
    assert sampled == [estimate.Sampled(unknown, 0, (16, 16, 3))]  # its first frame decoded
    guess = estimate.estimate(source, [_schedule("oracle")], sampled, 1, TOOK, 1.0,
                              phase="clip")
    assert guess.run_s is None and guess.total_s is None
    assert estimate.describe(guess).startswith("estimated time: unknown")


def test_sampling_reads_each_video_to_its_first_frame_until_the_time_is_up():
    reads = []

    def frame_of(v):
        def read(i):
            reads.append((v, i))
            return np.zeros((4, 6, 3), np.uint8)
        return read

    videos = [protocol.Video(str(v), protocol.Lazy(5, frame_of(v)), tuple(range(5)),
                             tuple(range(5)), protocol.Lazy(5, _never_read), (2, 3, 4))
              for v in range(5)]
    empty = protocol.Video("empty", protocol.Lazy(0, _never_read), (), (), [], ())
    source = sources.Source("counted", 5, MEAN, [*videos[:2], empty, *videos[2:]],
                            protocol.form_whole)
    got = estimate.sample_videos(source, (1, 2))  # process 1 of 2: videos 1, 3, 5
    assert [(s.index, s.shape) for s in got] == [(1, (4, 6, 3)), (3, (4, 6, 3)),
                                                 (5, (4, 6, 3))]
    assert reads == [(1, 0), (2, 0), (4, 0)]
    reads.clear()
    assert [s.index for s in estimate.sample_videos(source, budget_s=0.0)] == [0]  # the first
    assert reads == [(0, 0)]


@pytest.mark.parametrize("seconds, said", [
    (0.4, "under 1 s"), (40, "40 s"), (600, "10 min"), (5400, "1.5 h"), (86400 * 3, "3.0 days")])
def test_durations_read_as_a_person_would_say_them(seconds, said):
    assert estimate.duration(seconds) == said


def _guess(run_s: float, open_loop: bool = False, compile_s: float = 30.0
           ) -> estimate.Estimate:
    return estimate.Estimate(run_s=run_s, compile_s=compile_s, schedules=101, videos=736,
                             sampled=4, frames=2424, frame_shape=(375, 500, 3),
                             full_frame_s=0.25, repeats=1, open_loop=open_loop)


def test_the_line_gives_the_total_its_compiles_and_what_it_rests_on():
    line = estimate.describe(_guess(570.0, open_loop=True))
    assert line.startswith("estimated time: about 10 min, 30 s of it compiling")
    assert "101 schedules x 736 videos x 1 repeat;" in line
    assert "250.0 ms a full frame of 375x500" in line
    assert "4 of 736 videos read: 2424 frames over all schedules" in line
    assert "firing on every frame" in line and "to shorten it" not in line


def test_a_run_over_an_hour_says_how_to_shorten_it():
    line = estimate.describe(_guess(10 * 3600.0))
    assert "about 10.0 h" in line and "to shorten it" in line
    assert "firing on every frame" not in line


def test_a_short_run_says_so_without_a_compile_it_took_no_time_for():
    line = estimate.describe(_guess(0.3, compile_s=0.2))
    assert line.startswith("estimated time: under 1 s (101 schedules")


def test_for_source_times_the_net_on_the_first_videos_frame(net):
    source = sources.Source("two", 5, MEAN, [
        protocol.labelled_video(str(v), np.zeros((5, 16, 24, 3), np.uint8),
                                np.zeros((5, 16, 24), np.uint8), slice(2, None))
        for v in range(3)], protocol.form_whole)
    guess = estimate.for_source(net, source, [_schedule("oracle")], phase="clip", repeats=3,
                                shard=(1, 2))
    assert guess.frame_shape == (16, 24, 3) and guess.videos == 1 and guess.frames == 5
    assert guess.full_frame_s > 0 and guess.compile_s > 0
    # The oracle fires every stage on every frame: 5 full frames, 3 times over.
    assert guess.run_s == pytest.approx(5 * guess.full_frame_s * 3)
    assert estimate.for_source(net, source, [_schedule("oracle")], phase="clip",
                               shard=(3, 4)) is None  # process 3 of 4 has no video


@pytest.mark.parametrize("spec, every", [
    ("oracle", True), ("pipeline2", True), ("adaptive:0.3", True), ("skip", False),
    ("alternating", False), ("adaptive:0.3@0.5/8", False), ("pool4", False)])
def test_the_schedules_that_run_every_stage_on_every_frame_need_no_split(spec, every):
    schedule = _schedule(spec)
    assert estimate.runs_every_stage(schedule) == every
    fired = estimate.clip_firings(schedule, 12)
    assert bool((fired == 12).all()) == every  # what the split is for: stages counted apart


def test_the_measured_time_is_split_by_the_stages_flops(net):
    took, compile_s = estimate.measure(net, (16, 24, 3))
    flops = cost.stage_flops(net, (16, 24, 3))
    np.testing.assert_allclose(np.array([*took.stages, took.fuse]) / (sum(took.stages) + took.fuse),
                               np.array([*flops.stages, flops.fuse]) / flops.total, rtol=1e-6)
    whole, _ = estimate.measure(net, (16, 24, 3), split=False)
    assert whole.stages[0] > 0 and whole.stages[1:] == (0.0, 0.0) and whole.fuse == 0.0
    assert compile_s >= 0
