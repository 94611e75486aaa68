"""The closed-loop budget: an adaptive clock that holds a target firing rate while it runs.

A fixed threshold fires at whatever rate the video's motion asks for: calibrated on a calm
start, it overspends when the motion picks up. A schedule with a target (`Schedule.target_rate`
R, `window` W, `tolerance` e; spec `adaptive@R/W`) adds a controller to the adaptive clock,
per stream, with its state in the carried clock state (`Control`, `ClockState.control`):

  c    = the gated stage's firings over the last W - 1 frames
  fire = t == 0  or  c < lo  or  (change >= theta and c < hi),
         lo = ceil((R - e) W), hi = floor((R + e) W)

so every window of W consecutive frames fires between lo and hi times: the budget holds by
construction. The history starts as a virtual past that fired evenly at R (its oldest frame
fired), so the windows that reach back before frame 0 hold too. Within the bounds the clock
chooses, and its threshold follows the rate by integral control,
theta <- clip(theta * exp(GAIN * (fired - R)), THETA_MIN, 1): a firing raises it, a skipped
frame lowers it, so it settles where the clock's own choice fires at R and the bounds rarely
bind. Everything is jnp on arrays of any leading stream shape: the same rule runs in
`clockwork.run`, `Clockwork.step` and `batched.run_batch` (per stream).

`rate_for_ms` turns a per-frame time budget into the target rate from measured stage costs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cwfcn.schedules import Schedule

__all__ = ["GAIN", "THETA_MIN", "Control", "bounds", "decide", "init_control", "rate_for_ms",
           "window_rates", "within_budget"]

GAIN = 0.1  # log-theta step per frame: about one e-fold in 1 / GAIN frames of steady error
THETA_MIN = 1e-4  # a floor, so that a multiplicative update can always climb back


class Control(NamedTuple):
    """The controller's carried state, per stream (leading shape `S`: () for one stream).

    Attributes:
      theta: float32 `S`, the current threshold.
      history: bool `[*S, W]`, a ring of the gated stage's last W firings: before frame t's
        decision, slot t % W holds that of frame t - W.
    """

    theta: jax.Array
    history: jax.Array


def bounds(schedule: Schedule) -> tuple[int, int]:
    """(lo, hi): the fewest and most firings allowed in any W consecutive frames."""
    rate, window, tol = schedule.target_rate, schedule.window, schedule.tolerance
    lo = max(0, math.ceil(round((rate - tol) * window, 9)))
    hi = min(window, math.floor(round((rate + tol) * window, 9)))
    return lo, hi


def _virtual_past(schedule: Schedule) -> np.ndarray:
    """bool `[W]`: round(R W) firings spread evenly, slot 0 (the oldest) one of them."""
    window = schedule.window
    count = min(max(round(schedule.target_rate * window), 1), window)
    j = np.arange(window)
    return (np.ceil((j + 1) * count / window) - np.ceil(j * count / window)).astype(bool)


def init_control(schedule: Schedule, streams: tuple[int, ...] = ()) -> Control | tuple:
    """The controller's state before frame 0 for streams of shape `streams` (() if one);
    `()` (no leaves) for a schedule without a target."""
    if schedule.target_rate is None:
        return ()
    theta = jnp.full(streams, max(schedule.theta, THETA_MIN), jnp.float32)
    history = jnp.broadcast_to(jnp.asarray(_virtual_past(schedule)), (*streams, schedule.window))
    return Control(theta, history)


def decide(schedule: Schedule, control: Control | tuple, change: jax.Array, t: jax.Array
           ) -> tuple[jax.Array, Control | tuple]:
    """Whether the gated stage fires, and the controller's next state.

    Args:
      schedule: an adaptive schedule (`theta` set), with or without a target.
      control: its state (`init_control`), `()` without a target.
      change: float32 `S`, the clock's change since the last firing (0 on frame 0).
      t: int32 scalar, the frame index (shared by the streams).

    Returns:
      (fire bool `S`, control after the frame). Without a target: fire where
      t == 0 or change >= theta, as the open-loop clock always has.
    """
    if schedule.target_rate is None:
        return (t == 0) | (change >= schedule.theta), control
    lo, hi = bounds(schedule)
    slot = t % schedule.window
    oldest = jnp.take(control.history, slot, axis=-1)
    recent = jnp.sum(control.history, axis=-1, dtype=jnp.int32) - oldest.astype(jnp.int32)
    fire = (t == 0) | (recent < lo) | ((change >= control.theta) & (recent < hi))
    step = jnp.float32(GAIN) * (fire.astype(jnp.float32) - jnp.float32(schedule.target_rate))
    theta = jnp.clip(control.theta * jnp.exp(step), THETA_MIN, 1.0).astype(jnp.float32)
    onehot = jnp.arange(schedule.window) == slot
    history = jnp.where(onehot, fire[..., None], control.history)
    return fire, Control(theta, history)


def window_rates(fired: np.ndarray, window: int) -> np.ndarray:
    """The firing rate of every run of `window` consecutive frames (sliding by one).

    Args:
      fired: bool `[T]`, e.g. the last stage's `RunOutput.fired[:, -1]`.
      window: W >= 1.

    Returns:
      float64 `[max(T - W + 1, 0)]`: window i covers frames i .. i + W - 1.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 frames, got {window}")
    fired = np.asarray(fired, np.float64).reshape(-1)
    if len(fired) < window:
        return np.zeros((0,))
    sums = np.convolve(fired, np.ones(window), "valid")
    return sums / window


def within_budget(rates: np.ndarray, schedule: Schedule) -> float:
    """The fraction of `window_rates` (windows of the schedule's W) that fire between the
    budget's lo and hi times (`bounds`); `schedule` must have a target."""
    lo, hi = bounds(schedule)
    counts = np.rint(np.asarray(rates) * schedule.window)
    return float(np.mean((counts >= lo) & (counts <= hi)))


def rate_for_ms(target_ms: float, full_ms: float, cheap_ms: float) -> float:
    """The last stage's firing rate whose mean time per frame is `target_ms`.

    A frame costs `full_ms` when the last stage fires and `cheap_ms` when it does not, so a
    rate R costs R full + (1 - R) cheap on average.

    Args:
      target_ms: the per-frame budget.
      full_ms: the measured time of a frame with every stage.
      cheap_ms: that of a frame without the last stage (the earlier stages and the fusion).

    Returns:
      R in (0, 1]: 1 when the budget affords the full net on every frame.

    Raises:
      ValueError: a budget below `cheap_ms` (not even the stages that run on every frame
        fit), or non-positive numbers.
    """
    if not (target_ms > 0 and full_ms > 0 and cheap_ms > 0):  # also rejects nan
        raise ValueError(f"times must be positive milliseconds, got target {target_ms!r}, "
                         f"full {full_ms!r}, cheap {cheap_ms!r}")
    if full_ms <= cheap_ms or target_ms >= full_ms:
        return 1.0
    rate = (target_ms - cheap_ms) / (full_ms - cheap_ms)
    if rate <= 0:
        raise ValueError(f"--target_ms {target_ms:g} is below {cheap_ms:.1f} ms, what a frame "
                         "costs even when the last stage does not fire (the earlier stages and "
                         f"the fusion; {full_ms:.1f} ms with every stage): give a larger budget, "
                         "smaller frames or a faster device")
    return float(rate)
