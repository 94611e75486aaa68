"""Fuzzing train.py's and evaluate.py's flags: random values of every type, every flag.

The contract (cwfcn/cli.py): whatever the flags, a run ends with status 0, or with status 2
and one line `<prog>: error: ...` on stderr; never a traceback, never status 1, never a hang.

The examples run in-process (`_run_cli`: `cli.main` itself, its `exit_now` recording instead
of exiting), so hypothesis can try hundreds in seconds; one forked batch per CLI (`_driver`)
then checks the real process contract, os._exit and stderr included, with one JAX import.
A run whose flags pass every check stops where the work would start (`_REACHED`: the
data read, the net trained or loaded), so valid values cost nothing, and count as passing.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib.util
import io
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from absl import flags
from absl import logging as absl_logging
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cwfcn import cli, compilation, distributed, evaluate_lib, train_lib

ROOT = Path(__file__).resolve().parents[1]
# ml_collections loads each --config file with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
TIME_BOUND_S = 10.0  # an example that passes its checks stops before any real work
_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow, HealthCheck.data_too_large])


class _Exited(SystemExit):
    """`cli.exit_now`, in-process: the line it printed and the status it exited with."""

    def __init__(self, line: str, status: int):
        super().__init__(status)
        self.line, self.status = line, status


class _Reached(Exception):
    """The run passed every check of its flags and would start the work now."""


# ---------------------------------------------------------------------------------------------
# The values: every type a flag may get, and paths a user (or an attacker) may give.


def _paths(tmp: Path, ro: Path) -> list[str]:
    return [str(tmp / "new" / "out.json"), str(tmp / "out.json"), str(tmp / "file.txt"),
            str(tmp), str(tmp / "dir") + "/", str(ro / "x"), str(ro), "/dev/full", "/dev/null",
            "/nonexistent/deep/x", "", " ", "~", "-", ".", "..", str(tmp / "ü ñ 名前.json"),
            str(tmp / ("x" * 300)), str(tmp / "file.txt" / "under-a-file"), "/proc/self/mem",
            "/", str(tmp / "sub" / "..." / "x"), "/dev/zero", str(tmp / "fifo")]


def _numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-3, 5).map(str),
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "-1e400", "1e-400", "0x10",
                         "1_000", "1e3", "0.0", "-0", "+1", " 1", "1 ", "\uff11", "⅕", "True",
                         "None", "[]", "{}", "1,2", "0.5:0.1:0.1", "0:1:0", "0:1:1e-9",
                         "0.1:0.2:-0.1", "nan:1:0.1", "1:", ":::", "0.05:0.5:0.05"]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(-2.0, 2.0).map(str),
    )


def _texts() -> st.SearchStrategy[str]:
    # No NUL: an argv string cannot hold one.
    return st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                   max_size=12)


SCHEDULES = ["all", "adaptive", "oracle", "pool4", "pool3", "periods:1,2,4", "periods:0,1,1",
             "periods:1,2", "periods:", "periods:1,2,4,8", "adaptive:1.5", "adaptive:nan",
             "adaptive:-0", "adaptive@0.5", "adaptive@0.5/0", "adaptive@2/10/0.1",
             "adaptive@0.5/10/1", "adaptive-pixel", "adaptive-pixel:0.02@0.5", "oracle@0.5",
             "sometimes", ",", "oracle,,adaptive", "ALL", " adaptive ", "alternating", "skip",
             "periods:99999999999999999999", "adaptive:0.1:0.2"]
DATA = ["synthetic", "SYNTHETIC", " synthetic ", "synthetic:3", "voc", "nyud", "cityscapes",
        "pascal-translated", "pascal-translated:16", "pascal-translated:abc", "youtube",
        "video:", "video:/no/such.mp4", "nowhere", "", ":", "tfds", "video:rtsp://"]


def _values(paths: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(_numbers(), _texts(), st.sampled_from(paths), st.sampled_from(SCHEDULES),
                     st.sampled_from(["true", "false", "1", "0", "yes", "float16", "bfloat16",
                                      "int8", "pool3=x.caffemodel", "pool4=", "pool5=x",
                                      "coin", "clip", "nohost:abc", "localhost:0",
                                      "localhost:70000", "[::1]:1", "a:b:c"]))


# Config overrides worth trying (the rest of the config is checked by config_check alike).
CONFIG_KEYS = ["seed", "train.steps", "train.batch_size", "train.log_every",
               "train.checkpoint_every", "train.eval_every", "optim.learning_rate",
               "optim.momentum", "model.num_classes", "model.widths", "model.arch",
               "data.name", "data.size", "data.num_frames", "data.num_videos", "data.mean",
               "clock.schedule", "clock.boundary_radius", "no_such_key", "train.no_such",
               "model"]
# absl's own flags that are safe in-process (--run_with_pdb would wait on a debugger).
ABSL_FLAGS = ["only_check_args", "verbosity", "v", "stderrthreshold", "logtostderr",
              "alsologtostderr", "log_dir", "flagfile", "undefok", "showprefixforinfo"]
EVALUATE_FLAGS = ["schedule", "baselines", "phase", "theta", "target_rate", "target_ms",
                  "rate_window", "rate_tolerance", "calibration_frames", "max_frames", "live",
                  "plot", "video_out", "data", "data_dir", "checkpoint", "dtype", "output",
                  "repeats", "coordinator", "num_processes", "process_id"]
TRAIN_FLAGS = ["workdir", "data_parallel", "coordinator", "num_processes", "process_id"]


@st.composite
def _argv(draw, prog: str, paths: list[str]) -> list[str]:
    """`prog` with --config configs/tiny.py (or a bad --config), then random flags."""
    own = EVALUATE_FLAGS if prog == "evaluate.py" else TRAIN_FLAGS
    bad_configs = [*paths, "README.md", "configs", "configs/tiny.py:x", "configs/__init__.py"]
    args = ["--config", draw(st.sampled_from(bad_configs)) if draw(st.integers(0, 9)) == 0
            else "configs/tiny.py"]
    if prog == "evaluate.py":  # the default data, the sample, may be fetched: never left out
        args += ["--data", "synthetic" if draw(st.booleans()) else draw(st.sampled_from(DATA))]
    value = _values(paths)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["own"] * 8 + ["config"] * 3 + ["absl", "stray"]))
        if kind == "stray":
            args.append(draw(st.one_of(_texts(), st.sampled_from(["-", "--", "-x", "--="]))))
            continue
        name = draw(st.sampled_from({"own": own, "config": [f"config.{k}" for k in CONFIG_KEYS],
                                     "absl": ABSL_FLAGS}[kind]))
        if name == "flagfile":  # a file of flags: only the paths (never one that never ends)
            args.append(f"--flagfile={draw(st.sampled_from(paths))}")
            continue
        form = draw(st.sampled_from(["=", " ", "dashed", "no", "bare"]))
        text = draw(value)
        if form == "=":
            args.append(f"--{name}={text}")
        elif form == " ":
            args += [f"--{name}", text]
        elif form == "dashed":
            args.append(f"--{name.replace('_', '-')}={text}")
        else:
            args.append(f"--no{name}" if form == "no" else f"--{name}")
    return [prog, *args]


# ---------------------------------------------------------------------------------------------
# In-process: each CLI's module loaded once, its flags removed again afterwards.


def _load(prog: str):
    """Imports train.py or evaluate.py (its flags join absl's FLAGS); returns the job and the
    names of the flags it defined."""
    before = set(flags.FLAGS)
    name = prog.removesuffix(".py")
    spec = importlib.util.spec_from_file_location(f"_fuzzed_{name}", ROOT / prog)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name), set(flags.FLAGS) - before


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, Path]:
    """A scratch directory with a file in it, and an unwritable directory: a read-only one
    for a user, /sys (EPERM) for root, who writes anywhere."""
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "file.txt").write_text("--schedule=oracle\n")
    (tmp / "dir").mkdir()
    os.mkfifo(tmp / "fifo")  # read, it waits for a writer forever
    ro = Path("/sys/cwfcn-fuzz") if os.geteuid() == 0 else tmp / "ro"
    if os.geteuid() != 0:
        ro.mkdir(mode=0o555)
    return tmp, ro


@pytest.fixture
def cli_in_process(monkeypatch, scratch):
    """Runs a CLI's argv in-process: (status, stderr, reached), the work replaced by
    `_Reached` and `cli.exit_now` by `_Exited`."""
    tmp, _ = scratch

    def reached(*args, **kwargs):
        raise _Reached

    def exit_now(line, status):
        print(line, file=sys.stderr)
        raise _Exited(line, status)

    monkeypatch.setenv("CWFCN_CACHE", str(tmp / "cache"))
    monkeypatch.setattr(cli, "exit_now", exit_now)
    monkeypatch.setattr(compilation, "enable_cache", lambda *a, **k: None)
    for module, name in ((train_lib, "_train"), (evaluate_lib, "load_net"),
                         (evaluate_lib, "evaluate_live"), (distributed.jax.distributed,
                                                           "initialize")):
        monkeypatch.setattr(module, name, reached)
    verbosity = absl_logging.get_verbosity()
    loaded: dict[str, tuple] = {}

    def run(argv: list[str]) -> tuple[int, str, bool]:
        prog = argv[0]
        if prog not in loaded:
            for other in list(loaded):  # both CLIs define --config: one at a time
                for name in loaded.pop(other)[1]:
                    delattr(flags.FLAGS, name)
            loaded[prog] = _load(prog)
        job = loaded[prog][0]
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)  # the last run's overrides: each parse defines its own
        flags.FLAGS.unparse_flags()
        monkeypatch.setattr(sys, "argv", argv)  # config_flags reads its overrides there
        err, status, hit = io.StringIO(), 0, False
        # A hang (a read that never ends) cannot be bounded in-process: the watchdog ends
        # pytest with every thread's traceback instead of waiting forever.
        faulthandler.dump_traceback_later(TIME_BOUND_S * 3, exit=True)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.main(prog, job)
            except _Reached:
                hit = True
            except SystemExit as e:  # _Exited, or absl's own exit (e.g. --only_check_args)
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            finally:
                faulthandler.cancel_dump_traceback_later()
        return status, err.getvalue(), hit

    yield run
    for _, names in loaded.values():
        for name in names:
            delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
    absl_logging.set_verbosity(verbosity)


def _check(argv: list[str], status: int, stderr: str, seconds: float) -> None:
    assert seconds < TIME_BOUND_S, (argv, seconds)
    assert "Traceback" not in stderr, (argv, stderr)
    assert status in (0, 2), (argv, status, stderr)
    if status == 2:
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{argv[0]}: error: "), (argv, stderr)


@pytest.mark.parametrize("prog", ["evaluate.py", "train.py"])
def test_fuzzed_flags_in_process_end_in_status_0_or_one_error_line(prog, cli_in_process,
                                                                    scratch):
    paths = _paths(*scratch)
    outcomes = []

    @settings(max_examples=120, **_SETTINGS)
    @given(argv=_argv(prog, paths))
    def fuzz(argv):
        started = time.perf_counter()
        status, stderr, reached = cli_in_process(argv)
        _check(argv, status, stderr, time.perf_counter() - started)
        outcomes.append("reached" if reached else status)

    fuzz()
    # Both kinds occur: the fuzzing reaches valid flags, not only errors.
    assert outcomes.count("reached") >= 3 and outcomes.count(2) >= 30, outcomes


# Found by the fuzzing (each a traceback, exit 1, a hang or a misleading line before).
# (argv after prog, with {tmp} for the scratch directory; what the one line must say).
FOUND = [
    (["--flagfile=/nonexistent"], "error: --flagfile '/nonexistent': No such file"),  # exit 1
    (["--flagfile", "{tmp}/dir"], "error: --flagfile '{tmp}/dir' is a directory"),  # exit 1
    (["--flagfile={tmp}/fifo"], "is not a regular file"),  # waited for a writer forever
    (["--config", "{tmp}/none.py"], "error: --config '{tmp}/none.py': No such file"),
    (["--config", "configs/tiny.py:x"],  # a traceback, flattened into the line
     "the config file raised TypeError: get_config() takes 0 positional arguments"),
    (["--config.train.log-every=3"], "error: bad config override '--config.train.log-every'"),
    (["--stderrthreshold=loud"], "error: --stderrthreshold must be one of"),  # "cannot load"
    (["--workdir", " "], "train.py: error: --workdir is empty"),  # made a directory " "
]
# Read to no end (memory without bound): in the real process alone, where it is limited.
ENDLESS = [
    (["--flagfile=/dev/zero"], "'/dev/zero' is not a regular file"),
    (["--flagfile={tmp}/nested"], "--flagfile '/dev/zero' is not a regular file"),
    (["--config", "/dev/full"], "--config '/dev/full' is not a regular file"),
]


FOUND_RUNS = [(prog, args, message) for prog in ("evaluate.py", "train.py")
              for args, message in FOUND if prog == "train.py" or args[0] != "--workdir"]


@pytest.mark.parametrize(("prog", "args", "message"), FOUND_RUNS,
                         ids=[f"{p} {' '.join(a)}" for p, a, _ in FOUND_RUNS])
def test_bad_flag_files_and_overrides_are_one_clear_line(prog, args, message, cli_in_process,
                                                         scratch):
    tmp = scratch[0]
    argv = [prog, *(["--config", "configs/tiny.py"] if "--config" not in args[0] else []),
            *(a.format(tmp=tmp) for a in args)]
    status, stderr, _ = cli_in_process(argv)
    _check(argv, status, stderr, 0)
    assert status == 2 and message.format(tmp=tmp) in stderr, stderr


def test_help_exits_0(cli_in_process):
    """absl's --help and --helpfull exit 1: help asked for is no error."""
    for flag in ("--help", "--helpfull", "--helpshort"):
        assert cli_in_process(["train.py", flag])[0] == 0


def test_a_run_in_process_leaves_the_callers_sigterm_handler(cli_in_process):
    """cli.main turns SIGTERM into `cli.Terminated` while it runs, then gives the caller (a
    test, a notebook) its own handler back: left installed, pytest's own SIGTERM at the end
    of a run was raised inside whatever ran then."""
    before = signal.getsignal(signal.SIGTERM)
    for argv in (["evaluate.py", "--config", "configs/tiny.py"],  # reaches the work
                 ["evaluate.py", "--config", "configs/tiny.py", "--theta", "2"]):  # fails
        cli_in_process(argv)
        assert signal.getsignal(signal.SIGTERM) is before, argv


# ---------------------------------------------------------------------------------------------
# The real process: one JAX import per CLI, a fork per example (os._exit and all:
# conftest's `run_cli_batch`).



@pytest.mark.parametrize("prog", ["evaluate.py", "train.py"])
def test_fuzzed_flags_in_a_real_process_end_in_status_0_or_one_error_line(prog, scratch,
                                                                          run_cli_batch):
    paths = _paths(*scratch)
    batch = []

    @settings(max_examples=1, **_SETTINGS)
    @given(st.lists(_argv(prog, paths), min_size=16, max_size=16))
    def draw(argvs):
        batch.extend(argvs)

    draw()
    tmp = scratch[0]
    (tmp / "nested").write_text("--flagfile=/dev/zero\n")
    found = []  # each without a --config (the default one is loaded at import), and with one
    for args, message in FOUND + ENDLESS:
        if args[0] == "--workdir" and prog != "train.py":
            continue
        argv = [prog, *(a.format(tmp=tmp) for a in args)]
        found += [(argv, message.format(tmp=tmp))] + [
            ([prog, "--config", "configs/tiny.py", *argv[1:]], message.format(tmp=tmp))
            for _ in range("--config" not in args[0])]
    batch += [argv for argv, _ in found]
    batch.append([prog, "--config", "configs/tiny.py", "--data", "synthetic"] if
                 prog == "evaluate.py" else [prog, "--config", "configs/tiny.py"])  # valid
    results = run_cli_batch(prog, batch, tmp / "cache", TIME_BOUND_S * 2)
    for r in results:
        # The child's stdout and stderr are one pipe: a table or REACHED on stdout, the
        # error line on stderr; JAX's own warnings (a missing GPU) are lines too.
        lines = [line for line in r["output"].splitlines() if line.strip()
                 and not line.startswith(("WARNING:", "W0", "I0"))]
        _check(r["argv"], r["status"], "\n".join(lines),
               r["s"] / 2)
        assert "Traceback" not in r["output"], r
    for (argv, message), r in zip(found, results[-len(found) - 1:-1], strict=True):
        assert r["argv"] == argv and r["status"] == 2 and message in r["output"], r
    assert results[-1]["status"] == 0 and "REACHED" in results[-1]["output"], results[-1]
    assert sum(r["status"] == 2 for r in results) >= 4, results

