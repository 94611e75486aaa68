"""Tests for cwfcn.calibrate: the adaptive-clock replay and the theta-for-rate search.

`simulate` is checked on hand-worked sequences of tiny maps and against the engine's own
firings on a real run; `clock_maps` against stage1/stage2 called by hand.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from cwfcn import calibrate, clockwork, model
from cwfcn.data import datasets

H, W = 24, 32


def _ramp(n: int, p: int) -> np.ndarray:
    """`[n, 1, p]`: map t has its first t positions set to 1, so change(i, j) = |i - j| / p."""
    return (np.arange(p)[None, None, :] < np.arange(n)[:, None, None]).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# simulate, hand-worked


def test_simulate_accumulates_since_last_firing():
    # Each frame changes 1 of 4 positions vs the previous one; vs frame 0 it is .25, .5, .75.
    maps = _ramp(4, 4)
    assert simulate_list(maps, 0.5) == [1, 0, 1, 0]  # frame 2: .5 vs frame 0; frame 3: .25
    assert simulate_list(maps, 0.3) == [1, 0, 1, 0]
    assert simulate_list(maps, 0.25) == [1, 1, 1, 1]  # >=: exactly the threshold fires
    assert simulate_list(maps, 0.75) == [1, 0, 0, 1]
    assert simulate_list(maps, 0.8) == [1, 0, 0, 0]
    assert simulate_list(maps, 1.0) == [1, 0, 0, 0]


def test_simulate_reference_updates_only_on_firing():
    a, b, c = np.array([[0, 0]]), np.array([[1, 0]]), np.array([[1, 1]])
    maps = np.stack([a, b, a, c, c])
    # theta .5: b fires (.5 vs a), a fires (.5 vs b), c fires (1 vs a), c repeats: no.
    assert simulate_list(maps, 0.5) == [1, 1, 1, 1, 0]
    # theta 1: only whole-map changes: c vs a on frame 3.
    assert simulate_list(maps, 1.0) == [1, 0, 0, 1, 0]
    # theta 0 fires always, repeats included (as "adaptive:0").
    assert simulate_list(maps, 0.0) == [1, 1, 1, 1, 1]
    assert simulate_list(maps[:1], 0.9) == [1]


def simulate_list(maps, theta) -> list[int]:
    fired = calibrate.simulate(maps, theta)
    assert fired.dtype == bool and fired.shape == (len(maps),)
    return fired.astype(int).tolist()


# ---------------------------------------------------------------------------------------------
# theta_for_rate


@pytest.mark.parametrize(
    "rate, theta, achieved",
    [
        (1.0, 0.125, 1.0),  # every theta <= 1/8 fires always: the largest is 1/8
        (0.5, 0.25, 0.5),  # every 2nd frame
        (0.4, 0.375, 0.375),  # every 3rd: frames 0, 3, 6
        (0.3, 0.875, 0.25),  # 0.25 (err .05) beats 0.375 (.075); thetas 4/8..7/8 tie
        (0.01, 1.0, 0.125),  # frame 0 only: no pair differs everywhere, so 1.0 does it
    ],
)
def test_theta_for_rate_hand_worked(rate, theta, achieved):
    maps = _ramp(8, 8)  # change(i, j) = |i - j| / 8: theta d/8 fires every d frames
    got = calibrate.theta_for_rate(maps, rate)
    assert got == pytest.approx(theta, abs=1e-7)
    assert calibrate.simulate(maps, got).mean() == pytest.approx(achieved)
    assert abs(calibrate.simulate(maps, got).mean() - rate) <= 1 / len(maps) or rate < 1 / 8


def test_theta_for_rate_is_best_on_a_grid():
    """Brute force over a fine grid (containing every k/p) never does better."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, (4, 5))
    maps = []
    for _ in range(12):  # drifting maps: a few positions change per frame
        base = np.where(rng.random(base.shape) < 0.15, rng.integers(0, 3, base.shape), base)
        maps.append(base.copy())
    maps = np.stack(maps)
    grid = np.round(np.linspace(0, 1, 401), 6)
    for rate in (1.0, 0.75, 0.5, 0.3, 0.1):
        theta = calibrate.theta_for_rate(maps, rate)
        err = abs(calibrate.simulate(maps, theta).mean() - rate)
        best = min(abs(calibrate.simulate(maps, g).mean() - rate) for g in grid)
        assert err <= best + 1e-12, (rate, theta)
        assert 0.0 <= theta <= 1.0


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan")])
def test_theta_for_rate_rejects_bad_rate(rate):
    with pytest.raises(ValueError, match=r"rate must be .* \(0, 1\]"):
        calibrate.theta_for_rate(_ramp(4, 4), rate)


def test_bad_inputs_raise(net):
    with pytest.raises(ValueError, match="maps"):
        calibrate.simulate(np.zeros((0, 2, 2), np.int32), 0.5)
    with pytest.raises(ValueError, match="frames"):
        calibrate.clock_maps(net, np.zeros((2, 4, 4), np.float32))  # no channel axis
    with pytest.raises(ValueError, match="floating"):
        calibrate.clock_maps(net, np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="staging"):
        calibrate.clock_maps(object(), np.zeros((2, 4, 4, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# against the engine


_rng = np.random.default_rng(1)
_A = _rng.normal(0.0, 60.0, (H, W, 3))
_B = np.full((H, W, 3), 150.0)
_E = _rng.uniform(-120.0, 120.0, (H, W, 3))
_F = _A + _rng.normal(0.0, 30.0, (H, W, 3))  # a perturbed A: a partial change
FRAMES = np.stack([_A, _A, _F, _E, _E, _B, _F, _A]).astype(np.float32)


@pytest.fixture(scope="module")
def maps(net):
    return calibrate.clock_maps(net, FRAMES)


def test_clock_maps_match_stages_by_hand(net, maps):
    assert maps.dtype == np.int32 and maps.shape[0] == len(FRAMES)
    for t in range(len(FRAMES)):
        _, score_pool4 = net.stage2(net.stage1(jnp.asarray(FRAMES[t : t + 1]))[0])
        np.testing.assert_array_equal(maps[t], np.argmax(np.asarray(score_pool4[0]), -1))


def test_simulate_matches_engine(net, maps):
    fracs = sorted({float(np.mean(a != b)) for a, b in itertools.combinations(maps, 2)} - {0.0})
    assert len(fracs) >= 2, "crafted frames give too few distinct change fractions"
    mid = (fracs[len(fracs) // 2 - 1] + fracs[len(fracs) // 2]) / 2
    thetas = [
        mid,
        calibrate.theta_for_rate(maps, 0.5),  # exactly on a change value: float32 equality
    ]
    nontrivial = False
    for theta in thetas:
        out = clockwork.run(net, FRAMES, f"adaptive:{theta!r}")
        expect = np.asarray(out.fired)[:, 2]
        np.testing.assert_array_equal(calibrate.simulate(maps, theta), expect, err_msg=str(theta))
        nontrivial |= bool(expect[1:].any() and not expect[1:].all())
    assert nontrivial, "no theta gave a mixed firing pattern: the comparison is too weak"


def test_theta_for_rate_over_a_data_set_counts_as_the_reference():
    """Two clips; only frames 1.. count (the first, a forced full run, is in the
    denominator, as Cityscapes counts it). Pairwise changes of clip a: 0.25 (0-1), 0.5
    (0-2), 0.25 (1-2); of clip b: 1.0 (0-1) and 0 (1-2). By hand, firings on counted frames:
    theta <= 0.25: a fires on 1 and 2, b on 1 -> 3 of 6; theta in (0.25, 0.5]: a fires on
    2 (0.5 since 0), b on 1 -> 2 of 6; theta in (0.5, 1]: b on 1 -> 1 of 6."""
    a = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
    b = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    runs = [calibrate.ClockRun(a, (1, 2), 3), calibrate.ClockRun(b, (1, 2), 3)]
    assert calibrate.theta_for_rate_over(runs, 0.5) == pytest.approx(0.25)
    assert calibrate.theta_for_rate_over(runs, 2 / 6) == pytest.approx(0.5)
    assert calibrate.theta_for_rate_over(runs, 0.1) == pytest.approx(1.0)
    # The same runs with every frame counted: frame 0 fires too (2 more of 6).
    every = [calibrate.ClockRun(m, (0, 1, 2), 3) for m in (a, b)]
    assert calibrate.theta_for_rate_over(every, 4 / 6) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no clips"):
        calibrate.theta_for_rate_over([], 0.5)


def test_calibration_over_clips_reproduces_the_engine(net):
    """The theta found over several clips gives the target rate when the engine runs them."""
    from cwfcn.data import protocol

    rng = np.random.default_rng(3)
    clips = []
    for _ in range(3):
        rgb = rng.integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
        rgb[3:5] = rgb[2]  # a held stretch: the clock must choose
        labels = np.zeros(rgb.shape[:3], np.uint8)
        clips.append(protocol.Clip(rgb, labels, (5,), tuple(range(1, 6)), 6))
    mean = datasets.get("voc").mean_bgr
    runs = calibrate.clip_runs(net, clips, mean)
    theta = calibrate.theta_for_rate_over(runs, 0.3)
    fired = 0
    for clip in clips:
        out = clockwork.run(net, model.preprocess(clip.frames, mean), f"adaptive:{theta!r}")
        fired += int(np.asarray(out.fired)[1:, -1].sum())
    replayed = sum(int(calibrate.simulate(r.maps, theta)[1:].sum()) for r in runs)
    assert fired == replayed
    best = min(abs(sum(int(calibrate.simulate(r.maps, t)[1:].sum()) for r in runs) / 18 - 0.3)
               for t in np.linspace(0, 1, 201))
    assert abs(fired / 18 - 0.3) <= best + 1e-9  # no grid theta comes closer
