"""The evaluation protocol's pieces: clips, phase policies, schedule kinds."""

import random

import numpy as np
import pytest

from cwfcn import clockwork
from cwfcn.data import protocol


def test_kinds_decide_the_clips():
    kinds = {name: protocol.kind(clockwork.parse_schedule(name)) for name in (
        "oracle", "skip", "exponential", "alternating", "periods:1,1,1", "adaptive:0.2",
        "adaptive-pixel:0.1", "pipeline2", "pipeline3", "pool4", "pool3")}
    assert kinds == {"oracle": "frame", "skip": "fixed", "exponential": "fixed",
                     "alternating": "fixed", "periods:1,1,1": "frame", "adaptive:0.2": "adaptive",
                     "adaptive-pixel:0.1": "adaptive", "pipeline2": "pipeline",
                     "pipeline3": "pipeline", "pool4": "frame", "pool3": "frame"}
    cycles = {n: clockwork.parse_schedule(n).cycle for n in ("skip", "exponential",
                                                              "alternating", "periods:2,3,1")}
    assert cycles == {"skip": 2, "exponential": 4, "alternating": 2, "periods:2,3,1": 6}


def test_pipeline_clips_repeat_the_full_run_once_per_lag():
    assert protocol.pipeline_backs(clockwork.parse_schedule("pipeline2")) == (1, 0)
    assert protocol.pipeline_backs(clockwork.parse_schedule("pipeline3")) == (2, 2, 1, 0)


def test_phase_policies():
    assert protocol.check_phase(" Coin ") == "coin"
    assert protocol.check_phase("fixed:03") == "fixed:3"
    for bad in ("fixed", "fixed:-1", "fixed:x", "often", ""):
        with pytest.raises(ValueError, match="bad phase"):
            protocol.check_phase(bad)
    assert protocol.phases("all", 4, 2) == [(0, 1, 2, 3)] * 2
    assert protocol.phases("fixed:5", 4, 3) == [(1,)] * 3
    with pytest.raises(ValueError, match="no per-frame phases"):
        protocol.phases("clip", 2, 1)


def test_the_coin_is_the_reference_stream():
    """random.seed(0xCAFFE); per labelled frame random.random() < 0.5 -> the previous frame
    ran in full (phase 1); an offset skips the draws an earlier cell made."""
    rng = random.Random(0xCAFFE)
    draws = [rng.random() for _ in range(30)]
    assert protocol.phases("coin", 2, 10) == [(1,) if d < 0.5 else (0,) for d in draws[:10]]
    assert protocol.phases("coin", 2, 10, coin_offset=10) == [
        (1,) if d < 0.5 else (0,) for d in draws[10:20]]
    # A cycle of 4 splits [0, 1) in quarters: [0, .25) -> 3 (three frames since the full run).
    assert protocol.phases("coin", 4, 10) == [(3 - int(d * 4),) for d in draws[:10]]


def test_clips_are_checked():
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    labels = np.zeros((3, 4, 4), np.uint8)
    clip = protocol.Clip(frames, labels, (2,), (1, 2), 3, "k")
    assert clip.denominator == 3
    with pytest.raises(ValueError, match="at least one scored frame"):
        protocol.Clip(frames, labels, (), (), 0)
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        protocol.Clip(frames, labels, (3,), (), 0)
    with pytest.raises(ValueError, match="denominator"):
        protocol.Clip(frames, labels, (2,), (1, 2), 1)
    with pytest.raises(ValueError, match="label map per frame"):
        protocol.Clip(frames, labels[:2], (0,), (), 0)
    whole = protocol.whole(frames, labels, slice(1, None))
    assert whole.scored == whole.counted == (1, 2) and whole.denominator == 2


def test_phase_clip_puts_the_labelled_frame_last():
    label = np.full((2, 2), 3, np.uint8)
    clip = protocol.phase_clip(lambda back: np.full((2, 2, 3), 10 * back, np.uint8), label, 2,
                               key="f")
    assert [int(f[0, 0, 0]) for f in clip.frames] == [20, 10, 0]
    assert clip.scored == clip.counted == (2,) and clip.key == "f@2"
    assert (clip.labels[:2] == 255).all() and (clip.labels[2] == 3).all()


def test_lazy_reads_each_item_once_on_first_access():
    reads = []
    items = protocol.Lazy(3, lambda i: reads.append(i) or 10 * i)
    assert len(items) == 3 and reads == []
    assert items[-1] == 20 and items[2] == 20 and items[0] == 0
    assert reads == [2, 0]  # item 2 kept, item 1 never read
    assert items[1:] == [10, 20] and list(items) == [0, 10, 20] and reads == [2, 0, 1]
    with pytest.raises(IndexError):
        items[3]
    again = protocol.Lazy(2, lambda i: reads.append(i) or i, keep=False)
    reads.clear()
    assert [again[1], again[1]] == [1, 1] and reads == [1, 1]  # not kept: read each time
    with pytest.raises(ValueError, match="count must be an int >= 0"):
        protocol.Lazy(-1, str)
    with pytest.raises(ValueError, match="read must be a function"):
        protocol.Lazy(1, None)


def _video(**changes):
    frames = np.arange(4)[:, None, None, None] * np.ones((4, 2, 3, 3), np.uint8)
    fields = dict(key="v", frames=frames, times=(3, 5, 9, 10), labelled=(1, 3),
                  labels=np.stack([np.full((2, 3), 7, np.uint8), np.zeros((2, 3), np.uint8)]),
                  scored=(3,))
    return protocol.Video(**{**fields, **changes})


def test_video_label_maps_fill_the_unlabelled_frames_with_255():
    video = _video()
    maps = video.label_maps()
    assert maps.shape == (4, 2, 3) and maps.dtype == np.uint8
    assert (maps[[0, 2]] == 255).all() and (maps[1] == 7).all() and (maps[3] == 0).all()
    assert (video.label(1) == 7).all() and video.stacked() is video.frames
    lazy = _video(frames=protocol.Lazy(4, lambda i: np.full((2, 3, 3), i, np.uint8)))
    np.testing.assert_array_equal(lazy.stacked(), video.frames)
    # No labels at all: the frames' size, every label 255.
    bare = _video(labelled=(), labels=[], scored=())
    assert bare.label_maps().shape == (4, 2, 3) and (bare.label_maps() == 255).all()
    ((_, labels),) = list(protocol.pairs([video]))
    np.testing.assert_array_equal(labels, maps)


@pytest.mark.parametrize(("changes", "message"), [
    ({"times": (3, 5, 9)}, "3 times for 4 frames"),
    ({"times": (3, 5, 5, 10)}, "not increasing"),
    ({"labelled": (1,)}, "2 label maps for 1 labelled"),
    ({"labelled": (3, 1)}, r"labelled \(3, 1\) not increasing indices in 0\.\.3"),
    ({"labelled": (1, 4)}, r"labelled \(1, 4\) not increasing indices"),
    ({"scored": (2,)}, r"scored \(2,\) not all labelled \(1, 3\)"),
    ({"scored": (-1,)}, r"scored \(-1,\) not increasing indices"),
])
def test_video_checks_its_lengths_and_indices(changes, message):
    with pytest.raises(ValueError, match=rf"video 'v': .*{message}"):
        _video(**changes)


def test_labelled_videos_and_the_whole_form():
    frames = np.zeros((5, 2, 2, 3), np.uint8)
    labels = np.ones((5, 2, 2), np.uint8)
    video = protocol.labelled_video("k", frames, labels, slice(2, None))
    assert (video.times, video.labelled, video.scored) == ((0, 1, 2, 3, 4), (0, 1, 2, 3, 4),
                                                           (2, 3, 4))
    clips = list(protocol.clips([video, video], protocol.form_whole, None, "clip"))
    assert [c.key for c in clips] == ["0", "1"]  # named by position, as before
    assert clips[0].scored == clips[0].counted == (2, 3, 4) and clips[0].denominator == 3


def test_clips_place_each_clip_and_read_only_the_shards_videos():
    """`clips`: video i's clips in order, each at (i, j); with a shard (p, n) only videos
    i % n == p are read, and FORM sees every video's index (its draws are by index)."""
    frames = np.zeros((2, 2, 2, 3), np.uint8)
    reads = []

    def read(i):
        reads.append(i)
        return protocol.labelled_video(f"v{i}", frames + i, np.zeros((2, 2, 2), np.uint8),
                                       slice(None))

    def form(videos, schedule, phase):  # video i gives i % 3 clips, scoring frame j % 2
        assert len(videos) == 7
        return lambda i, video: [protocol.whole(video.stacked(), video.label_maps(), (j % 2,),
                                                key=f"{video.key}/{j}") for j in range(i % 3)]

    videos = protocol.Lazy(7, read, keep=False)
    everything = list(protocol.clips(videos, form, None, "clip"))
    assert [c.place for c in everything] == [(1, 0), (2, 0), (2, 1), (4, 0), (5, 0), (5, 1)]
    assert [c.key for c in everything] == ["v1/0", "v2/0", "v2/1", "v4/0", "v5/0", "v5/1"]
    reads.clear()
    mine = list(protocol.clips(videos, form, None, "clip", shard=(1, 3)))
    assert reads == [1, 4]
    assert [(c.place, c.key, c.scored, int(c.frames[0, 0, 0, 0])) for c in mine] == [
        ((1, 0), "v1/0", (0,), 1), ((4, 0), "v4/0", (0,), 4)]
    with pytest.raises(ValueError, match="shard"):
        list(protocol.clips(videos, form, None, "clip", shard=(3, 3)))
