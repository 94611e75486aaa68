"""Tests for cwfcn.clockwork: schedules, the scan engine, streaming, input checks.

Every engine output is compared with a reference written here: a python loop over
frames that calls net.stage1 / stage2 / stage3 by hand when the schedule says so,
keeps the last outputs, and fuses fresh shallow outputs with cached deep ones.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cwfcn import clockwork

T, H, W = 6, 24, 32  # one frame-stack shape for every run: one compile per schedule
C = 5


def _close(actual, expected, rel: float = 1e-4, msg: str = "") -> None:
    """allclose with an absolute tolerance relative to the scale of `expected`."""
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=0, atol=rel * scale, err_msg=msg
    )


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


_rng = np.random.default_rng(0)
# Six different frames (noise plus a per-frame offset), so that caching is visible.
FRAMES = np.stack(
    [_rng.normal(0.0, 60.0, (H, W, 3)) + off for off in (0, 90, -90, 45, -45, 130)]
).astype(np.float32)
# Distinct frames for the adaptive clock, then a sequence mixing repeats and big changes.
_A = _rng.normal(0.0, 60.0, (H, W, 3))
_B = np.full((H, W, 3), 150.0)
_D = np.full((H, W, 3), -150.0)
_E = _rng.uniform(-120.0, 120.0, (H, W, 3))
ADAPT_FRAMES = np.stack([_A, _A, _E, _B, _B, _A]).astype(np.float32)
SAME_FRAMES = np.stack([_D] * T).astype(np.float32)


@pytest.fixture(scope="module")
def full_scores(net):
    """net(frames) on every frame, the oracle's answer."""
    return np.asarray(net(jnp.asarray(FRAMES)))


# ---------------------------------------------------------------------------------------------
# references


def _frame(frames, t):
    return jnp.asarray(frames[t : t + 1])


def _periodic_ref(net, frames, periods):
    """Stage s recomputes on frames with t % period_s == 0, else keeps its last output."""
    s1 = s2 = s3 = None
    scores = []
    for t in range(len(frames)):
        if t % periods[0] == 0:
            s1 = net.stage1(_frame(frames, t))
        if t % periods[1] == 0:
            s2 = net.stage2(s1[0])
        if t % periods[2] == 0:
            s3 = net.stage3(s2[0])
        scores.append(np.asarray(net.fuse(s1[1], s2[1], s3, (H, W)))[0])
    return np.stack(scores)


def _adaptive_ref(net, frames, theta):
    """S1, S2 every frame; S3 on frame 0 and when the score_pool4 argmax map differs
    from the one at S3's last firing on a fraction >= theta of the positions."""
    scores, fired, change = [], [], []
    ref_map = upscore2 = None
    for t in range(len(frames)):
        pool3, score_pool3 = net.stage1(_frame(frames, t))
        pool4, score_pool4 = net.stage2(pool3)
        cls = np.argmax(np.asarray(score_pool4), axis=-1)
        frac = 0.0 if t == 0 else float(np.mean(cls != ref_map))
        fire = t == 0 or frac >= theta
        if fire:
            upscore2, ref_map = net.stage3(pool4), cls
        scores.append(np.asarray(net.fuse(score_pool3, score_pool4, upscore2, (H, W)))[0])
        fired.append(fire)
        change.append(frac)
    return np.stack(scores), np.array(fired), np.array(change)


def _per_frame_chain(net, frames):
    """Per frame t: (score_pool3_t, score_pool4_t, upscore2_t), each from frame t alone."""
    out = []
    for t in range(len(frames)):
        pool3, score_pool3 = net.stage1(_frame(frames, t))
        pool4, score_pool4 = net.stage2(pool3)
        out.append((score_pool3, score_pool4, net.stage3(pool4)))
    return out


# ---------------------------------------------------------------------------------------------
# parse_schedule


@pytest.mark.parametrize(
    "spec,periods,lags,theta",
    [
        ("oracle", (1, 1, 1), (0, 0, 0), None),
        ("skip", (2, 2, 2), (0, 0, 0), None),
        ("exponential", (1, 2, 4), (0, 0, 0), None),
        ("alternating", (1, 1, 2), (0, 0, 0), None),
        ("periods:1,3,2", (1, 3, 2), (0, 0, 0), None),
        ("periods:5,1,7", (5, 1, 7), (0, 0, 0), None),
        ("adaptive:0.3", (1, 1, 1), (0, 0, 0), 0.3),
        ("adaptive:0", (1, 1, 1), (0, 0, 0), 0.0),
        ("adaptive:1", (1, 1, 1), (0, 0, 0), 1.0),
        ("adaptive", (1, 1, 1), (0, 0, 0), 0.25),  # the paper's operating point
        ("pipeline3", (1, 1, 1), (0, 1, 1), None),
        ("pipeline2", (1, 1, 1), (0, 0, 1), None),
        ("  Alternating ", (1, 1, 2), (0, 0, 0), None),
        ("adaptive-pixel:0.1", (1, 1, 1), (0, 0, 0), 0.1),
    ],
)
def test_parse_schedule(spec, periods, lags, theta):
    s = clockwork.parse_schedule(spec)
    assert s.periods == periods
    assert s.lags == lags
    assert s.num_stages == 3
    assert s.pipelined == any(lags)
    if theta is None:
        assert s.theta is None
    else:
        assert s.theta == pytest.approx(theta)
    assert clockwork.parse_schedule(s) is s
    assert s.signal == ("pixels" if spec.startswith("adaptive-pixel") else "scores")
    hash(s)  # a static jit argument


@pytest.mark.parametrize(
    "spec",
    [
        "bogus", "", "periods:0,1,1", "periods:a,b", "periods:1,-2,1", "periods:",
        "periods:1.5,1,1", "adaptive:1.5", "adaptive:-0.1", "adaptive:nan", "adaptive:x",
        "adaptive:inf", "pipeline4", 3, None, "adaptive-pixel:2", "adaptive-pixels:0.1",
    ],
)
def test_parse_schedule_rejects(spec):
    with pytest.raises(ValueError):
        clockwork.parse_schedule(spec)


def test_default_stages_is_the_fcn8s_staging():
    """A name parsed without a net resolves for the paper's FCN-8s staging."""
    from cwfcn import model

    assert clockwork.DEFAULT_STAGES == len(model.FCN8s.staging.stages) == 3


@pytest.mark.parametrize(
    "spec,stages,periods,lags,keep",
    [
        ("oracle", 2, (1, 1), (0, 0), None),
        ("oracle", 4, (1, 1, 1, 1), (0, 0, 0, 0), None),
        ("skip", 4, (2, 2, 2, 2), (0, 0, 0, 0), None),
        ("exponential", 2, (1, 2), (0, 0), None),
        ("exponential", 4, (1, 2, 4, 8), (0, 0, 0, 0), None),
        ("alternating", 2, (1, 2), (0, 0), None),
        ("alternating", 4, (1, 1, 1, 2), (0, 0, 0, 0), None),
        ("adaptive:0.3", 4, (1, 1, 1, 1), (0, 0, 0, 0), None),
        ("pipeline2", 2, (1, 1), (0, 1), None),
        ("pipeline2", 4, (1, 1, 1, 1), (0, 0, 0, 1), None),
        ("pipeline3", 4, (1, 1, 1, 1), (0, 0, 1, 1), None),
        ("pool3", 2, (1, 1), (0, 0), 1),
        ("pool4", 4, (1, 1, 1, 1), (0, 0, 0, 0), 2),
        ("periods:5,1,7", 4, (5, 1, 7), (0, 0, 0), None),  # explicit: returned as it is
    ],
)
def test_named_schedules_bind_to_the_net(spec, stages, periods, lags, keep):
    s = clockwork.parse_schedule(spec).bind(stages)
    assert (s.periods, s.lags, s.keep) == (periods, lags, keep)
    assert s.name == clockwork.parse_schedule(spec).name
    assert clockwork.parse_schedule(spec, stages) == s


def test_bind_keeps_theta_and_signal():
    s = clockwork.parse_schedule("adaptive-pixel:0.123456789").bind(5)
    assert s.theta == 0.123456789 and s.signal == "pixels" and s.num_stages == 5
    three = clockwork.parse_schedule("alternating")
    assert three.bind(3) is three


@pytest.mark.parametrize("spec,stages,match", [
    ("pipeline3", 2, "pipeline3 lags the deepest 2 stages: it needs a net of at least 3"),
    ("pipeline2", 1, "at least 2 stages"),
    ("pool4", 2, "baseline pool4 keeps 2 stages: it needs a net of more than 2"),
    ("pool3", 1, "more than 1 stages"),
    ("oracle", 0, "at least one"),
])
def test_bind_rejects_nets_the_rule_does_not_fit(spec, stages, match):
    with pytest.raises(ValueError, match=match):
        clockwork.parse_schedule(spec).bind(stages)


def test_registry_tables():
    assert clockwork.ALL_SCHEDULES == ("oracle", "skip", "exponential", "alternating",
                                       "adaptive", "pipeline2", "pipeline3", "pool4", "pool3")
    assert clockwork.BASELINES == {"pool3": 1, "pool4": 2}
    assert clockwork.ADAPTIVE_SIGNALS == {"adaptive": "scores", "adaptive-pixel": "pixels"}
    assert clockwork.SCHEDULE_HELP.startswith("oracle, skip, exponential, alternating, "
                                              "periods:a,b,c")
    for name in ("adaptive-pixel:theta", "pipeline3", "pool4", "pool3"):
        assert name in clockwork.SCHEDULE_HELP
    pool4 = clockwork.parse_schedule(" Pool4 ")
    assert (pool4.name, pool4.keep, pool4.periods, pool4.cycle) == ("pool4", 2, (1, 1, 1), 1)
    assert clockwork.parse_schedule("pipeline3").pipeline_depth == 2
    with pytest.raises(ValueError, match="unknown schedule 'pool4:1'"):
        clockwork.parse_schedule("pool4:1")


def test_params_are_json_values():
    import json

    params = clockwork.parse_schedule("adaptive:0.3").params()
    none = {"target_rate": None, "window": 0, "tolerance": 0.0}
    assert params == {"periods": [1, 1, 1], "lags": [0, 0, 0], "theta": 0.3,
                      "signal": "scores", "keep": None, **none}
    assert json.loads(json.dumps(clockwork.parse_schedule("pool3").params())) == {
        "periods": [1, 1, 1], "lags": [0, 0, 0], "theta": None, "signal": "scores", "keep": 1,
        **none}
    held = clockwork.parse_schedule("adaptive:0.3@0.5/16").params()
    assert (held["target_rate"], held["window"], held["tolerance"]) == (0.5, 16, 0.1)


def test_parse_thetas():
    from cwfcn import schedules

    assert schedules.parse_thetas("0.25") == [0.25]
    assert schedules.parse_thetas("0.05:0.25:0.05") == [0.05, 0.1, 0.15, 0.2, 0.25]
    for bad in ("x", "0.5:0.1:0.1", "0.1:0.5:0", "0.1:0.5"):
        with pytest.raises(ValueError, match=r"bad --theta .*start:stop:step"):
            schedules.parse_thetas(bad)
    assert len(schedules.parse_thetas("0:0.99:0.01")) == schedules.MAX_THETAS
    with pytest.raises(ValueError, match="sweeps 1,000,001 thresholds, more than 100"):
        schedules.parse_thetas("0:1:0.000001")  # refused at once, not run for days


def test_parse_schedules():
    from cwfcn import schedules

    names = [s.name for s in schedules.parse_schedules("all", [0.1, 0.2])]
    assert names == ["oracle", "skip", "exponential", "alternating", "adaptive:0.1",
                     "adaptive:0.2", "pipeline2", "pipeline3", "pool4", "pool3"]
    got = schedules.parse_schedules("pool4, adaptive-pixel,periods:1,2,4", [0.05])
    assert [s.name for s in got] == ["oracle", "pool4", "adaptive-pixel:0.05", "periods:1,2,4"]
    assert got[3].periods == (1, 2, 4) and got[2].signal == "pixels"
    assert [s.name for s in schedules.parse_schedules("skip,oracle", [])] == ["skip", "oracle"]
    with pytest.raises(ValueError, match="unknown schedule 'sometimes'"):
        schedules.parse_schedules("oracle,sometimes", [0.1])


def test_engine_refuses_truncated_baselines(net):
    for make in (lambda: clockwork.run(net, FRAMES, "pool4"),
                 lambda: clockwork.Clockwork(net, "pool3")):
        with pytest.raises(ValueError, match=r"truncated baseline.*evaluation\.predict"):
            make()


# ---------------------------------------------------------------------------------------------
# fixed schedules


def test_oracle_equals_full_net(net, full_scores):
    out = clockwork.run(net, FRAMES, "oracle")
    assert out.scores.shape == (T, H, W, C) and out.scores.dtype == jnp.float32
    assert out.fired.shape == (T, 3) and out.fired.dtype == jnp.bool_
    assert np.asarray(out.fired).all()
    _close(out.scores, full_scores)
    np.testing.assert_array_equal(np.asarray(out.change), 0.0)


@pytest.mark.parametrize(
    "spec,periods",
    [("skip", (2, 2, 2)), ("exponential", (1, 2, 4)), ("alternating", (1, 1, 2)),
     ("periods:1,3,2", (1, 3, 2))],
)
def test_fixed_schedule_matches_hand_reference(net, full_scores, spec, periods):
    out = clockwork.run(net, FRAMES, spec)
    expected_fired = np.array([[t % p == 0 for p in periods] for t in range(T)])
    np.testing.assert_array_equal(np.asarray(out.fired), expected_fired)
    ref = _periodic_ref(net, FRAMES, periods)
    for t in range(T):
        _close(out.scores[t], ref[t], msg=f"frame {t}")
    np.testing.assert_array_equal(np.asarray(out.change), 0.0)
    # Caching is visible: on some frame that skipped a stage the scores are not net(frame).
    tol = 1e-4 * np.abs(full_scores).max()
    skipped = [t for t in range(T) if not expected_fired[t].all()]
    diffs = [_max_diff(out.scores[t], full_scores[t]) for t in skipped]
    assert max(diffs) > 10 * tol, f"{spec}: cached frames indistinguishable from net(frames)"
    # ... and on frames where every stage fired they are.
    for t in range(T):
        if expected_fired[t].all():
            _close(out.scores[t], full_scores[t])


def test_fired_tables_hand_written(net):
    """The fired tables of two schedules, typed out (not derived from the periods)."""
    alternating = np.array(clockwork.run(net, FRAMES, "alternating").fired, int)
    np.testing.assert_array_equal(
        alternating, [[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0]]
    )
    exponential = np.array(clockwork.run(net, FRAMES, "exponential").fired, int)
    np.testing.assert_array_equal(
        exponential, [[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]]
    )


def test_skip_repeats_even_frames(net):
    """skip (2,2,2): odd frames are exact copies of the frame before."""
    scores = np.asarray(clockwork.run(net, FRAMES, "skip").scores)
    for t in range(1, T, 2):
        np.testing.assert_array_equal(scores[t], scores[t - 1])
    assert _max_diff(scores[0], scores[2]) > 1e-3


# ---------------------------------------------------------------------------------------------
# adaptive


def test_adaptive_theta0_fires_every_frame(net, full_scores):
    out = clockwork.run(net, FRAMES, "adaptive:0")
    assert np.asarray(out.fired).all()
    _close(out.scores, full_scores)


@pytest.mark.parametrize("theta", [0.0, 0.01, 0.5, 1.0])
def test_adaptive_identical_frames_fire_once(net, theta):
    """A repeated frame changes nothing: S3 fires on frame 0 only, except for theta = 0,
    where a change of 0 >= 0 fires it on every frame (the threshold is inclusive)."""
    out = clockwork.run(net, SAME_FRAMES, f"adaptive:{theta}")
    fired = np.asarray(out.fired)
    assert fired[:, :2].all()
    np.testing.assert_array_equal(fired[:, 2], [True] + [theta == 0.0] * (T - 1))
    np.testing.assert_array_equal(np.asarray(out.change), 0.0)
    full = np.asarray(net(jnp.asarray(SAME_FRAMES[:1])))[0]
    for t in range(T):
        _close(out.scores[t], full)


def _clock_maps(net, frames):
    maps, margins = [], []
    for t in range(len(frames)):
        _, score_pool4 = net.stage2(net.stage1(_frame(frames, t))[0])
        s = np.sort(np.asarray(score_pool4, np.float64), axis=-1)
        mag = np.abs(s).max(-1)
        margin = np.where(mag > 0, (s[..., -1] - s[..., -2]) / np.maximum(mag, 1e-30), np.inf)
        maps.append(np.argmax(np.asarray(score_pool4), -1))
        margins.append(margin.min())
    return maps, min(margins)


@pytest.fixture(scope="module")
def adaptive_case(net):
    """A theta between observed change fractions, such that S3 fires on some frames > 0
    and not on others; returns (theta, reference scores, fired, change)."""
    maps, margin = _clock_maps(net, ADAPT_FRAMES)
    assert margin > 1e-4, "near-tie in the score_pool4 argmax: the clock test would be flaky"
    fracs = sorted({float(np.mean(a != b)) for a in maps for b in maps} - {0.0})
    assert fracs, "crafted frames give identical argmax maps"
    candidates = [fracs[0] / 2] + [(a + b) / 2 for a, b in itertools.pairwise(fracs)]
    usable = []
    for theta in candidates:
        ref = _adaptive_ref(net, ADAPT_FRAMES, theta)
        if ref[1][1:].any() and not ref[1][1:].all():
            usable.append((theta, *ref))
    assert usable, f"no theta separates the change fractions {fracs}"
    # Prefer one where some frame's change vs the last firing differs from its change vs
    # the previous frame (so the test tells "since last firing" from "since last frame").
    for theta, scores, fired, change in usable:
        prev = [0.0] + [float(np.mean(maps[t] != maps[t - 1])) for t in range(1, T)]
        if not np.allclose(change, prev):
            return theta, scores, fired, change
    return usable[0]


def test_adaptive_matches_reference(net, adaptive_case):
    theta, ref_scores, ref_fired, ref_change = adaptive_case
    out = clockwork.run(net, ADAPT_FRAMES, f"adaptive:{theta!r}")
    fired = np.asarray(out.fired)
    assert fired[:, :2].all()
    np.testing.assert_array_equal(fired[:, 2], ref_fired)
    np.testing.assert_allclose(np.asarray(out.change), ref_change, atol=1e-6)
    assert ref_change[0] == 0.0
    for t in range(T):
        _close(out.scores[t], ref_scores[t], msg=f"frame {t}")


def test_adaptive_change_hand_worked(net):
    """[A, A, B]: change 0 on the repeat, then the A-vs-B map difference on frame 2."""
    maps, _ = _clock_maps(net, ADAPT_FRAMES[[0, 3]])
    frac_ab = float(np.mean(maps[0] != maps[1]))
    assert frac_ab > 0
    frames = np.concatenate([ADAPT_FRAMES[[0, 1, 3]], ADAPT_FRAMES[[3, 4, 5]]])  # A A B B B A
    out = clockwork.run(net, frames, "adaptive:0")  # fires always: change vs previous frame
    np.testing.assert_allclose(np.asarray(out.change), [0, 0, frac_ab, 0, 0, frac_ab], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# pipelines


def test_pipeline3_matches_reference(net):
    """clockwork-fcn's pascal-translate-exp: pipeline_fill_3stage (a full run on frame 0,
    then a 2-stage step on frame 1), then 3-stage steps, so that frame 2 fuses S1(2),
    S2(1), S3(1), frame 3 S1(3), S2(2), S3(1), and frame t >= 4 S1(t), S2(t-1), S3(t-2)."""
    chain = _per_frame_chain(net, FRAMES)
    out = clockwork.run(net, FRAMES, "pipeline3")
    assert np.asarray(out.fired).all()
    s2_of = [0, 1, 1, 2, 3, 4]  # which frame's S2 each frame fuses
    s3_of = [0, 0, 1, 1, 2, 3]
    for t in range(T):
        expected = np.asarray(net.fuse(chain[t][0], chain[s2_of[t]][1], chain[s3_of[t]][2],
                                       (H, W)))[0]
        _close(out.scores[t], expected, msg=f"frame {t}")
    # Not the unfilled pipeline, whose frame 2 would fuse S3(0).
    unfilled = np.asarray(net.fuse(chain[2][0], chain[1][1], chain[0][2], (H, W)))[0]
    assert _max_diff(out.scores[2], unfilled) > 1e-3


def test_fill_lags_turn_on_deepest_first():
    p3, p2 = clockwork.parse_schedule("pipeline3"), clockwork.parse_schedule("pipeline2")
    assert [clockwork.fill_lags(p3, t) for t in range(4)] == [
        (0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 1)]
    assert [clockwork.fill_lags(p2, t) for t in range(3)] == [(0, 0, 0), (0, 0, 1), (0, 0, 1)]
    assert clockwork.fill_lags(clockwork.parse_schedule("oracle"), 5) == (0, 0, 0)


def test_pipeline2_matches_reference(net):
    """S1 + S2 on frame t, S3 on the pool4 of frame t-1; frame 0 runs the full net."""
    chain = _per_frame_chain(net, FRAMES)
    out = clockwork.run(net, FRAMES, "pipeline2")
    assert np.asarray(out.fired).all()
    for t in range(T):
        expected = np.asarray(net.fuse(chain[t][0], chain[t][1], chain[max(t - 1, 0)][2], (H, W)))
        _close(out.scores[t], expected[0], msg=f"frame {t}")


def test_pipeline3_step_by_step_loop(net):
    """The same, as the reference's loop of staged forwards on whatever each stage's input
    blob holds (clockwork-fcn lib/run_net.py: pipeline_fill_3stage, then
    pipeline_3stage_forward: S3 on the last pool4, S2 on the last pool3, S1 on the frame)."""
    out = clockwork.run(net, FRAMES, "pipeline3")
    s1 = net.stage1(_frame(FRAMES, 0))
    s2 = net.stage2(s1[0])
    s3 = net.stage3(s2[0])
    _close(out.scores[0], np.asarray(net.fuse(s1[1], s2[1], s3, (H, W)))[0])
    s3 = net.stage3(s2[0])  # frame 1, the 2-stage fill: S3 on frame 0's pool4 first
    s1 = net.stage1(_frame(FRAMES, 1))
    s2 = net.stage2(s1[0])
    _close(out.scores[1], np.asarray(net.fuse(s1[1], s2[1], s3, (H, W)))[0])
    for t in range(2, T):
        s1, s2, s3 = net.stage1(_frame(FRAMES, t)), net.stage2(s1[0]), net.stage3(s2[0])
        _close(out.scores[t], np.asarray(net.fuse(s1[1], s2[1], s3, (H, W)))[0])


# ---------------------------------------------------------------------------------------------
# the pixel clock (Fig. 7)


def test_pixel_clock_fires_on_mean_absolute_pixel_change_since_its_last_firing(net):
    """S3 fires when mean |frame - frame at the last firing| / 255 >= theta; S1, S2 always."""
    base = np.full((H, W, 3), 10.0, np.float32)
    steps = [0.0, 3.0, 6.0, 30.0, 31.0, 45.0]  # brightness offsets, frame by frame
    frames = np.stack([base + d for d in steps])
    theta = 20.0 / 255.0
    out = clockwork.run(net, frames, f"adaptive-pixel:{theta}")
    # by hand: ref 0 -> 3 (3), 6 (6), 30 (30: fires, ref 30), 31 (1), 45 (15)
    want_change = np.array([0, 3, 6, 30, 1, 15], np.float32) / 255.0
    want_fired = [True, False, False, True, False, False]
    np.testing.assert_allclose(np.asarray(out.change), want_change, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out.fired)[:, 2], want_fired)
    assert np.asarray(out.fired)[:, :2].all()
    # Cached S3 from the last firing, fresh S1/S2: the adaptive reference's fusion.
    chain = _per_frame_chain(net, frames)
    for t, src in enumerate([0, 0, 0, 3, 3, 3]):
        expected = np.asarray(net.fuse(chain[t][0], chain[t][1], chain[src][2], (H, W)))[0]
        _close(out.scores[t], expected, msg=f"frame {t}")


def test_pixel_clock_streams_and_batches_as_run(net):
    frames = ADAPT_FRAMES
    spec = "adaptive-pixel:0.3"
    out = clockwork.run(net, frames, spec)
    assert not np.asarray(out.fired)[:, 2].all() and np.asarray(out.fired)[1:, 2].any()
    cw = clockwork.Clockwork(net, spec)
    state = cw.init((H, W, 3))
    for t in range(T):
        state, scores, fired = cw.step(state, frames[t])
        _close(scores, out.scores[t], rel=1e-5)
        np.testing.assert_array_equal(np.asarray(fired), np.asarray(out.fired[t]))
    from cwfcn import batched

    both = batched.run_batch(net, np.stack([frames, frames[::-1]]), spec)
    np.testing.assert_array_equal(np.asarray(both.fired[0]), np.asarray(out.fired))
    back = clockwork.run(net, frames[::-1], spec)
    np.testing.assert_array_equal(np.asarray(both.fired[1]), np.asarray(back.fired))
    _close(both.scores[1], back.scores, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# streaming


STREAM_SPECS = ["oracle", "skip", "exponential", "alternating", "adaptive", "pipeline2",
                "pipeline3", "adaptive-pixel:0.25"]


@pytest.mark.parametrize("spec", STREAM_SPECS)
def test_streaming_equals_run(net, adaptive_case, spec):
    frames = FRAMES
    if spec == "adaptive":
        spec, frames = f"adaptive:{adaptive_case[0]!r}", ADAPT_FRAMES
    out = clockwork.run(net, frames, spec)
    cw = clockwork.Clockwork(net, spec)
    state = cw.init((H, W, 3))
    for t in range(T):
        state, scores, fired = cw.step(state, frames[t])
        assert scores.shape == (H, W, C)
        _close(scores, out.scores[t], rel=1e-5)
        np.testing.assert_array_equal(np.asarray(fired), np.asarray(out.fired[t]))
        np.testing.assert_allclose(float(state.change), float(out.change[t]), atol=1e-7)
    assert int(state.t) == T


def test_streaming_state_is_reusable_from_init(net):
    """A fresh init restarts the clock (frame 0 fires everything again)."""
    cw = clockwork.Clockwork(net, "skip")
    state = cw.init((H, W, 3))
    state, _, _ = cw.step(state, FRAMES[0])
    state, s1, fired1 = cw.step(state, FRAMES[1])
    assert not np.asarray(fired1).any()
    state = cw.init((H, W, 3))
    _, s0, fired0 = cw.step(state, FRAMES[1])
    assert np.asarray(fired0).all()
    assert _max_diff(s0, s1) > 1e-3


# ---------------------------------------------------------------------------------------------
# engine structure and input checks


def test_engine_uses_cond(net):
    """Skipped stages are real branches (lax.cond), not computed-then-selected."""
    jaxpr = jax.make_jaxpr(lambda f: clockwork.run(net, f, "alternating").scores)(FRAMES)
    assert "cond" in str(jaxpr)


def test_run_rejects_bad_input(net):
    with pytest.raises(ValueError):
        clockwork.run(net, FRAMES[0], "oracle")  # rank 3
    with pytest.raises(ValueError):
        clockwork.run(net, FRAMES.astype(np.uint8), "oracle")
    with pytest.raises(ValueError):
        clockwork.run(net, np.zeros((2, H, W, 4), np.float32), "oracle")
    with pytest.raises(ValueError):
        clockwork.run(net, FRAMES, "periods:1,2")  # two clocks for three stages
    with pytest.raises(ValueError):
        clockwork.run(net, FRAMES, "bogus")
    with pytest.raises(ValueError):
        clockwork.run(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), FRAMES, "oracle")  # no staging


def test_clockwork_rejects_bad_input(net):
    with pytest.raises(ValueError):
        clockwork.Clockwork(net, "periods:1,2")
    cw = clockwork.Clockwork(net, "alternating")
    with pytest.raises(ValueError):
        cw.init((H, W, 4))
    state = cw.init((H, W, 3))
    with pytest.raises(ValueError):
        cw.step(state, FRAMES[0, : H - 4])  # another size than init
    with pytest.raises(ValueError):
        cw.step(state, FRAMES[0].astype(np.uint8))
    with pytest.raises(ValueError):
        cw.step(state, FRAMES[:1])  # rank 4


# ---------------------------------------------------------------------------------------------
# genericity: a toy staged module


class Toy(nnx.Module):
    """Three stages of 1x1 layers (Linear on the channel axis) and a global-pool stage."""

    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(3, 4, rngs=rngs)
        self.b = nnx.Linear(4, 6, rngs=rngs)
        self.c = nnx.Linear(6, 2, rngs=rngs)
        self.head_a = nnx.Linear(4, 2, rngs=rngs)
        self.head_b = nnx.Linear(6, 2, rngs=rngs)


def _toy_s1(m: Toy, x):
    return jnp.tanh(m.a(x / 100.0))


def _toy_s2(m: Toy, h):
    return jnp.tanh(m.b(h))


def _toy_s3(m: Toy, h):
    return m.c(h).mean(axis=(1, 2), keepdims=True)  # [N, 1, 1, 2]: a global term


def _toy_fuse(m: Toy, outs, out_hw):
    h1, h2, g = outs
    return m.head_a(h1) + m.head_b(h2) + g


def _toy_clock(outs):
    return outs[1]


Toy.staging = clockwork.Staging(
    stages=(_toy_s1, _toy_s2, _toy_s3), fuse=_toy_fuse, clock_scores=_toy_clock
)


def test_engine_runs_a_toy_staged_module():
    toy = Toy(nnx.Rngs(3))
    frames = np.random.default_rng(5).normal(0, 60, (5, 4, 6, 3)).astype(np.float32)
    out = clockwork.run(toy, frames, "alternating")
    assert out.scores.shape == (5, 4, 6, 2)
    h1 = h2 = g = None
    for t in range(5):
        x = jnp.asarray(frames[t : t + 1])
        h1 = np.tanh(np.asarray(toy.a(x / 100.0)))
        h2 = np.tanh(np.asarray(toy.b(jnp.asarray(h1))))
        if t % 2 == 0:
            g = np.asarray(toy.c(jnp.asarray(h2))).mean(axis=(1, 2), keepdims=True)
        expected = np.asarray(toy.head_a(jnp.asarray(h1)) + toy.head_b(jnp.asarray(h2))) + g
        _close(out.scores[t], expected[0], rel=1e-5)
    np.testing.assert_array_equal(np.asarray(out.fired)[:, 2], [True, False] * 2 + [True])
    # The cached global term matters: frame 1 differs from the toy's oracle run.
    oracle = clockwork.run(toy, frames, "oracle").scores
    assert _max_diff(out.scores[1], oracle[1]) > 1e-4
    _close(out.scores[2], oracle[2], rel=1e-5)
