"""The schedule registry: every named clockwork schedule and truncated baseline, in one table.

A `Schedule` gives each stage of a staged net a clock. The named schedules are rules for a
net of N stages (`REGISTRY`, in table order), so one name serves every staging:
  oracle          every stage on every frame: periods 1, ..., 1;
  skip            every stage on every other frame: periods 2, ..., 2;
  exponential     stage k every 2**k frames: periods 1, 2, 4, ...;
  alternating     the last stage every other frame: periods 1, ..., 1, 2;
  periods:a,b,c   explicit periods, one per stage (returned as they are by `bind`);
  adaptive:theta  every stage on every frame but the last, which fires when the fraction of
                  positions whose class argmax of the clock scores (FCN-8s: uncropped
                  score_pool4) differs from that at its last firing is >= theta;
  adaptive-pixel:theta  the same, but the clock watches the input: the last stage fires
                  when the mean absolute difference of the frame's pixels from the frame at
                  its last firing, over 255, is >= theta (the paper's Fig. 7 clock);
  adaptive[:theta]@R[/W[/e]]  (either clock) a budget: the controller of `cwfcn.control`
                  holds the last stage's firings in every W frames within R +- e, theta
                  (the starting threshold) following the rate as the video runs;
  pipelineK       the deepest K - 1 stages lagged: each reads the previous step's output of
                  the stage before it (pipeline3: frame t fuses S1(t), S2(t-1), S3(t-2);
                  pipeline2: S1+S2 on t, S3 on t-1); needs N >= K;
  pool4, pool3    the truncated baselines (Tables 3, 4): the first 2 / 1 stages on every
                  frame and a truncated head (`keep`); the evaluator runs them, not the
                  engine.
`parse_schedule` resolves a name for `DEFAULT_STAGES` stages unless told otherwise; the
engine re-binds it to its net's staging (`Schedule.bind`). `SCHEDULE_HELP`, `ALL_SCHEDULES`,
`ADAPTIVE_SIGNALS` and `BASELINES` derive from the table.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Sequence

# The paper's FCN-8s staging (`model.FCN8s.staging`): S1 = conv1_1 .. pool3, S2 = conv4_1 ..
# pool4, S3 = conv5_1 .. upscore2. A name parsed without a net resolves for this many stages.
DEFAULT_STAGES = 3
DEFAULT_THETA = 0.25  # the paper's operating point on YouTube-Objects
MAX_THETAS = 100  # a theta sweep's most thresholds: each runs the whole data set
DEFAULT_WINDOW = 20  # frames over which a budget holds: under a second of video
DEFAULT_TOLERANCE = 0.1  # the budget's band: R +- 0.1, two firings either way in 20 frames
# The paper's latency baselines (Tables 3, 4) by name: how many stages each keeps.
BASELINES = {"pool3": 1, "pool4": 2}
# What an adaptive clock compares with its last firing: the class maps, or the input frame.
SIGNALS = ("scores", "pixels")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A clock per stage. Hashable: it is a static argument of the jitted engine.

    Attributes:
      name: the spec it was parsed from (for tables and errors; `bind` reads its rule).
      periods: stage s fires on frames t with t % periods[s] == 0.
      lags: 1 where stage s reads the previous step's output of stage s-1 (pipelines).
      theta: if set, the last stage fires by the adaptive clock instead of its period.
      signal: what the adaptive clock compares with its last firing: "scores" (the
        class argmax of the staging's clock scores) or "pixels" (the input frame).
      keep: a truncated baseline: the first `keep` stages on every frame and a truncated
        head (the evaluator's `predict` runs it); None for clockwork schedules.
      target_rate: an adaptive schedule's budget R: its controller (`cwfcn.control`) holds
        the last stage's firings in every `window` frames within R +- `tolerance`, and
        `theta` is only where its threshold starts. None: the open-loop clock.
      window: W, the frames of a budget's window (0 without a target).
      tolerance: e, the budget's band (0 without a target).
    """

    name: str
    periods: tuple[int, ...]
    lags: tuple[int, ...]
    theta: float | None = None
    signal: str = "scores"
    keep: int | None = None
    target_rate: float | None = None
    window: int = 0
    tolerance: float = 0.0

    def __post_init__(self):
        # A hand-made Schedule is checked as a parsed one: the engine trusts its fields.
        if not all(_is_int(p) and p >= 1 for p in self.periods):
            raise ValueError(f"schedule {self.name!r}: periods must be positive integers, got "
                             f"{self.periods!r}")
        if not all(_is_int(lag) and lag in (0, 1) for lag in self.lags):
            raise ValueError(f"schedule {self.name!r}: lags must be 0 or 1 (1: the stage reads "
                             f"the previous frame's output of the one before), got {self.lags!r}")
        if len(self.lags) != len(self.periods):
            raise ValueError(f"schedule {self.name!r}: {len(self.periods)} periods but "
                             f"{len(self.lags)} lags: give one of each per stage")
        if self.theta is not None and not (isinstance(self.theta, numbers.Real)
                                           and 0.0 <= self.theta <= 1.0):  # also rejects nan
            raise ValueError(f"schedule {self.name!r}: theta must be None or a number in [0, 1], "
                             f"got {self.theta!r}")
        if self.signal not in SIGNALS:
            raise ValueError(f"schedule {self.name!r}: signal must be one of {SIGNALS}, got "
                             f"{self.signal!r}")
        if self.target_rate is not None:
            _check_budget(self)

    @property
    def num_stages(self) -> int:
        return len(self.periods)

    @property
    def pipelined(self) -> bool:
        return any(self.lags)

    @property
    def pipeline_depth(self) -> int:
        """How many stages are lagged (pipeline3: 2); a pipeline fills in as many steps."""
        return sum(1 for lag in self.lags if lag)

    @property
    def cycle(self) -> int:
        """Frames after which a fixed schedule repeats: the lcm of its periods (1 for the
        others). Frame t's state is that of phase t % cycle since the last full firing."""
        return 1 if self.theta is not None or self.pipelined else math.lcm(*self.periods)

    def params(self) -> dict:
        """The schedule's parameters as JSON-able values (for result rows)."""
        return {"periods": list(self.periods), "lags": list(self.lags), "theta": self.theta,
                "signal": self.signal, "keep": self.keep, "target_rate": self.target_rate,
                "window": self.window, "tolerance": self.tolerance}

    def bind(self, num_stages: int) -> Schedule:
        """This schedule for a net of `num_stages` stages.

        A named schedule is re-derived by its rule (theta kept); an explicit
        `periods:a,b,c` schedule, or one already of that many stages, is returned as is.

        Args:
          num_stages: the stages of the net's staging.

        Returns:
          The schedule with one clock per stage (explicit periods: unchanged, which the
          engine then refuses if their count differs).

        Raises:
          ValueError: the rule does not fit that many stages (pipeline3 on two, pool4 on
            two or fewer).
        """
        rule = REGISTRY.get(self.name.partition(":")[0])
        if rule is None or rule.make is None or num_stages == self.num_stages:
            return self
        return dataclasses.replace(_made(rule, num_stages), name=self.name, theta=self.theta,
                                   target_rate=self.target_rate, window=self.window,
                                   tolerance=self.tolerance)


def _is_int(x: object) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_budget(schedule: Schedule) -> None:
    """A target's fields fit together: an adaptive clock, R in (0, 1], W >= 1, e in
    [0, 1), and a band that holds at least one firing per window."""
    name, rate, window, tol = (schedule.name, schedule.target_rate, schedule.window,
                               schedule.tolerance)
    if schedule.theta is None:
        raise ValueError(f"schedule {name!r}: a target rate needs an adaptive clock "
                         "(adaptive@R or adaptive-pixel@R)")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"schedule {name!r}: the target rate must be in (0, 1], got {rate}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"schedule {name!r}: the window must be a whole number of frames "
                         f">= 1, got {window!r}")
    if not 0.0 <= tol < 1.0:
        raise ValueError(f"schedule {name!r}: the tolerance must be in [0, 1), got {tol}")
    if math.floor(round((rate + tol) * window, 9)) < max(
            1, math.ceil(round((rate - tol) * window, 9))):
        raise ValueError(f"schedule {name!r}: no whole number of firings in {window} frames "
                         f"is within {rate:g} +- {tol:g}: widen the window or the tolerance, "
                         f"e.g. @{rate:g}/{DEFAULT_WINDOW}")


def with_budget(schedule: Schedule, rate: float, window: int = DEFAULT_WINDOW,
                tolerance: float = DEFAULT_TOLERANCE) -> Schedule:
    """An adaptive schedule with a target: `adaptive:theta@R/W[/e]` (`cwfcn.control`).

    Raises:
      ValueError: not an adaptive schedule, or a budget that does not fit (`Schedule`).
    """
    if schedule.theta is None:
        raise ValueError(f"schedule {schedule.name!r}: a target rate needs an adaptive clock "
                         "(adaptive or adaptive-pixel)")
    head = schedule.name.partition(":")[0].partition("@")[0]
    spec = f"{head}:{schedule.theta:g}@{rate:g}/{window}"
    if tolerance != DEFAULT_TOLERANCE:
        spec += f"/{tolerance:g}"
    return dataclasses.replace(schedule, name=spec, target_rate=rate, window=window,
                               tolerance=tolerance)


@dataclasses.dataclass(frozen=True)
class ScheduleRule:
    """One row of the registry.

    Attributes:
      name: the schedule's name (the part before ":" of a spec).
      help: the spec's form and meaning, for `SCHEDULE_HELP`.
      make: `num_stages -> Schedule` for a net of that many stages (raising ValueError
        where it does not fit); None for the explicit `periods:a,b,c`.
      in_all: whether `--schedule all` (`ALL_SCHEDULES`) runs it.
      takes_theta: "name:theta" sets the adaptive threshold (default `DEFAULT_THETA`).
    """

    name: str
    help: str
    make: Callable[[int], Schedule] | None
    in_all: bool = True
    takes_theta: bool = False


def _by_period(name: str, periods: Callable[[int], tuple[int, ...]]) -> Callable[[int], Schedule]:
    """A fixed schedule whose periods for N stages are `periods(N)`."""
    return lambda n: Schedule(name, periods(n), (0,) * n)


def _adaptive(name: str, signal: str) -> Callable[[int], Schedule]:
    """Periods 1 everywhere; the last stage gated by the adaptive clock on `signal`."""
    return lambda n: Schedule(f"{name}:{DEFAULT_THETA:g}", (1,) * n, (0,) * n,
                              theta=DEFAULT_THETA, signal=signal)


def _pipeline(depth: int) -> Callable[[int], Schedule]:
    """The deepest `depth` stages lagged: pipeline{depth + 1}."""
    name = f"pipeline{depth + 1}"

    def make(n: int) -> Schedule:
        if n < depth + 1:
            raise ValueError(f"{name} lags the deepest {depth} stages: it needs a net of at "
                             f"least {depth + 1} stages, this one has {n}")
        return Schedule(name, (1,) * n, (0,) * (n - depth) + (1,) * depth)

    return make


def _baseline(name: str) -> Callable[[int], Schedule]:
    """The truncated baseline `name`: its first `BASELINES[name]` stages on every frame."""
    keep = BASELINES[name]

    def make(n: int) -> Schedule:
        if keep >= n:
            raise ValueError(f"baseline {name} keeps {keep} stages: it needs a net of more "
                             f"than {keep} stages, this one has {n}")
        return Schedule(name, (1,) * n, (0,) * n, keep=keep)

    return make


_RULES = (
    ScheduleRule("oracle", "oracle", _by_period("oracle", lambda n: (1,) * n)),
    ScheduleRule("skip", "skip", _by_period("skip", lambda n: (2,) * n)),
    ScheduleRule("exponential", "exponential",
                 _by_period("exponential", lambda n: tuple(2**k for k in range(n)))),
    ScheduleRule("alternating", "alternating",
                 _by_period("alternating", lambda n: (1,) * (n - 1) + (2,))),
    ScheduleRule("periods", "periods:a,b,c (positive integers)", None, in_all=False),
    ScheduleRule("adaptive", "adaptive or adaptive:theta (0 <= theta <= 1), either clock "
                 "with a budget adaptive[:theta]@R[/W[/e]] (the last stage fires on R +- e "
                 f"of every W frames; W = {DEFAULT_WINDOW}, e = {DEFAULT_TOLERANCE:g} unless "
                 "given)",
                 _adaptive("adaptive", "scores"), takes_theta=True),
    ScheduleRule("adaptive-pixel", "adaptive-pixel:theta (the pixel-difference clock)",
                 _adaptive("adaptive-pixel", "pixels"), in_all=False, takes_theta=True),
    ScheduleRule("pipeline2", "pipeline2", _pipeline(1)),
    ScheduleRule("pipeline3", "pipeline3", _pipeline(2)),
    ScheduleRule("pool4", "pool4 (a truncated baseline: the first 2 stages)",
                 _baseline("pool4")),
    ScheduleRule("pool3", "pool3 (a truncated baseline: the first stage)", _baseline("pool3")),
)
REGISTRY = {rule.name: rule for rule in _RULES}
SCHEDULE_HELP = ", ".join(rule.help for rule in _RULES)
ALL_SCHEDULES = tuple(rule.name for rule in _RULES if rule.in_all)
# The adaptive clocks by schedule name: what each compares with its last firing.
ADAPTIVE_SIGNALS = {rule.name: rule.make(DEFAULT_STAGES).signal for rule in _RULES
                    if rule.takes_theta}


def _made(rule: ScheduleRule, num_stages: int) -> Schedule:
    """`rule.make(num_stages)`, after checking that there is a stage to clock."""
    if num_stages < 1:
        raise ValueError(f"a net of {num_stages} stages: a schedule needs at least one")
    return rule.make(num_stages)


def parse_schedule(spec: str | Schedule, num_stages: int | None = None) -> Schedule:
    """Turns a schedule name into a `Schedule`.

    Args:
      spec: one of `SCHEDULE_HELP` (case-insensitive), or a `Schedule`.
      num_stages: the stages of the net it is for (`Schedule.bind`); None: a name resolves
        for `DEFAULT_STAGES`, and a `Schedule` is returned as it is.

    Returns:
      The schedule.

    Raises:
      ValueError: for anything else, naming the accepted forms; or a named schedule that
        does not fit `num_stages`.
    """
    if isinstance(spec, Schedule):
        return spec if num_stages is None else spec.bind(num_stages)
    if not isinstance(spec, str):
        raise ValueError(f"schedule must be a string, got {type(spec).__name__}: {SCHEDULE_HELP}")
    stages = DEFAULT_STAGES if num_stages is None else num_stages
    name, at, budget = spec.strip().lower().partition("@")
    head, sep, arg = name.partition(":")
    rule = REGISTRY.get(head)
    if rule is not None and rule.make is None:  # periods:a,b,c
        try:
            periods = tuple(int(p) for p in arg.split(","))
        except ValueError:
            periods = ()
        if not periods or min(periods) < 1:
            raise ValueError(f"bad schedule {spec!r}: periods must be positive integers, "
                             "e.g. periods:1,2,4")
        return Schedule(name, periods, (0,) * len(periods))
    if rule is not None and rule.takes_theta:
        theta = DEFAULT_THETA
        if arg:
            try:
                theta = float(arg)
            except ValueError:
                theta = math.nan
        if not 0.0 <= theta <= 1.0:  # also rejects nan
            raise ValueError(f"bad schedule {spec!r}: theta must be a number in [0, 1], "
                             f"e.g. {head}:0.25")
        schedule = dataclasses.replace(_made(rule, stages), name=f"{head}:{theta:g}",
                                       theta=theta)
        return _parse_budget(spec, schedule, budget) if at else schedule
    if at:
        raise ValueError(f"bad schedule {spec!r}: a target rate (@R) is for the adaptive "
                         "clocks, e.g. adaptive@0.5 or adaptive:0.25@0.5/20")
    if rule is None or sep:
        raise ValueError(f"unknown schedule {spec!r}; use one of: {SCHEDULE_HELP}")
    return _made(rule, stages)


def _parse_budget(spec: str, schedule: Schedule, budget: str) -> Schedule:
    """`schedule` with the target "R[/W[/e]]" of a spec's "@" part (`with_budget`)."""
    parts = budget.split("/")
    try:
        rate = float(parts[0])
        window = int(parts[1]) if len(parts) > 1 else DEFAULT_WINDOW
        tolerance = float(parts[2]) if len(parts) > 2 else DEFAULT_TOLERANCE
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"bad schedule {spec!r}: a target is @R[/W[/e]], a rate R in (0, 1], "
                         f"a window of W frames and a tolerance e, e.g. adaptive@0.5/"
                         f"{DEFAULT_WINDOW}/{DEFAULT_TOLERANCE:g}")
    return with_budget(schedule, rate, window, tolerance)


def parse_thetas(spec: str) -> list[float]:
    """"0.25" -> [0.25]; "0.05:0.5:0.05" -> [0.05, 0.1, ..., 0.5] (stop included).

    Raises:
      ValueError: anything but a number or start:stop:step with step > 0, start <= stop,
        or a sweep of more than `MAX_THETAS` thresholds.
    """
    try:
        parts = [float(p) for p in spec.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts
    if len(parts) == 3 and parts[2] > 0 and parts[0] <= parts[1]:
        count = round((parts[1] - parts[0]) / parts[2]) + 1
        if count > MAX_THETAS:  # each theta is a schedule run over the whole data set
            raise ValueError(f"--theta {spec!r} sweeps {count:,} thresholds, more than "
                             f"{MAX_THETAS} (each is a full evaluation): use a larger step or a "
                             "narrower range, e.g. 0.05:0.5:0.05 (10 thresholds)")
        return [round(parts[0] + i * parts[2], 6) for i in range(count)]
    raise ValueError(f"bad --theta {spec!r}: a number in [0, 1] or start:stop:step, "
                     "e.g. 0.05:0.5:0.05")


def split_schedules(spec: str) -> list[str]:
    """Comma-separated schedules; a comma before a digit stays inside (periods:1,2,4)."""
    return [name for name in re.split(r",(?!\d)", spec) if name.strip()]


def parse_schedules(spec: str, thetas: Sequence[float]) -> list[Schedule]:
    """The schedules a comma-separated spec names, oracle first (the reference for time and
    accuracy, inserted when missing).

    Args:
      spec: schedules (`split_schedules`), or "all" for `ALL_SCHEDULES`.
      thetas: the sweep a bare "adaptive" or "adaptive-pixel" stands for: one schedule per
        theta.

    Returns:
      The schedules, for `DEFAULT_STAGES` stages (the engine re-binds them to its net).

    Raises:
      ValueError: an unknown or malformed schedule.
    """
    names = list(ALL_SCHEDULES) if spec.strip().lower() == "all" else split_schedules(spec)
    schedules = []
    for name in (name.strip().lower() for name in names):
        if name in ADAPTIVE_SIGNALS:
            schedules += [parse_schedule(f"{name}:{theta}") for theta in thetas]
        else:
            schedules.append(parse_schedule(name))
    if all(s.name != "oracle" for s in schedules):
        schedules.insert(0, parse_schedule("oracle"))
    return schedules
