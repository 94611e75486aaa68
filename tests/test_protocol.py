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
