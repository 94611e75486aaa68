"""The entry points on the tiny config: evaluate.py's table and JSON, train.py, bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from cwfcn import model, schedules, train_lib
from cwfcn.data import datasets, samples, video

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"CWFCN_CACHE": str(cache)} if cache else {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.slow
def test_evaluate_all_schedules_writes_table_and_json(tmp_path):
    out = tmp_path / "results.json"
    proc = _run("evaluate.py", "--config", "configs/tiny.py", "--data", "synthetic",
                "--schedule", "all",
                "--theta", "0.3", "--output", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["config"]["model"]["num_classes"] == 5 and record["device"].startswith("cpu")
    assert record["versions"]["jax"] == jax.__version__ and "git_revision" in record
    rows = {r["schedule"]: r for r in record["results"]}
    # Without --baselines the truncated rows are FCN-8s's own skip scores, and say so.
    assert list(rows) == ["oracle", "skip", "exponential", "alternating", "adaptive:0.3",
                          "pipeline2", "pipeline3", "pool4 (fcn8s)", "pool3 (fcn8s)"]
    for name in rows:  # every schedule is a row of the printed table
        assert any(line.startswith(name) for line in proc.stdout.splitlines()), name
    assert rows["oracle"]["time_fraction"] == 1.0
    # No --checkpoint: the tiny config's model was trained into the cache, and said so.
    assert "trained now" in proc.stderr
    assert any((tmp_path / "cache" / "models").iterdir())
    # 2 videos x 6 frames: the fired fractions follow the periods exactly.
    assert rows["skip"]["fired"] == [0.5, 0.5, 0.5]
    assert rows["exponential"]["fired"] == pytest.approx([1.0, 0.5, 2 / 6])
    assert rows["alternating"]["fired"] == [1.0, 1.0, 0.5]
    assert rows["pool4 (fcn8s)"]["fired"] == [1.0, 1.0, 0.0]
    assert rows["pool3 (fcn8s)"]["fired"] == [1.0, 0, 0]
    for r in rows.values():
        assert 0.0 <= r["mean_iu"] <= 1.0 and 0.0 <= r["bdry_mean_iu"] <= 1.0
        assert 0.0 <= r["flop_fraction"] <= 1.0 and r["frames"] == 12
        assert 0.0 <= r["flop_fraction_dense"] <= 1.0
    # Both counts spend half of each stage under skip; the fusion runs every frame.
    assert 0.5 < rows["skip"]["flop_fraction_dense"] < 0.52
    assert rows["oracle"]["flop_fraction_dense"] == rows["oracle"]["flop_fraction"] == 1.0
    # Both cost columns: pipelines' modelled latency (longest stage + fusion) is below 1.
    for name in ("pipeline2", "pipeline3"):
        assert 0.0 < rows[name]["latency_model_flops"] < 1.0
        assert 0.0 < rows[name]["latency_model_time"] < 1.0
    assert rows["pipeline3"]["latency_model_flops"] < rows["pipeline2"]["latency_model_flops"]
    assert record["protocol"].startswith("translated videos") and record["phase"] == "clip"


@pytest.mark.slow
def test_truncated_baselines_train_and_evaluate_with_their_own_weights(tmp_path):
    """train.py trains a pool4 net (config.model.arch); evaluate.py --baselines scores it,
    the row named as the paper's baseline (that its predictions are the ones scored:
    test_evaluation); the pixel clock and a periods list run too."""
    work = tmp_path / "pool4"
    proc = _run("train.py", "--config", "configs/tiny.py", "--config.model.arch=pool4",
                "--config.train.steps=2", "--workdir", str(work), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "r.json"
    proc = _run("evaluate.py", "--config", "configs/tiny.py", "--data", "synthetic",
                "--schedule", "pool4,adaptive-pixel:0.1,periods:1,2,4", "--baselines",
                f"pool4={work}", "--output", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    rows = {r["schedule"]: r for r in json.loads(out.read_text())["results"]}
    assert list(rows) == ["oracle", "pool4", "adaptive-pixel:0.1", "periods:1,2,4"]
    assert rows["pool4"]["fired"] == [1.0, 1.0, 0.0]
    assert rows["pool4"]["flop_fraction_dense"] < 1.0
    assert "baseline pool4: checkpoint" in proc.stderr


def test_evaluate_bad_schedule_is_one_clear_error():
    proc = _run("evaluate.py", "--config", "configs/tiny.py", "--schedule", "periods:0,1,1")
    assert proc.returncode == 2
    assert "periods must be positive integers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluate_theta_out_of_range_is_one_clear_error():
    proc = _run("evaluate.py", "--config", "configs/tiny.py", "--theta", "1.5")
    assert proc.returncode == 2
    assert "theta must be a number in [0, 1]" in proc.stderr


def test_loss_ignores_255_and_matches_numpy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, (2, 3, 4))
    labels[0, 0, :2] = 255
    logp = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    valid = labels != 255
    picked = [logp[n, i, j, labels[n, i, j]] for n, i, j in zip(*np.nonzero(valid), strict=True)]
    want = -np.mean(picked)
    got = train_lib.loss_fn(jnp.asarray(scores), jnp.asarray(labels))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.slow
def test_training_lowers_the_loss_on_unseen_scenes():
    config = tiny.get_config()
    config.train.steps = 30
    trained, losses = train_lib.train(config)
    assert len(losses) == 30 and np.all(np.isfinite(losses))
    untrained = train_lib.init_net(config, jax.random.split(jax.random.key(config.seed))[1])
    batches = train_lib.make_batches(config)
    mean = datasets.mean_bgr_of(config)

    def held_out_loss(net):  # steps 1000.. are scenes the run never saw
        return np.mean([train_lib.loss_fn(net(model.preprocess(x, mean)), jnp.asarray(y, int))
                        for x, y in map(batches, range(1000, 1008))])

    assert held_out_loss(trained) < 0.8 * held_out_loss(untrained)


def test_train_cli_runs_tiny_config():
    proc = _run("train.py", "--config", "configs/tiny.py")
    assert proc.returncode == 0, proc.stderr
    assert "over 4 steps" in proc.stdout


@pytest.mark.slow
def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    config = tiny.get_config()
    config.train.steps = 4
    straight, _ = train_lib.train(config, str(tmp_path / "straight"))
    config.train.steps = 2
    train_lib.train(config, str(tmp_path / "resumed"))
    config.train.steps = 4
    resumed, losses = train_lib.train(config, str(tmp_path / "resumed"))
    assert len(losses) == 2  # steps 2 and 3 only: the first two came from the checkpoint
    x = np.random.default_rng(0).normal(size=(1, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(resumed(x), straight(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_evaluate_sweep_plots_and_overlay_video(tmp_path):
    out, plots, clip = tmp_path / "r.json", tmp_path / "plots", tmp_path / "overlay.mp4"
    proc = _run("evaluate.py", "--config", "configs/tiny.py", "--data", "synthetic",
                "--schedule", "skip,adaptive", "--theta", "0.1:0.3:0.1", "--plot", str(plots),
                "--video-out", str(clip), "--output", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    written = json.loads(out.read_text())
    rows, timing = written["results"], written["timing"]
    assert [r["schedule"] for r in rows] == ["oracle", "skip", "adaptive:0.1", "adaptive:0.2",
                                            "adaptive:0.3"]
    assert timing["compile_s"] == pytest.approx(sum(r["compile_s"] for r in rows))
    assert 0 < timing["load_s"] and timing["load_s"] + sum(r["wall_s"] for r in rows) < (
        timing["wall_s"])
    assert "s compiling" in proc.stderr
    for name in ("tradeoff.png", "timeline.png"):
        with Image.open(plots / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    frames = video.read_video(clip)
    config = tiny.get_config()
    assert frames.shape[:3] == (config.data.num_frames, config.data.size, config.data.size)


def test_target_rate_is_calibrated_over_the_whole_data_set(tmp_path):
    """No --calibration-frames: theta is tuned on every clip, as the paper tuned it to 50%,
    and the rate the reference counts is the one reported."""
    out = tmp_path / "r.json"
    proc = _run("evaluate.py", "--config", "configs/tiny.py", "--config.train.steps=0",
                "--data", "synthetic", "--config.data.num_videos=3", "--target-rate", "0.5",
                "--rate-window", "0", "--schedule", "adaptive", "--output", str(out),
                cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    (row,) = [r for r in json.loads(out.read_text())["results"] if r["kind"] == "adaptive"]
    assert f"{row['schedule']} {row['fired_ref'][-1]:.3f}" in proc.stderr
    assert f"2 schedules (oracle, {row['schedule']}) over 3 videos" in proc.stderr
    assert "evaluate: 100%" in proc.stderr and "3/3" in proc.stderr  # the progress bar
    # The time it will take, said before the work starts: both schedules on 3 videos of the
    # config's frame size; the calibrated clock is open-loop (no window): every frame counted.
    config = tiny.get_config()
    size = config.data.size
    said = re.search(r"estimated time: .* \(2 schedules x 3 videos x 2 repeats; "
                     rf"[0-9.]+ ms a full frame of {size}x{size} here; ([1-3]) of 3 videos read: "
                     r"([0-9]+) frames over all schedules; the adaptive clocks counted as "
                     r"firing on every frame\)", proc.stderr)
    assert said and int(said[2]) == int(said[1]) * 2 * config.data.num_frames
    assert said.start() < proc.stderr.index("evaluate: ")
    assert abs(row["fired_ref"][-1] - 0.5) <= 0.2


@pytest.mark.slow
def test_target_rate_lands_near_the_rate_on_a_real_clip(tmp_path):
    # vtest.avi: a fixed camera over a walkway, so the rate of the first frames holds later.
    clip = samples.fetch(["videos"])["videos"] / "vtest.avi"
    out = tmp_path / "r.json"
    # Untrained (steps=0): the tiny net's random score layers give a clock signal that moves.
    proc = _run("evaluate.py", "--config", "configs/tiny.py", "--config.train.steps=0",
                "--data", f"video:{clip}",
                "--max-frames", "40", "--calibration-frames", "30", "--target-rate", "0.5",
                "--schedule", "adaptive", "--repeats", "1", "--output", str(out),
                cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["results"]
    fixed, held = [r for r in rows if r["schedule"].startswith("adaptive")]
    assert fixed["frames"] == held["frames"] == 40
    assert abs(fixed["fired"][-1] - 0.5) <= 0.1
    # The budget row: the calibrated theta under the controller, every 20-frame window held.
    assert held["params"]["target_rate"] == 0.5 and held["params"]["window"] == 20
    assert held["schedule"] == f"{fixed['schedule']}@0.5/20"
    fired = np.asarray(held["timeline"]["fired"], float)
    sums = np.convolve(fired, np.ones(20), "valid")
    assert sums.min() >= 8 and sums.max() <= 12, sums
    assert held["window_rate"]["within"] == 1.0
    assert "achieved" in proc.stderr and held["schedule"] in proc.stderr
    # Unlabelled: no accuracy, shown as "-" in the table and null in the JSON, never NaN.
    assert fixed["mean_iu"] is None and fixed["bdry_fw_iu"] is None
    assert "nan" not in proc.stdout.lower() and "NaN" not in out.read_text()


BAD_FLAGS = [
    (["--theta", "0.5:0.1:0.1"], "bad --theta"),
    (["--data", "synthetic", "--phase", "coin"], "takes --phase clip"),
    (["--phase", "sometimes"], "bad phase"),
    (["--baselines", "pool5=x.caffemodel"], "bad --baselines"),
    (["--config.model.arch=pool4"], "pass an FCN-8s config"),
    (["--schedule", "adaptive-pixel", "--target_rate", "0.5"], "calibrate the score_pool4"),
    (["--target_rate", "0"], "--target_rate must be in"),
    (["--target_ms", "20", "--target_rate", "0.5"], "give one"),
    (["--target_ms", "-3"], "--target_ms must be a positive"),
    (["--target_rate", "0.3", "--rate_window", "3", "--rate_tolerance", "0"], "no whole number"),
    (["--schedule", "oracle@0.5"], "for the adaptive clocks"),
    (["--data", "video:/no/such.mp4"], "no such file"),
    (["--data", "video:"], "--data video: names no video"),
    # issue 18: each refused before any work (no data read, no net trained)
    (["--output", "."], "it is a directory, not a regular file"),
    (["--output", os.devnull], "not a regular file"),
    (["--plot", "README.md"], "--plot 'README.md'"),
    (["--video_out", "."], "it is a directory, not a regular file"),
    (["--output", ""], "--output is empty"),
    (["--checkpoint", ""], "--checkpoint is empty"),
    (["stray"], "unexpected argument 'stray'"),
    (["--data", "synthetic", "--max_frames", "2"], "--max_frames reads at most N frames of"),
    (["--calibration_frames", "-3", "--target_rate", "0.5"], "--calibration_frames must be"),
    (["--calibration_frames", "10"], "--calibration_frames calibrates --target_rate"),
    (["--theta", "0.1:0.3:0.1", "--target_rate", "0.5"], "a sweep of 3 thetas"),
    (["--process_id", "1"], "give --coordinator"),
    (["--coordinator", "nohost:abc", "--num_processes", "2", "--process_id", "0"],
     "bad --coordinator 'nohost:abc'"),
    (["--config.seed=9223372036854775808"], "config.seed = 9223372036854775808 is invalid"),
    (["--config.clock.boundary_radius=100000"], "config.clock.boundary_radius = 100000"),
    (["--repeats", "100000000000000000000"], "--repeats must be in [1, 100]"),
]


@pytest.fixture(scope="module")
def bad_flag_runs(run_cli_batch, tmp_path_factory) -> list[dict]:
    """Every BAD_FLAGS case, in one process (a fork each), stopped where work would start."""
    return run_cli_batch("evaluate.py", [["evaluate.py", "--config", "configs/tiny.py", *flags]
                                         for flags, _ in BAD_FLAGS],
                         tmp_path_factory.mktemp("bad-flags") / "cache")


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)),
                         ids=[" ".join(flags) for flags, _ in BAD_FLAGS])
def test_evaluate_bad_flags_are_one_clear_error(bad_flag_runs, case):
    """Each refused before any work (none reaches the net's loading) with one line."""
    run, message = bad_flag_runs[case], BAD_FLAGS[case][1]
    assert run["status"] == 2 and message in run["output"], run
    lines = [line for line in run["output"].splitlines() if "error:" in line]
    assert "Traceback" not in run["output"] and len(lines) == 1, run


def test_the_readmes_schedules_and_explicit_periods_parse():
    """Every `--schedule X` of README.md parses, and so do explicit periods on the command
    line, alone or after other schedules (a comma before a digit stays inside)."""
    specs = set(re.findall(r"--schedule[ =]([^\s`|]+)", (ROOT / "README.md").read_text()))
    assert "all" in specs and len(specs) > 5
    for spec in specs:
        assert schedules.parse_schedules(spec, [0.25])
    assert [s.periods for s in schedules.parse_schedules("oracle,periods:1,2,4", [])] == [
        (1, 1, 1), (1, 2, 4)]
    assert [s.name for s in schedules.parse_schedules("periods:1,2,4", [])] == [
        "oracle", "periods:1,2,4"]
