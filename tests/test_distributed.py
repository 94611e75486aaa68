"""Tests for cwfcn.distributed: many devices and many hosts give the single-device answers.

The pytest process has one CPU device, so the multi-device runs are subprocesses
(tests/distributed_worker.py, train.py) with XLA_FLAGS forcing several CPU devices; their
results are compared with single-device computations made here: `clockwork.run` per video
with `metrics.confusion`, and `train_lib.train` on one device.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from configs import tiny
from cwfcn import checkpoint, clockwork, distributed, evaluation, metrics, model, train_lib
from cwfcn.data import samples
from tests import distributed_worker as worker

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600


def _env(devices: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(extra or {}))
    for name in ("JAX_COORDINATOR_ADDRESS", distributed.ENV_NUM_PROCESSES,
                 distributed.ENV_PROCESS_ID):
        env.pop(name, None)
    return env


def _launch(args: list[str], devices: int, env: dict[str, str] | None = None
            ) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(devices, env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs: list[subprocess.Popen]) -> None:
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]


def _pair(args: list[str], devices: int, env: dict[str, str] | None = None
          ) -> list[subprocess.Popen]:
    """Two processes of one run, coordinated on a free loopback port."""
    port = _free_port()
    return [_launch([*args, f"--coordinator=localhost:{port}", "--num_processes=2",
                     f"--process_id={i}"], devices, env) for i in range(2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# --- single-device answers, computed here -------------------------------------------------------


@pytest.fixture(scope="module")
def eval_reference():
    """{schedule: (hist, fired)} from clockwork.run on each video alone."""
    net = model.narrow_fcn8s(num_classes=worker.NUM_CLASSES, rngs=nnx.Rngs(worker.NET_SEED))
    videos, labels = worker.inputs()
    ref = {}
    for name in worker.SCHEDULES:
        hist = np.zeros((worker.NUM_CLASSES,) * 2, np.int64)
        fired = []
        for video, label in zip(videos, labels, strict=True):
            out = clockwork.run(net, video, name)
            preds = np.asarray(out.scores).argmax(-1)
            hist += metrics.confusion(label[worker.SCORED], preds[worker.SCORED],
                                      worker.NUM_CLASSES)
            fired.append(np.asarray(out.fired))
        ref[name] = hist, np.concatenate(fired).mean(0)
    return ref


@pytest.fixture(scope="module")
def train_reference():
    """(params as a flat dict, losses) of `train_lib.train` on the single device."""
    net, losses = train_lib.train(worker.train_config())
    return worker.flat_params(net), np.asarray(losses)


def _check_eval(result, eval_reference) -> None:
    for name, (hist, fired) in eval_reference.items():
        assert len(np.unique(hist.nonzero()[1])) >= 3  # the predictions are not one class
        np.testing.assert_array_equal(result[f"{name}/hist"], hist, err_msg=name)
        np.testing.assert_allclose(result[f"{name}/fired"], fired, err_msg=name)


def _check_params(params: dict, train_reference) -> None:
    ref, _ = train_reference
    assert params.keys() == ref.keys()
    for k, want in ref.items():  # the gradient all-reduce sums in another order
        scale = max(float(np.abs(want).max()), 1e-6)
        np.testing.assert_allclose(params[k], want, rtol=0, atol=1e-5 * scale, err_msg=k)


def _check_checkpoint(workdir: Path, train_reference) -> None:
    """The checkpoint saved under several devices restores onto this process's one device."""
    net = model.narrow_fcn8s(num_classes=worker.NUM_CLASSES, rngs=nnx.Rngs(0))
    assert checkpoint.load_params(workdir, net) == worker.train_config().train.steps
    _check_params(worker.flat_params(net), train_reference)


# --- one process ----------------------------------------------------------------------------------


def test_initialize_reads_arguments_then_environment():
    assert distributed.initialize(env={}) is False  # no coordinator: one process, nothing done
    with pytest.raises(ValueError, match="num_processes"):
        distributed.initialize(env={"JAX_COORDINATOR_ADDRESS": "localhost:1"})
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("localhost:1", 2, 2, env={})
    with pytest.raises(ValueError, match="num_processes"):
        distributed.initialize(env={"JAX_COORDINATOR_ADDRESS": "localhost:1",
                                    "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "x"})


def test_peer_timeout_is_the_constant_or_the_environment():
    assert distributed.peer_timeout({}) == distributed.PEER_TIMEOUT_S
    assert distributed.PEER_TIMEOUT_S < distributed.JAX_HEARTBEAT_TIMEOUT_S  # ours ends first
    assert distributed.peer_timeout({distributed.ENV_PEER_TIMEOUT: "2.5"}) == 2.5
    for bad in ("0", "-1", "x", "nan"):
        with pytest.raises(ValueError, match=distributed.ENV_PEER_TIMEOUT):
            distributed.peer_timeout({distributed.ENV_PEER_TIMEOUT: bad})
    with distributed.watch_peers(lambda lost: None):  # one process: nothing to watch
        distributed.all_arrived()


def test_meshes_of_this_process_and_bad_sizes():
    """Whatever the device count (1 here, 4 with forced host devices, several GPUs)."""
    devices = jax.device_count()
    mesh = distributed.make_mesh()
    assert mesh.axis_names == (distributed.DATA_AXIS,) and mesh.devices.size == devices
    one = distributed.make_mesh(1)
    assert one.devices.size == 1 and distributed.host_rows(6, one) == slice(0, 6)
    rows = 2 * devices  # one process holds every row of its devices
    assert distributed.host_rows(rows, mesh) == slice(0, rows)
    x = np.arange(2.0 * rows).reshape(rows, 2)
    np.testing.assert_array_equal(distributed.shard_batch(mesh, {"x": x})["x"], x)
    with pytest.raises(ValueError, match="num_devices"):
        distributed.make_mesh(devices + 1)
    if devices > 1:
        with pytest.raises(ValueError, match="does not split"):
            distributed.host_rows(devices + 1, mesh)


def test_evaluate_shard_must_name_this_run():
    net = model.narrow_fcn8s(num_classes=worker.NUM_CLASSES, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"shard \(0, 2\) is not .*1 processes"):
        evaluation.evaluate_schedule(net, [], "oracle", mean_bgr=(0, 0, 0), shard=(0, 2))


def test_four_devices_equal_one(tmp_path, eval_reference, train_reference):
    """Sharded evaluation (adaptive and fixed) and data-parallel training on 4 CPU devices."""
    _finish([_launch(["tests/distributed_worker.py", str(tmp_path), "--train"], devices=4)])
    result = dict(np.load(tmp_path / "0.npz"))
    assert result.pop("devices") == 4
    _check_eval(result, eval_reference)
    np.testing.assert_allclose(result.pop("losses"), train_reference[1], rtol=1e-5)
    _check_params({k: v for k, v in result.items() if k.startswith("params/")}, train_reference)
    _check_checkpoint(tmp_path / "run", train_reference)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, eval_reference, train_reference):
    """Two local processes of 2 devices each: train.py writes one checkpoint and one log,
    and sharded evaluation reduces across both; both equal the single-device answers."""
    workdir = tmp_path / "run"
    config = worker.train_config()
    train_args = ["train.py", "--config", "configs/tiny.py", f"--workdir={workdir}",
                  f"--config.train.batch_size={config.train.batch_size}",
                  f"--config.train.steps={config.train.steps}"]
    _finish(_pair(train_args, devices=2))
    _finish(_pair(["tests/distributed_worker.py", str(tmp_path)], devices=2))

    # One checkpoint, written once, holding the single-device parameters.
    assert checkpoint.latest_step(workdir) == config.train.steps
    assert sorted(p.name for p in workdir.iterdir()) == [str(config.train.steps),
                                                        train_lib.METRICS_FILE]
    _check_checkpoint(workdir, train_reference)
    log = [json.loads(line) for line in (workdir / train_lib.METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == [2]  # process 0 alone logs
    for i in range(2):
        result = dict(np.load(tmp_path / f"{i}.npz"))
        assert result.pop("devices") == 4
        _check_eval(result, eval_reference)


@pytest.mark.slow
def test_two_process_evaluate_equals_one(tmp_path):
    """evaluate.py on two processes runs videos 0, 2 on one and 1 on the other, and process
    0 writes the metrics of a one-process run (timings aside), leaving no journal behind."""
    args = ["evaluate.py", "--config", "configs/tiny.py", "--config.data.num_videos=3",
            "--data", "synthetic", "--schedule", "oracle,alternating"]
    env = {samples.CACHE_ENV: str(tmp_path / "cache")}  # the one-process run trains it here
    _finish([_launch([*args, f"--output={tmp_path / 'one.json'}"], devices=1, env=env)])
    _finish(_pair([*args, f"--output={tmp_path / 'two.json'}"], devices=1, env=env))

    def rows(name: str) -> list[dict]:
        timing = evaluation.ROW_TIMING
        out = json.loads((tmp_path / name).read_text())["results"]
        return [{k: v for k, v in row.items() if k not in timing} for row in out]

    one, two = rows("one.json"), rows("two.json")
    assert [r["schedule"] for r in one] == ["oracle", "alternating"]
    assert all(r["videos"] == 3 for r in one)
    assert two == one
    assert not list(tmp_path.glob("*.partial.jsonl"))


@pytest.mark.slow
def test_a_dead_process_ends_the_others_naming_it(tmp_path):
    """Issue 17: process 1 of a two-process evaluate.py SIGKILLed mid-run left process 0
    waiting (the all-gather) for minutes. Now process 0 exits with status 2 within the peer
    timeout (shortened here), on one line naming process 1, and keeps its journal."""
    timeout = 5  # distributed.ENV_PEER_TIMEOUT: PEER_TIMEOUT_S (30 s) is too long a wait
    checkpoint.save(tmp_path / "ck", 2, nnx.state(train_lib.build_net(tiny.get_config(),
                                                                      nnx.Rngs(0))))
    output = tmp_path / "out.json"
    args = ["evaluate.py", "--config", "configs/tiny.py", "--data", "synthetic",
            "--schedule", "oracle", "--repeats=1", f"--checkpoint={tmp_path / 'ck'}",
            f"--output={output}"]  # 2 videos: one clip each; nothing trained
    env = _env(1, {distributed.ENV_PEER_TIMEOUT: str(timeout)})
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, *args, f"--coordinator=localhost:{port}",
                               "--num_processes=2", f"--process_id={i}"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    journals = [Path(f"{output}.p{i}.partial.jsonl") for i in range(2)]
    try:
        start = time.monotonic()  # process 1 runs: its journal is started, its clip not done
        while not journals[1].exists():
            assert procs[1].poll() is None and time.monotonic() - start < TIMEOUT
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        err = procs[0].communicate(timeout=TIMEOUT)[1]
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[0].returncode == 2, err[-3000:]
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == [err.splitlines()[-1]], err[-3000:]  # one line, the last
    assert re.search(rf"(^|\])evaluate.py: error: process 1 of 2 stopped answering \(no "
                     rf"heartbeat for {timeout} s\).*rerun all processes \(each resumes from "
                     r"its journal\)$", errors[0]), errors[0]  # after a progress bar, maybe
    assert waited < timeout + 10, waited  # a heartbeat period, and a loaded machine's slack
    assert journals[0].read_text().startswith('{"key"')  # process 0's journal is kept
    assert not output.exists()


_PIPELINE = """
import json
import jax, numpy as np
from flax import nnx
from cwfcn import clockwork, distributed, model
net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
frames = np.random.default_rng(0).normal(0, 60, (5, 24, 32, 3)).astype(np.float32)
out = {}
for name in ("pipeline2", "pipeline3"):
    pipe = distributed.StagePipeline(net, name, jax.devices()[1:])
    got, want = pipe.run(frames), clockwork.run(net, frames, name)
    state, _ = pipe.step(None, frames[0])
    out[name] = {
        "diff": float(np.abs(np.asarray(got.scores) - np.asarray(want.scores)).max()),
        "scale": float(np.abs(np.asarray(want.scores)).max()),
        "devices": [sorted({str(d) for leaf in jax.tree.leaves(c) for d in leaf.devices()})
                    for c in state.outs]}
print(json.dumps(out))
"""


def test_pipelined_stages_run_on_their_own_devices_with_one_device_results():
    done = subprocess.run([sys.executable, "-c", _PIPELINE], env=_env(4), capture_output=True,
                          text=True, check=True, timeout=TIMEOUT)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("pipeline2", "pipeline3"):
        assert out[name]["diff"] <= 1e-5 * out[name]["scale"], out[name]
        assert out[name]["devices"] == [["cpu:1"], ["cpu:2"], ["cpu:3"]], out[name]


def test_stage_pipeline_takes_pipelined_schedules_only():
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="not pipelined"):
        distributed.StagePipeline(net, "alternating")


@pytest.mark.slow
def test_the_device_sensitive_tests_pass_on_four_devices_too():
    """The suite runs on one device; these in-process tests (meshes, stage pipelines, batched
    streams) must also pass where there are several (several GPUs, or forced host devices)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_distributed.py", "tests/test_batched.py", "-k",
         "meshes or stage_pipeline or pipelined_stages or gated_stage or bad_input_raises"],
        cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    passed = re.search(r"(\d+) passed", proc.stdout)  # the gated-stage cases, the meshes, ...
    assert passed and int(passed[1]) >= 6, proc.stdout[-500:]
