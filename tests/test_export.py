"""cwfcn.export: the exported step, loaded in a fresh process without the model code, gives
exactly `Clockwork.step`'s results; the CLI writes it; bad input is one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cwfcn import clockwork, export

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (40, 48, 3)

# Runs in a fresh interpreter: loads the artefact, steps through the frames, saves what it got.
_REPLAY = """
import sys
import numpy as np
from cwfcn import export
exported = export.load(sys.argv[1])
frames = np.load(sys.argv[2])
state, scores, fired = exported.init(), [], []
for frame in frames:
    state, s, f = exported.step(state, frame)
    scores.append(np.asarray(s)); fired.append(np.asarray(f))
assert "cwfcn.model" not in sys.modules
np.savez(sys.argv[3], scores=np.stack(scores), fired=np.stack(fired), t=np.asarray(state["t"]))
"""


def _frames() -> np.ndarray:
    """20 frames whose content jumps at frame 10, so the adaptive clock both fires and waits."""
    frames = np.random.default_rng(0).normal(0, 40, (20, *SHAPE)).astype(np.float32)
    frames[10:] = np.roll(frames[10:], 9, axis=1) + 60
    frames[1:10] = frames[0] + np.random.default_rng(1).normal(0, 1, (9, *SHAPE))
    return frames.astype(np.float32)


@pytest.mark.slow
# The adaptive case under a budget: its controller's state is exported and carried too.
@pytest.mark.parametrize("schedule", ["adaptive-pixel:0.2@0.5/6/0.2", "pipeline3"])
def test_exported_step_in_a_fresh_process_equals_clockwork_step(net, tmp_path, schedule):
    frames = _frames()
    path = tmp_path / "step.bin"
    meta = export.export_step(net, schedule, SHAPE, path, mean_bgr=(1.0, 2.0, 3.0))
    assert meta["platforms"] == ["cpu", "cuda"] and meta["frame_shape"] == list(SHAPE)
    budget = ["control/theta", "control/history"] if "@" in schedule else []
    assert meta["state_names"][-3 - len(budget):] == ["t", "ref", "change", *budget]
    assert meta["mean_bgr"] == [1, 2, 3]
    cw = clockwork.Clockwork(net, schedule)
    state, want_scores, want_fired = cw.init(SHAPE), [], []
    for frame in frames:
        state, s, f = cw.step(state, frame)
        want_scores.append(np.asarray(s))
        want_fired.append(np.asarray(f))
    want_fired = np.stack(want_fired)
    if schedule.startswith("adaptive"):  # the clock decided both ways: the test can fail
        assert 0 < want_fired[1:, -1].sum() < len(frames) - 1
    np.save(tmp_path / "frames.npy", frames)
    proc = subprocess.run([sys.executable, "-c", _REPLAY, str(path), str(tmp_path / "frames.npy"),
                           str(tmp_path / "got.npz")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "got.npz")
    np.testing.assert_array_equal(got["scores"], np.stack(want_scores))  # bit for bit
    np.testing.assert_array_equal(got["fired"], want_fired)
    assert int(got["t"]) == len(frames)


def test_bad_frames_states_and_files_are_clear_errors(net, tmp_path):
    path = tmp_path / "step.bin"
    export.export_step(net, "skip", SHAPE, path, platforms=("cpu",))
    exported = export.load(path)
    with pytest.raises(ValueError, match="shape"):
        exported.step(exported.init(), np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="init"):
        exported.step({"t": 0}, np.zeros(SHAPE, np.float32))
    with pytest.raises(ValueError, match="H, W, 3"):
        export.export_step(net, "skip", (8, 8), tmp_path / "x.bin")
    with pytest.raises(ValueError, match="not a regular file"):
        export.export_step(net, "skip", SHAPE, tmp_path)
    with pytest.raises(ValueError, match="unknown schedule"):
        export.export_step(net, "sometimes", SHAPE, tmp_path / "x.bin")
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="damaged"):
        export.load(damaged)
    with pytest.raises(OSError, match="no such file"):
        export.load(tmp_path / "missing.bin")
    assert not list(tmp_path.glob(".*.tmp"))  # failed writes leave no temporaries


@pytest.mark.slow
def test_cli_exports_the_configs_model(tmp_path):
    out = tmp_path / "step.bin"
    env = dict(os.environ, CWFCN_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "cwfcn.export", "--config", "configs/tiny.py",
         "--config.train.steps=0", "--schedule", "pipeline2", "--height", "24", "--width", "32",
         "--platforms", "cpu", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
        env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    meta = export.load(out).meta
    assert meta["schedule"] == "pipeline2" and meta["frame_shape"] == [24, 32, 3]
    assert meta["platforms"] == ["cpu"]
    proc = subprocess.run([sys.executable, "-m", "cwfcn.export", "--height", "0", "--width", "3",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # Issue 17 (8): a flag file that never ends is refused at once, on one line (it hung).
    proc = subprocess.run([sys.executable, "-m", "cwfcn.export", "--flagfile", "/dev/zero"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr == (
        "python -m cwfcn.export: error: --flagfile '/dev/zero' is not a regular file (a "
        "device or a pipe): pass a file\n")
