"""The closed-loop budget (`cwfcn.control`): against a numpy replay of its rule, on a stream
whose motion steps up midway, and carried alike by `run`, `Clockwork` and `run_batch`."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from cwfcn import batched, clockwork, control, schedules

H = W = 8
T = 60


def _stepping_stream(first: int = 1, second: int = 4, length: int = T) -> np.ndarray:
    """Flat grey frames whose level climbs `first` per frame, then `second` from midway: the
    pixel clock's change since its last firing is exactly (levels apart) / 255."""
    steps = np.where(np.arange(length) < length // 2, first, second)
    levels = np.concatenate([[0], np.cumsum(steps[1:])]).astype(np.float32)
    return np.broadcast_to(levels[:, None, None, None], (length, H, W, 3)).copy()


def _replay(levels: np.ndarray, theta0: float, rate: float, window: int, tol: float) -> np.ndarray:
    """The budget rule of the module docstring, in plain numpy, on grey levels."""
    lo, hi = math.ceil((rate - tol) * window - 1e-9), math.floor((rate + tol) * window + 1e-9)
    count = round(rate * window)
    past = np.zeros(window, bool)
    past[[(m * window) // count for m in range(count)]] = True  # frames -W..-1
    fires = list(past)
    theta, ref = np.float32(theta0), levels[0]
    for t, level in enumerate(levels):
        change = np.float32(abs(level - ref)) / np.float32(255.0)
        recent = sum(fires[len(fires) - window + 1:])
        fire = t == 0 or recent < lo or (change >= theta and recent < hi)
        theta = np.float32(np.clip(theta * np.exp(np.float32(control.GAIN)
                                                  * np.float32(float(fire) - rate)),
                                   control.THETA_MIN, 1.0))
        ref = level if fire else ref
        fires.append(fire)
    return np.asarray(fires[window:])


def _windows_ok(fired: np.ndarray, rate: float, window: int, tol: float) -> bool:
    rates = control.window_rates(fired, window)
    return bool(np.all(np.abs(rates - rate) <= tol + 1e-9))


def test_budget_holds_where_a_fixed_theta_drifts(net):
    frames = _stepping_stream()
    theta = 2.0 / 255.0  # fires every other frame on the calm half: rate 0.5 there
    fixed = np.asarray(clockwork.run(net, frames, f"adaptive-pixel:{theta}").fired)[:, -1]
    assert fixed[: T // 2].mean() == pytest.approx(0.5, abs=0.05)
    assert not _windows_ok(fixed, 0.5, 10, 0.1)  # it fires on every frame once motion steps up
    assert fixed[T // 2 + 5:].all()
    spec = f"adaptive-pixel:{theta}@0.5/10"
    out = clockwork.run(net, frames, spec)
    held = np.asarray(out.fired)[:, -1]
    assert _windows_ok(held, 0.5, 10, 0.1)
    np.testing.assert_array_equal(held, _replay(frames[:, 0, 0, 0], theta, 0.5, 10, 0.1))
    assert np.asarray(out.fired)[:, :-1].all()  # the earlier stages still run on every frame


@pytest.mark.parametrize("rate,window,tol", [(0.3, 20, 0.1), (0.25, 12, 0.0)])
def test_decide_matches_the_replay_and_every_window_holds(net, rate, window, tol):
    frames = _stepping_stream(2, 7, 48)
    theta = 0.01
    spec = f"adaptive-pixel:{theta}@{rate}/{window}/{tol}"
    fired = np.asarray(clockwork.run(net, frames, spec).fired)[:, -1]
    np.testing.assert_array_equal(fired, _replay(frames[:, 0, 0, 0], theta, rate, window, tol))
    assert _windows_ok(fired, rate, window, tol)


def test_state_carried_by_step_chunks_and_batch_equals_one_scan(net):
    calm, busy = _stepping_stream(1, 4, 24), _stepping_stream(4, 1, 24)
    spec = "adaptive-pixel:0.01@0.4/10"
    whole = clockwork.run(net, calm, spec)
    cw = clockwork.Clockwork(net, spec)
    state = cw.init((H, W, 3))
    for t in range(len(calm)):
        state, scores, fired = cw.step(state, calm[t])
        np.testing.assert_array_equal(np.asarray(fired), np.asarray(whole.fired[t]))
        np.testing.assert_allclose(np.asarray(scores), np.asarray(whole.scores[t]), rtol=1e-5,
                                   atol=1e-5)
    chunked = clockwork.run(net, calm, spec, chunk=7)  # 4 scans, the controller carried
    np.testing.assert_array_equal(np.asarray(chunked.fired), np.asarray(whole.fired))
    state = cw.init((H, W, 3))
    for start in range(0, len(calm), 5):
        state, part = cw.run_chunk(state, calm[start:start + 5])
        np.testing.assert_array_equal(np.asarray(part.fired),
                                      np.asarray(whole.fired[start:start + 5]))
    both = batched.run_batch(net, np.stack([calm, busy]), spec)  # each stream its own loop
    other = clockwork.run(net, busy, spec)
    np.testing.assert_array_equal(np.asarray(both.fired[0]), np.asarray(whole.fired))
    np.testing.assert_array_equal(np.asarray(both.fired[1]), np.asarray(other.fired))
    assert not np.array_equal(np.asarray(whole.fired), np.asarray(other.fired))


def test_score_clock_takes_a_budget_too(net):
    rng = np.random.default_rng(0)
    frames = rng.normal(0, 40, (30, H, W, 3)).astype(np.float32)
    fired = np.asarray(clockwork.run(net, frames, "adaptive:0.5@0.3/10").fired)[:, -1]
    assert _windows_ok(fired, 0.3, 10, 0.1)


def test_init_control_is_an_even_virtual_past():
    schedule = schedules.parse_schedule("adaptive:0.2@0.25/8")
    ctrl = control.init_control(schedule)
    np.testing.assert_array_equal(np.asarray(ctrl.history), [1, 0, 0, 0, 1, 0, 0, 0])
    assert float(ctrl.theta) == pytest.approx(0.2)
    batch = control.init_control(schedule, (3,))
    assert batch.history.shape == (3, 8) and batch.theta.shape == (3,)
    assert control.init_control(schedules.parse_schedule("adaptive:0.2")) == ()
    assert control.bounds(schedule) == (2, 2)  # 0.25 +- 0.1 of 8 frames: 1.2 .. 2.8
    assert control.bounds(schedules.parse_schedule("adaptive@0.5/20")) == (8, 12)


def test_decide_without_a_target_is_the_open_loop_clock():
    schedule = schedules.parse_schedule("adaptive:0.3")
    change = jnp.asarray([0.1, 0.3, 0.5])
    fire, ctrl = control.decide(schedule, (), change, jnp.int32(4))
    np.testing.assert_array_equal(np.asarray(fire), [False, True, True])
    assert ctrl == ()


def test_window_rates_and_rate_for_ms_by_hand():
    np.testing.assert_allclose(control.window_rates([1, 0, 1, 1, 0], 2), [0.5, 0.5, 1.0, 0.5])
    assert control.window_rates([1, 0], 3).shape == (0,)
    # 10 ms cheap, 30 ms full: a 20 ms budget is half the frames with the last stage.
    assert control.rate_for_ms(20.0, 30.0, 10.0) == pytest.approx(0.5)
    assert control.rate_for_ms(40.0, 30.0, 10.0) == 1.0
    with pytest.raises(ValueError, match=r"below 10\.0 ms"):
        control.rate_for_ms(5.0, 30.0, 10.0)
    with pytest.raises(ValueError, match="positive"):
        control.rate_for_ms(float("nan"), 30.0, 10.0)


@pytest.mark.parametrize("spec,match", [
    ("oracle@0.5", "for the adaptive clocks"), ("adaptive@0", "in \\(0, 1\\]"),
    ("adaptive@0.5/0", "window"), ("adaptive@0.5/x", "@R\\[/W\\[/e\\]\\]"),
    ("adaptive@0.3/4/0", "no whole number"), ("adaptive@0.5/20/1.5", "tolerance"),
])
def test_bad_budgets_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        schedules.parse_schedule(spec)


def test_budget_specs_round_trip_and_bind():
    schedule = schedules.parse_schedule("Adaptive-Pixel:0.02@0.4/16/0.05")
    assert schedule.name == "adaptive-pixel:0.02@0.4/16/0.05"
    assert schedules.parse_schedule(schedule.name) == schedule
    bound = schedule.bind(4)
    assert (bound.target_rate, bound.window, bound.tolerance, bound.theta) == (0.4, 16, 0.05, 0.02)
    assert bound.periods == (1, 1, 1, 1)
    assert schedule.params()["target_rate"] == 0.4
