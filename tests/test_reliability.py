"""Issue 8: bad input gives one clear error, killed jobs lose nothing, runs reproduce.

The bad-input tables call the library (a ValueError-family error whose message names
the problem and the fix) and the CLIs (exit status 2, one line, no traceback). Video
files have their own cases in test_video.py; here they are checked through evaluate.py.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import cwfcn
from configs import tiny
from cwfcn import (
    checkpoint,
    cli,
    clockwork,
    config_check,
    distributed,
    evaluate_lib,
    evaluation,
    metrics,
    model,
    results,
    train_lib,
)
from cwfcn import weights as weights_lib
from cwfcn.data import datasets, files, protocol, sources, voc

ROOT = Path(__file__).resolve().parents[1]
C = 5  # the tiny config's classes


def _narrow(num_classes: int = C, widths=model.NARROW_WIDTHS, seed: int = 0) -> model.FCN8s:
    return model.FCN8s(num_classes, widths=widths, zero_init_scores=False, rngs=nnx.Rngs(seed))


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def _devkit(root: Path, label_hw=(8, 10)) -> Path:
    """A VOC2011 layout with photo "a" (8x10) and its label of size `label_hw`; split "val"."""
    d = root / "VOC2011"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (d / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(d / "JPEGImages/a.jpg")
    label = Image.fromarray(np.zeros(label_hw, np.uint8), mode="P")
    label.putpalette([0] * 768)
    label.save(d / "SegmentationClass/a.png")
    (d / "ImageSets/Segmentation/val.txt").write_text("a\nghost\n")
    return root


def _saved(tmp_path: Path, net=None) -> Path:
    net = net or _narrow()
    params = nnx.state(net)
    checkpoint.save(tmp_path / "ck", 2, params, optax.sgd(0.1, momentum=0.9).init(params))
    return tmp_path / "ck"


def _damage(step_dir: Path, how: str) -> None:
    """Truncates, or flips 16 bytes in the middle of, the largest file of a step directory."""
    path = max((p for p in step_dir.rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if how == "truncate":
            f.truncate(size // 2)
        else:
            f.seek(size // 2)
            f.write(bytes(255 - b for b in f.read(16)))


def _frames(shape=(2, 16, 16, 3), dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 50, shape).astype(dtype)


def _with(value, index, shape=(2, 16, 16, 3)) -> np.ndarray:
    x = _frames(shape)
    x[index] = value
    return x


def _bad_labels_source():
    labels = np.full((1, 8, 8), 7, np.uint8)  # class 7 of a 5-class set
    videos = [protocol.labelled_video("bad", np.zeros((1, 8, 8, 3), np.uint8), labels,
                                      slice(None))]
    return sources.Source("bad", C, datasets.get("voc").mean_bgr, videos, protocol.form_whole)


def _config(**values):
    config = tiny.get_config()
    for key, value in values.items():
        node, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        (config if not node else config[node])[leaf] = value
    return config


# (id, call(tmp_path, net), error type, message regex): one row per bad input of the issue.
LIBRARY_CASES = [
    # arrays
    ("rank", lambda t, n: clockwork.run(n, _frames()[0], "oracle"), ValueError,
     r"frames must be \[T, H, W, 3\].*got shape \(16, 16, 3\)"),
    ("dtype", lambda t, n: clockwork.run(n, _frames(dtype=np.uint8), "oracle"), ValueError,
     r"floating point \(see model.preprocess\), got uint8"),
    ("nan frame", lambda t, n: clockwork.run(n, _with(np.nan, (1, 3, 4, 0)), "oracle"),
     ValueError, r"NaN or inf values in the frames: pass finite ones"),
    ("inf frame streaming", lambda t, n: (lambda cw: cw.step(cw.init((16, 16, 3)),
                                                             _with(np.inf, (0, 0, 0, 2))[0]))(
        clockwork.Clockwork(n, "alternating")), ValueError, r"NaN or inf values in the frame"),
    ("frames too small", lambda t, n: clockwork.run(n, np.zeros((2, 0, 16, 3), np.float32),
                                                    "oracle"),
     ValueError, r"empty frames, shape \(2, 0, 16, 3\).*at least 1x1"),
    ("no frames", lambda t, n: clockwork.run(n, np.zeros((0, 8, 8, 3), np.float32), "oracle"),
     ValueError, r"empty frames.*at least one frame"),
    ("label out of range", lambda t, n: metrics.confusion(np.array([0, 7]), np.array([0, 0]), C),
     ValueError, r"labels must lie in \[0, 5\) or be 255.*\[7\].*map void pixels to 255"),
    ("negative label", lambda t, n: metrics.boundary_confusion(
        np.full((4, 4), -1), np.zeros((4, 4), int), C), ValueError, r"labels must lie in.*-1"),
    ("label out of range in a data set", lambda t, n: list(_bad_labels_source()), ValueError,
     r"labels must lie in \[0, 5\)"),
    # schedules
    ("unknown schedule", lambda t, n: clockwork.parse_schedule("sometimes"), ValueError,
     r"unknown schedule 'sometimes'; use one of: oracle"),
    ("period zero", lambda t, n: clockwork.parse_schedule("periods:1,0,2"), ValueError,
     r"periods must be positive integers, e\.g\. periods:1,2,4"),
    ("period not an int", lambda t, n: clockwork.parse_schedule("periods:1,2.5,2"), ValueError,
     r"periods must be positive integers"),
    ("theta above 1", lambda t, n: clockwork.parse_schedule("adaptive:1.5"), ValueError,
     r"theta must be a number in \[0, 1\], e\.g\. adaptive:0\.25"),
    ("theta nan", lambda t, n: clockwork.parse_schedule("adaptive:nan"), ValueError,
     r"theta must be a number in \[0, 1\]"),
    ("schedule of another net", lambda t, n: clockwork.run(n, _frames(), "periods:1,2"),
     ValueError, r"clocks 2 stages but the net has 3"),
    # data
    ("missing data directory", lambda t, n: voc.split_ids(t / "nowhere", "val"),
     files.MissingFileError, r"nowhere/VOC2011/JPEGImages not found; .*download"),
    ("missing split file", lambda t, n: voc.split_ids(_devkit(t / "dk"), "train"),
     files.MissingFileError, r"ImageSets/Segmentation/train\.txt not found"),
    ("label size differs from photo", lambda t, n: voc.read_example(
        _devkit(t / "dk", label_hw=(9, 10)), "a"), ValueError,
     r"a\.png is 9x10 but its image .*a\.jpg is 8x10.*re-extract the data set"),
    ("split id with no file", lambda t, n: voc.read_example(_devkit(t / "dk"), "ghost"),
     files.MissingFileError, r"ghost\.jpg not found"),
    ("no data dir given", lambda t, n: sources.open_source("nyud"), ValueError,
     r"data 'nyud' needs --data-dir"),
    # weights and checkpoints
    ("missing weight file", lambda t, n: weights_lib.load(n, t / "none.caffemodel"),
     files.MissingFileError, r"no such weight file \(check the path\).*none\.caffemodel"),
    ("corrupt weight file", lambda t, n: (t / "w.caffemodel").write_bytes(b"\x0a\xff\x01junk")
     and weights_lib.load(n, t / "w.caffemodel"), ValueError, r"w\.caffemodel.*(corrupt|not)"),
    ("missing checkpoint", lambda t, n: checkpoint.load_params(t / "empty", n),
     checkpoint.CheckpointError, r"no checkpoint in .*empty.*train first"),
    ("truncated checkpoint", lambda t, n: (_damage(_saved(t) / "2", "truncate"),
                                           checkpoint.load_params(t / "ck", n)),
     checkpoint.CheckpointError, r"step 2 .*(damaged|does not fit).*delete its directory"),
    ("corrupt checkpoint", lambda t, n: (_damage(_saved(t) / "2", "flip"),
                                         checkpoint.load_params(t / "ck", n)),
     checkpoint.CheckpointError, r"step 2 .*damaged.*delete its directory"),
    ("checkpoint of other classes", lambda t, n: checkpoint.load_params(_saved(t, _narrow(7)), n),
     checkpoint.CheckpointError, r"does not fit this net: .*score_fr.*another architecture"),
    ("checkpoint of another architecture", lambda t, n: checkpoint.load_params(
        _saved(t, _narrow(widths=(4, 8, 8, 16, 16, 48))), n), checkpoint.CheckpointError,
     r"does not fit this net: .*fc6.*another architecture"),
    # issue 17.8: a train.py --workdir of configs/tiny.py given to another config
    ("evaluate --checkpoint of another class count", lambda t, n: evaluate_lib.load_net(
        _config(**{"model.num_classes": 7}), str(_saved(t)), (0.0, 0.0, 0.0)),
     checkpoint.CheckpointError, r"does not fit this net: \['score_fr'\]\['bias'\] is \(5,\) "
     r"there but \(7,\) here"),
    ("resume a workdir with another config", lambda t, n: train_lib.train(
        _config(**{"model.num_classes": 7}), str(_saved(t))), checkpoint.CheckpointError,
     r"does not fit this net: .*score_fr"),
    ("optimizer state of another optimizer", lambda t, n: checkpoint.restore(
        _saved(t), nnx.state(n), optax.adam(1e-3).init(nnx.state(n))),
     checkpoint.CheckpointError, r"optimizer state does not fit.*new --workdir"),
    # configs (unknown keys: the CLI table; ml_collections locks the configs)
    ("config: zero log interval", lambda t, n: config_check.check(
        _config(**{"train.log_every": 0})), config_check.ConfigError,
     r"config\.train\.log_every = 0 is invalid: it must be an int >= 1.*--config\.train"),
    ("config: nan learning rate", lambda t, n: train_lib.train(
        _config(**{"optim.learning_rate": float("nan")})), config_check.ConfigError,
     r"config\.optim\.learning_rate = nan is invalid: it must be a finite number > 0"),
    ("config: unknown mean", lambda t, n: config_check.check(_config(**{"data.mean": "imagenet"})),
     config_check.ConfigError, r"config\.data\.mean = 'imagenet'.*one of \['cityscapes'"),
    ("config: bad schedule", lambda t, n: config_check.check(_config(**{"clock.schedule": "x"})),
     config_check.ConfigError, r"config\.clock\.schedule = 'x' is invalid.*oracle, skip"),
    ("config: 256 classes", lambda t, n: config_check.check(_config(**{"model.num_classes": 256})),
     config_check.ConfigError, r"num_classes = 256 .*\[1, 255\]"),
    ("config: unknown widths", lambda t, n: train_lib.build_net(
        _config(**{"model.widths": "wide"}), nnx.Rngs(0)), ValueError,
     r"config\.model\.widths must be one of \['narrow', 'vgg16'\]"),
    # issue 18: values that crashed (OverflowError, MemoryError) or said nothing useful
    ("config: seed of 64 bits", lambda t, n: config_check.check(_config(seed=2**63)),
     config_check.ConfigError, r"config\.seed = 9223372036854775808 is invalid.*2\*\*63"),
    ("config: huge boundary radius", lambda t, n: config_check.check(
        _config(**{"clock.boundary_radius": 100_000})), config_check.ConfigError,
     r"config\.clock\.boundary_radius = 100000 is invalid.*\[1, 512\]"),
    # issue 17.8: a batch or image this large hung train.py, its input workers out of memory
    ("config: huge batch", lambda t, n: config_check.check(_config(**{"train.batch_size": 10**8})),
     config_check.ConfigError, r"config\.train\.batch_size = 100000000 is invalid.*\[1, 65536\]"),
    ("config: huge images", lambda t, n: config_check.check(_config(**{"data.size": 10**8})),
     config_check.ConfigError, r"config\.data\.size = 100000000 is invalid.*\[1, 16384\]"),
    ("config: 2 frames a video", lambda t, n: config_check.check(
        _config(**{"data.num_frames": 2})), config_check.ConfigError,
     r"config\.data\.num_frames = 2 is invalid.*>= 3.*frames 0-1.*never scored"),
    ("frames not an array", lambda t, n: clockwork.run(n, 5, "oracle"), ValueError,
     r"frames must be an array \[T, H, W, 3\].*got int"),
    ("chunk below 1", lambda t, n: clockwork.Clockwork(n, "oracle").chunks(_frames(), -1),
     ValueError, r"chunk must be an int >= 1 \(frames per scan\), got -1"),
    ("hand-made schedule: period 0", lambda t, n: clockwork.Schedule("x", (1, 0, 2), (0, 0, 0)),
     ValueError, r"schedule 'x': periods must be positive integers, got \(1, 0, 2\)"),
    ("hand-made schedule: lag 2", lambda t, n: clockwork.Schedule("x", (1, 1), (0, 2)),
     ValueError, r"schedule 'x': lags must be 0 or 1 .*got \(0, 2\)"),
    ("hand-made schedule: theta 1.5", lambda t, n: clockwork.Schedule("x", (1,), (0,), 1.5),
     ValueError, r"schedule 'x': theta must be None or a number in \[0, 1\], got 1\.5"),
    ("hand-made schedule: signal", lambda t, n: clockwork.Schedule("x", (1,), (0,), 0.2,
                                                                   signal="colour"),
     ValueError, r"schedule 'x': signal must be one of \('scores', 'pixels'\), got 'colour'"),
    ("coordinator without a port", lambda t, n: distributed.initialize("nohost:abc", 2, 0),
     ValueError, r"bad --coordinator 'nohost:abc': .*HOST:PORT.*port in \[1, 65535\]"),
    ("coordinator that does not resolve", lambda t, n: distributed.initialize(
        "nohost.invalid:1234", 2, 0), ValueError,
     r"bad --coordinator 'nohost.invalid:1234': cannot resolve the host 'nohost.invalid'"),
    ("process id without a coordinator", lambda t, n: distributed.initialize(None, None, 1, {}),
     ValueError, r"--process_id and --num_processes are for a multi-host run: give --coordinator"),
]


@pytest.mark.parametrize(("call", "error", "message"), [c[1:] for c in LIBRARY_CASES],
                         ids=[c[0] for c in LIBRARY_CASES])
def test_bad_input_is_one_clear_library_error(tmp_path, net, call, error, message):
    assert issubclass(error, ValueError)
    with pytest.raises(error, match=message):
        call(tmp_path, net)


def test_missing_files_are_both_file_not_found_and_value_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        voc.split_ids(tmp_path, "val")
    with pytest.raises(ValueError):
        voc.split_ids(tmp_path, "val")


def test_a_damaged_step_can_be_deleted_to_resume_from_the_one_before(tmp_path):
    params = nnx.state(_narrow())
    checkpoint.save(tmp_path, 2, params)
    checkpoint.save(tmp_path, 4, jax.tree.map(lambda x: x + 1, params))
    shutil.copytree(tmp_path / "2", tmp_path / "6")
    _damage(tmp_path / "6", "flip")  # e.g. a bad disk sector
    with pytest.raises(checkpoint.CheckpointError, match=r"step 6 .*damaged"):
        checkpoint.restore(tmp_path, params)
    shutil.rmtree(tmp_path / "6")  # what the message says to do
    step, restored, _ = checkpoint.restore(tmp_path, params)
    assert step == 4 and _leaves_equal(restored, jax.tree.map(lambda x: x + 1, params))


def test_an_interrupted_save_never_restores(tmp_path):
    """A save killed mid-write leaves only orbax's temporary directory: never a step."""
    params = nnx.state(_narrow())
    checkpoint.save(tmp_path, 2, params)
    partial = tmp_path / "4.orbax-checkpoint-tmp-1700000000000000"
    shutil.copytree(tmp_path / "2", partial)
    assert checkpoint.latest_step(tmp_path) == 2
    step, restored, _ = checkpoint.restore(tmp_path, params)
    assert step == 2 and _leaves_equal(restored, params)
    checkpoint.save(tmp_path, 6, params)  # the next save removes the leftover
    assert not partial.exists() and checkpoint.latest_step(tmp_path) == 6


# ---------------------------------------------------------------------------------------------
# The CLIs: exit status 2, one line, no traceback. All cases start at once (2 at a time).


_EV = ["evaluate.py", "--config", "configs/tiny.py"]
_TR = ["train.py", "--config", "configs/tiny.py"]
# name -> (argv, with {tmp} for a scratch directory and {ro} for an unwritable one; message).
CLI_CASES = {
    "unknown config key": ([*_EV, "--config.model.num_clases=3"],
                           "unknown config key 'num_clases' (in --config.model.num_clases): "
                           "the config has no such field; did you mean 'num_classes'?"),
    "invalid config value": ([*_TR, "--config.train.checkpoint_every=0"],
                             "config.train.checkpoint_every = 0 is invalid"),
    "missing data directory": ([*_TR, "--config.data.name=voc", "--config.data.root={tmp}/none"],
                               "none/VOC2011/JPEGImages not found"),
    "empty video": ([*_EV, "--data", "video:{tmp}/empty.mp4"], "empty (0 bytes)"),
    "corrupt weights": ([*_EV, "--data", "synthetic", "--checkpoint", "{tmp}/bad.caffemodel"],
                        "bad.caffemodel"),
    "read-only workdir": ([*_TR, "--workdir", "{ro}/run"], "cannot write to the workdir"),
    "read-only output": ([*_EV, "--data", "synthetic", "--output", "{ro}/r.json"],
                         "cannot write the results file"),
    "checkpoint without its digest": ([*_EV, "--data", "synthetic", "--checkpoint",
                                       "{tmp}/no-digest"], "has no digest of its params"),
    "checkpoint holding NaN": ([*_EV, "--data", "synthetic", "--checkpoint", "{tmp}/nan"],
                               "holds NaN or inf values in params.fc6.kernel"),
}


def test_every_error_cwfcn_raises_is_one_the_clis_report():
    """Each exception class of cwfcn's own reaches `cli.fail` (one line, exit 2): issue 18's
    SampleFetchError, a RuntimeError, left a traceback and exit 1 on a first run offline."""
    handled = {train_lib.Interrupted}  # a stop asked for by a signal: train.py ends on it
    for info in pkgutil.walk_packages(cwfcn.__path__, "cwfcn."):
        if info.name.endswith(".__main__"):  # a program (python -m), not a library module
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, Exception) and cls.__module__ == info.name
                    and cls not in handled):
                assert issubclass(cls, cli.ERRORS), f"{info.name}.{cls.__name__}"


def test_a_failed_sample_fetch_is_one_line_and_exit_2():
    code = ("from cwfcn import cli; from cwfcn.data import samples\n"
            "def offline(): raise samples.SampleFetchError('could not fetch sample x: offline')\n"
            "cli.run_or_fail('evaluate.py', offline)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "evaluate.py: error: could not fetch sample x: offline\n"


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, run_cli_batch) -> dict[str, tuple[int, str]]:
    """Runs every CLI case to its end (`run_cli_batch`): name -> (exit status, output)."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "notes.mp4").write_text("not a video\n")
    (tmp / "bad.caffemodel").write_bytes(b"\x0a\xff\x01junk")
    checkpoint.save(tmp / "no-digest", 2, nnx.state(_narrow()))
    shutil.rmtree(tmp / "no-digest" / "2" / "digest")
    params = nnx.state(_narrow())
    params["fc6"]["kernel"].set_value(params["fc6"]["kernel"][...] * np.nan)
    checkpoint.save(tmp / "nan", 2, params)
    # Unwritable: a read-only directory for a user; /sys (EPERM) for root, who writes anywhere.
    ro = Path("/sys/cwfcn-test") if os.geteuid() == 0 else tmp / "ro"
    if os.geteuid() != 0:
        ro.mkdir(mode=0o555)
    done = {}
    for prog in ("evaluate.py", "train.py"):
        names = [name for name, (argv, _) in CLI_CASES.items() if argv[0] == prog]
        argvs = [[a.format(tmp=tmp, ro=ro) for a in CLI_CASES[name][0]] for name in names]
        runs = run_cli_batch(prog, argvs, tmp / "cache", bound_s=300, stop=False)
        done.update({name: (r["status"], r["output"]) for name, r in zip(names, runs,
                                                                          strict=True)})
    return done


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_input_is_one_clear_cli_error(cli_results, case):
    returncode, stderr = cli_results[case]
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and CLI_CASES[case][1] in lines[0], stderr


# ---------------------------------------------------------------------------------------------
# Faults: SIGKILL during and after a save, a full disk.

STEPS = 6  # saves at steps 2, 4, 6 (configs/tiny.py saves every 2 steps)


def _train_cli(workdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", "--config", "configs/tiny.py",
                             f"--config.train.steps={STEPS}", "--workdir", str(workdir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, delay: float = 0.0) -> bool:
    """SIGKILLs `proc` `delay` s after `ready()` holds; False if it ended before that."""
    while not ready():
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return proc.returncode == -signal.SIGKILL


def _saving(workdir: Path) -> bool:
    return workdir.is_dir() and any("tmp" in p.name for p in workdir.iterdir())


def _committed(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in workdir.iterdir() if p.name.isdigit()) if (
        workdir.is_dir()) else []


def _final_state(workdir: Path):
    config = _config(**{"train.steps": STEPS})
    params = nnx.state(train_lib.build_net(config, nnx.Rngs(0)))
    opt_state = train_lib.make_optimizer(config).init(params)
    return checkpoint.restore(workdir, params, opt_state)


@pytest.mark.slow
def test_sigkill_during_and_after_saves_then_resume_equals_a_straight_run(tmp_path):
    straight = tmp_path / "straight"
    train_lib.train(_config(**{"train.steps": STEPS}), str(straight))
    killed = tmp_path / "killed"
    # 1: killed while orbax writes the first checkpoint: no step may come out of it.
    assert _kill_when(_train_cli(killed), lambda: _saving(killed)), "never caught a save"
    assert _committed(killed) in ([], [2])  # [2]: the rename won the race with the kill
    # 2: killed at a random point after a complete save.
    delay = random.Random(8).uniform(0.0, 1.0)
    assert _kill_when(_train_cli(killed), lambda: bool(_committed(killed)), delay)
    # 3: resumed to the end.
    proc = _train_cli(killed)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert b"resuming from step" in err
    assert not _saving(killed)  # the leftovers of killed saves are gone
    step, params, opt_state = _final_state(killed)
    step_s, params_s, opt_state_s = _final_state(straight)
    assert step == step_s == STEPS
    assert _leaves_equal(params, params_s) and _leaves_equal(opt_state, opt_state_s)  # bitwise


# ---------------------------------------------------------------------------------------------
# Signals and a second run on one workdir (issue 18.7, 18.13): real processes.

LONG = 10**6  # steps: a run still training when the test signals it


@pytest.fixture
def train_long():
    """Starts train.py on a workdir with `LONG` steps, its stderr to a file (a pipe would
    fill); the runs still going when the test ends are killed."""
    started = []

    def start(workdir: Path, log: Path) -> subprocess.Popen:
        with log.open("w") as err:
            started.append(subprocess.Popen(
                [sys.executable, *_TR, f"--config.train.steps={LONG}", "--workdir",
                 str(workdir)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """Waits until `ready()` holds; fails if `proc` ends first or it takes over `timeout` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"train.py ended early with status {proc.returncode}"
        assert time.monotonic() < deadline, "train.py never got there"
        time.sleep(0.05)


def _logged_step(workdir: Path, after: int = 0) -> bool:
    """Whether `<workdir>/metrics.jsonl` has a row past step `after`."""
    log = workdir / train_lib.METRICS_FILE
    steps = re.findall(r'"step": (\d+)', log.read_text()) if log.is_file() else []
    return any(int(s) > after for s in steps)


def _stop(proc: subprocess.Popen, signum: int, log: Path) -> tuple[int, int]:
    """Sends `signum`, checks that train.py ends promptly and quietly with 128 + signum and
    the one line; returns (step, checkpoint) from that line."""
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == 128 + signum
    err = log.read_text()
    assert "Traceback" not in err and "terminate called" not in err, err
    found = re.findall(r"^train\.py: interrupted at step (\d+); the last checkpoint is step "
                       r"(\d+) \(rerun the same command to resume from it\)$", err, re.M)
    assert len(found) == 1, err
    return int(found[0][0]), int(found[0][1])


@pytest.mark.slow
def test_sigint_and_sigterm_stop_training_quietly_and_it_resumes(tmp_path, train_long):
    workdir, log = tmp_path / "run", tmp_path / "stderr.txt"
    proc = train_long(workdir, log)
    _wait_for(proc, lambda: _logged_step(workdir))
    step, saved = _stop(proc, signal.SIGINT, log)
    assert 0 < saved <= step and checkpoint.latest_step(workdir) == saved
    proc = train_long(workdir, log)  # the same command again
    _wait_for(proc, lambda: _logged_step(workdir, after=step))
    assert f"resuming from step {saved} in {workdir}" in log.read_text()
    later, saved_later = _stop(proc, signal.SIGTERM, log)
    assert saved < saved_later <= later and checkpoint.latest_step(workdir) == saved_later


@pytest.mark.slow
def test_a_second_run_on_a_workdir_fails_at_once_naming_the_first(tmp_path, train_long):
    workdir, log = tmp_path / "run", tmp_path / "stderr.txt"
    first = train_long(workdir, log)
    lock = workdir / checkpoint.LOCK_FILE
    _wait_for(first, lambda: lock.is_file() and f"pid {first.pid} " in lock.read_text())
    second = subprocess.run([sys.executable, *_TR, f"--config.train.steps={LONG}",
                             "--workdir", str(workdir)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    holder = f"pid {first.pid} on host {socket.gethostname()}"
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    (line,) = [line for line in second.stderr.splitlines() if line.strip()]
    assert line.startswith("train.py: error: the workdir") and holder in line, line
    assert first.poll() is None  # the first run trains on, undisturbed
    _wait_for(first, lambda: _logged_step(workdir))
    _stop(first, signal.SIGTERM, log)
    assert "error" not in log.read_text()


# train.py on a "disk" where files may grow to 16 KB: a write past it fails with EFBIG
# (SIGXFSZ ignored, so the error comes instead of the kill). Set in the child itself: a
# preexec_fn would fork this multithreaded (JAX) process.
_FULL_DISK = ("import resource, runpy, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))\n"
              "sys.argv = ['train.py', *sys.argv[1:]]\n"
              "runpy.run_path('train.py', run_name='__main__')")


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_and_leaves_no_checkpoint(tmp_path):
    workdir = tmp_path / "run"  # the params need ~100 KB
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, "--config", "configs/tiny.py",
                           "--workdir", str(workdir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    err = proc.stderr
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert "cannot write checkpoint step 2" in err and "is the disk full" in err
    assert checkpoint.latest_step(workdir) is None  # nothing that would restore


def test_a_failed_results_write_leaves_no_results_file(tmp_path, monkeypatch):
    target = tmp_path / "r.json"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        results.write_json(target, {"results": [1, 2, 3]})
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file
    monkeypatch.undo()
    results.write_json(target, {"results": [1, 2, 3]})
    assert target.read_text().startswith("{")


def test_results_never_replace_what_is_not_a_regular_file(tmp_path):
    """Issue 18: --output /dev/null exited 0 and made the device a JSON file."""
    fifo, link = tmp_path / "fifo", tmp_path / "null"
    os.mkfifo(fifo)
    link.symlink_to(os.devnull)  # a device, as a user may reach one
    for target in (fifo, link, tmp_path):  # tmp_path: a directory
        for write in (results.check_writable, lambda t: results.write_json(t, {"results": []})):
            with pytest.raises(OSError, match="not a regular file"):
                write(target)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null"]  # no temporary file


def test_results_files_have_the_usual_permissions(tmp_path):
    """0666 under the umask, as any file the user creates (not mkstemp's 0600)."""
    before = os.umask(0o022)
    try:
        results.write_json(tmp_path / "r.json", {"results": []})
    finally:
        os.umask(before)
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o644


# ---------------------------------------------------------------------------------------------
# Reproducibility


def test_same_config_and_seed_give_bitwise_identical_params():
    config = _config(**{"train.steps": 3})
    first, second = train_lib.train(config)[0], train_lib.train(config)[0]
    assert _leaves_equal(nnx.state(first), nnx.state(second))
    untrained = train_lib.init_net(config, jax.random.split(jax.random.key(config.seed))[1])
    assert not _leaves_equal(nnx.state(first), nnx.state(untrained))  # it did train


def test_evaluation_is_deterministic(net):
    source = sources.open_source("synthetic", config=tiny.get_config())
    timing = evaluation.ROW_TIMING
    rows = [{k: v for k, v in evaluation.evaluate_schedule(
        net, source, "adaptive:0.2", mean_bgr=source.mean_bgr).items() if k not in timing}
        for _ in range(2)]
    assert rows[0] == rows[1] and rows[0]["frames"] == 12


# ---------------------------------------------------------------------------------------------
# Fuzz: random shapes and values either work or raise the clear error.


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.data())
def test_fuzz_metrics(num_classes, data):
    shape = data.draw(st.tuples(st.integers(0, 3), st.integers(1, 9), st.integers(1, 9)))
    values = st.one_of(st.integers(-3, num_classes + 2), st.just(255))
    labels = np.array(data.draw(st.lists(values, min_size=int(np.prod(shape)),
                                         max_size=int(np.prod(shape))))).reshape(shape)
    preds = np.array(data.draw(st.lists(st.integers(0, num_classes - 1), min_size=labels.size,
                                        max_size=labels.size))).reshape(shape)
    stray = ((labels < 0) | (labels >= num_classes)) & (labels != 255)
    if stray.any():
        with pytest.raises(ValueError, match=r"labels must lie in \[0, \d\) or be 255"):
            metrics.confusion(labels, preds, num_classes)
        return
    hist = metrics.confusion(labels, preds, num_classes)
    want = np.zeros((num_classes, num_classes), np.int64)
    for t, p in zip(labels.ravel(), preds.ravel(), strict=True):
        if t != 255:
            want[t, p] += 1
    np.testing.assert_array_equal(hist, want)
    for value in metrics.scores(hist).values():
        assert np.isnan(value) or 0.0 <= value <= 1.0
    band = metrics.boundary_confusion(labels, preds, num_classes, radius=1) if labels.ndim else 0
    assert np.all(band <= hist)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from([(1, 1, 1, 3), (2, 7, 5, 3), (1, 24, 24, 3), (2, 24, 24), (1, 0, 4, 3)]),
    dtype=st.sampled_from([np.float32, np.float16, np.uint8, np.int32]),
    poison=st.sampled_from([None, np.nan, np.inf, -np.inf]),
    schedule=st.sampled_from(["oracle", "skip", "adaptive:0.3", "pipeline2"]),
)
def test_fuzz_engine(net, shape, dtype, poison, schedule):
    frames = np.random.default_rng(0).normal(0, 60, shape).astype(dtype)
    if poison is not None and frames.size and np.issubdtype(dtype, np.floating):
        frames.flat[frames.size // 2] = poison
    clear = (r"must be \[T, H, W, 3\]|must be floating point|empty frames|NaN or inf values")
    try:
        out = clockwork.run(net, frames, schedule)
    except ValueError as e:
        assert re.search(clear, str(e)), e
        bad = (len(shape) != 4 or not np.issubdtype(dtype, np.floating) or 0 in shape
               or not np.isfinite(frames).all())
        assert bad, f"refused good input: {e}"
        return
    t, h, w, _ = shape
    assert out.scores.shape == (t, h, w, C) and out.fired.shape == (t, 3)
    assert np.isfinite(np.asarray(out.scores)).all()


@pytest.mark.slow
def test_two_evaluations_on_one_empty_cache_train_the_model_once(tmp_path):
    """Started together on an empty cache: the second waits for the first's training (saying
    so) and loads what it saved, instead of both writing one checkpoint directory."""
    steps = 80  # seconds of training: the second starts while the first trains
    config = tiny.get_config()
    config.train.steps, config.data.num_videos = steps, 1  # as the flags below say
    env = dict(os.environ, CWFCN_CACHE=str(tmp_path / "cache"))
    models = evaluate_lib.model_cache_dir(config, env)
    argv = [sys.executable, "evaluate.py", "--config", "configs/tiny.py", "--data", "synthetic",
            f"--config.train.steps={steps}", "--repeats", "1", "--schedule", "oracle",
            "--config.data.num_videos=1"]
    logs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    with logs[0].open("w") as err:
        first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        lock = models / checkpoint.LOCK_FILE  # training: the workdir held
        _wait_for(first, lambda: lock.is_file() and f"pid {first.pid} " in lock.read_text())
        with logs[1].open("w") as err:
            second = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                    env=env, timeout=600)
        assert first.wait(timeout=600) == 0, logs[0].read_text()
    finally:
        if first.poll() is None:
            first.kill()
    text = logs[1].read_text()
    assert second.returncode == 0 and "Traceback" not in text, text
    assert f"pid {first.pid} on host {socket.gethostname()} is training this model" in text
    assert "trained earlier" in text  # it loaded the first run's model
    logged = re.findall(r'"step": (\d+)', (models / train_lib.METRICS_FILE).read_text())
    assert len(logged) == len(set(logged))  # one run trained it: no step logged twice


def _journaled(path: Path) -> int:
    """The clips an evaluation's journal holds as finished (its lines after the key)."""
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


@pytest.mark.slow
def test_an_evaluation_stopped_by_any_signal_resumes_to_the_rows_of_one_never_stopped(tmp_path):
    """Issue 17 (8): evaluate.py stopped by SIGINT, then by SIGTERM (it was killed at once,
    without a word), then by SIGKILL, each after one more video: the first two end with one
    line and 130 or 143, every stop keeps the videos finished, each rerun resumes, and the
    last one's rows are those of a run never stopped (timings aside)."""
    ck = tmp_path / "ck"
    checkpoint.save(ck, 2, nnx.state(train_lib.build_net(tiny.get_config(), nnx.Rngs(0))))
    argv = [sys.executable, "evaluate.py", "--config", "configs/tiny.py", "--data", "synthetic",
            "--config.data.num_videos=6", "--config.data.num_frames=24", "--schedule", "oracle",
            "--repeats=1", f"--checkpoint={ck}"]
    env = dict(os.environ, CWFCN_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    journal = Path(f"{out}.partial.jsonl")
    done = 0
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([*argv, f"--output={out}"], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while _journaled(journal) <= done:  # one more video finished, and synced
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.005)
        proc.send_signal(signum)
        err = proc.communicate(timeout=120)[1]
        assert _journaled(journal) < 6 and not out.exists(), "it finished before the signal"
        if done:
            assert f"resuming: {done} clips done earlier" in err, err
        if signum == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 128 + signum and "Traceback" not in err, err
            assert err.splitlines()[-1] == f"evaluate.py: interrupted ({signum.name})", err
        assert _journaled(journal) > done
        done = _journaled(journal)
    last = subprocess.run([*argv, f"--output={out}"], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert last.returncode == 0 and f"resuming: {done} clips done earlier" in last.stderr
    assert not journal.exists()
    once = subprocess.run([*argv, f"--output={tmp_path / 'once.json'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert once.returncode == 0, once.stderr

    def rows(path: Path) -> list[dict]:
        return [{k: v for k, v in row.items() if k not in evaluation.ROW_TIMING}
                for row in json.loads(path.read_text())["results"]]

    assert rows(out) == rows(tmp_path / "once.json") and rows(out)[0]["videos"] == 6
