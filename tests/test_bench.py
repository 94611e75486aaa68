"""The benchmarks run end to end (narrow net, tiny frames) and report sanely."""

import json

import pytest
from flax import nnx

from bench import batched, data, forward, live, memory, pipeline, schedules, train
from configs import tiny
from cwfcn import checkpoint, train_lib


@pytest.mark.slow
def test_schedules_benchmark_smoke(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CWFCN_COMPILATION_CACHE", "0")  # leave this process's jax config be
    out = tmp_path / "bench.json"
    result = schedules.main(["--narrow", "--size", "32", "--frames", "5", "--repeats", "1",
                             "--schedules", "oracle", "skip", "alternating",
                             "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = {r["schedule"]: r for r in result["schedules"]}
    assert rows["oracle"]["time_fraction"] == 1.0
    assert rows["skip"]["fired_frames"] == [3, 3, 3]  # frames 0, 2, 4 of 5
    assert rows["alternating"]["fired_frames"] == [5, 5, 3]
    # FLOP fraction from the per-stage FLOPs and the fired table, by hand.
    s1, s2, s3 = result["flops_per_stage"]
    fuse = result["flops_fuse"]
    want = (5 * (s1 + s2) + 3 * s3 + 5 * fuse) / (5 * (s1 + s2 + s3 + fuse))
    assert rows["alternating"]["flop_fraction"] == pytest.approx(want)
    assert "alternating" in capsys.readouterr().out
    assert result["stream_step_compiles"] >= 1 and 0 < result["decision_of_frame"]
    # The adaptive decision alone is one argmax and a compare: far cheaper than a frame.
    assert result["decision_ms"] < result["run_oracle_ms_per_frame"]


@pytest.mark.slow
def test_live_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "live.json"
    result = live.main(["--videos", "vtest.avi", "--frames", "24", "--scale", "0.1",
                        "--calibration", "8", "--window", "8", "--latency_frames", "8",
                        "--latency", "pipeline3", "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    fixed, held, same = result["budget"]["vtest.avi"]
    assert fixed["row"] == "fixed" and fixed["schedule"] == held["schedule"].partition("@")[0]
    assert held["within"] == 1.0  # the budget holds in every window, by construction
    assert held["window_min"] >= 0.4 - 1e-9 and held["window_max"] <= 0.6 + 1e-9
    assert same["rate"] == pytest.approx(held["rate"], abs=0.15)
    assert [r["schedule"] for r in result["latency"]] == ["pipeline3", fixed["schedule"],
                                                           held["schedule"]]
    assert all(r["frames"] == 8 and r["p50"] <= r["p99"] <= r["max"] for r in result["latency"])
    assert result["export"]["ms_per_frame"]["exported"] > 0
    assert "p99/p50" in capsys.readouterr().out


def test_forward_benchmark_smoke(tmp_path):
    out = tmp_path / "forward.json"
    result = forward.main(["--narrow", "--sizes", "48", "--layers", "--repeats", "1",
                           "--matmul-sizes", "64", "128", "--dtypes", "float32", "bfloat16",
                           "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [(r["size"], r["dtype"]) for r in result["runs"]] == [(48, "float32"),
                                                                 (48, "bfloat16")]
    run = result["runs"][0]
    rows = {r["name"]: r for r in run["rows"]}
    assert rows["matmul 128"]["gflop"] == pytest.approx(2 * 128**3 / 1e9)
    assert run["matmul_gflops"] == max(rows["matmul 64"]["gflops"], rows["matmul 128"]["gflops"])
    layers = [k for k in rows if k.startswith("layer:")]
    assert len(layers) == 13 + 5 + 2 + 4  # convs, pools, skip scores, fc6 fc7 score_fr upscore2
    # What XLA runs for S2 and S3 is their layers, dense; S1 skips constant border work.
    s2 = ["conv4_1", "conv4_2", "conv4_3", "pool4", "score_pool4"]
    assert rows["S2"]["executed_gflop"] == pytest.approx(
        sum(rows[f"layer:{k}"]["gflop"] for k in s2), rel=1e-3)
    assert rows["S2"]["gflop"] == pytest.approx(rows["S2"]["executed_gflop"], rel=1e-3)
    assert rows["S1"]["executed_gflop"] < 0.8 * rows["S1"]["gflop"]
    parts = sum(rows[k]["gflop"] for k in ("S1", "S2", "S3", "fuse"))
    assert rows["forward"]["gflop"] == pytest.approx(parts)


@pytest.mark.slow
def test_memory_benchmark_smoke(tmp_path):
    config = tiny.get_config()
    checkpoint.save(tmp_path / "ck", 1, nnx.state(train_lib.build_net(config, nnx.Rngs(0))))
    result = memory.main(["--narrow", "--frames", "40", "--early", "10", "--size", "24",
                          "--chunk", "8", "--schedule", "oracle",
                          "--json", str(tmp_path / "memory.json"),
                          "--evaluate", "--eval_videos", "synthetic", "--eval_frames", "20",
                          "--eval_size", "40x56", "--checkpoint", str(tmp_path / "ck")])
    modes = {m["mode"]: m for m in result["modes"]}
    assert set(modes) == {"step", "chunks"}
    for m in modes.values():
        assert m["frames"] == 40 and m["end"]["rss_mb"] >= m["early"]["rss_mb"] > 0
    assert modes["step"]["compiles"]["step"] == 1  # one stream, one shape: compiled once
    assert modes["chunks"]["compiles"]["scan"] == 1  # the padded last chunk included
    (run,) = result["evaluations"]  # evaluate.py on a video file the benchmark wrote
    assert run["size"] == [40, 56] and run["early"]["frames"] == 10
    assert run["end"]["frames"] == 20 and run["end"]["rss_mb"] > 0


def test_pipeline_benchmark_smoke(tmp_path):
    result = pipeline.main(["--data", "synthetic", "--narrow", "--size", "40", "--videos", "2",
                            "--repeats", "1", "--json", str(tmp_path / "pipeline.json")])
    assert result["frames"] == 12 and result["videos"] == 2
    assert result["engine_fps"] > 0 and result["evaluate_fps"] > 0


def test_batched_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = batched.main(["--narrow", "--size", "32", "--frames", "3", "--batch", "2",
                           "--rates", "0.5", "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (row,) = result["rows"]
    # Frame 0 of both streams and the 2 cuts (half of the 4 later frames) fire S3.
    assert row["s3_fired"] == pytest.approx(4 / 6)
    want = 1 - (1 - row["s3_fired"]) * result["s3_flop_share"]  # S1, S2, fuse every frame
    assert row["flop_fraction"] == pytest.approx(want)
    assert row["time_fraction"] > 0 and "run_batch" in capsys.readouterr().out


def test_data_benchmark_smoke(tmp_path):
    out = tmp_path / "data.json"
    result = data.main(["--narrow", "--shots", "2", "--masks", "4", "--frame-size", "30", "40",
                        "--photos", "2", "--photo-size", "24", "32", "--steps", "2",
                        "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    # 4 masked frames 10 apart: frames 21 and 31 scored, each shot holds all 4 (f - 10k >= 1).
    assert result["frames"] == result["masked_frames"] == 8
    assert set(result["prepare_s"]) == {"cwfcn_youtube/shots", "cwfcn_nyud/images"}
    for key in ("raw_frames_per_s", "prepared_frames_per_s", "input_images_per_s",
                "train_step_images_per_s"):
        assert result[key] > 0
    assert result["input_headroom"] == pytest.approx(
        result["input_images_per_s"] / result["train_step_images_per_s"])


def test_train_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "train.json"
    result = train.main(["--narrow", "--height", "36", "--width", "44", "--steps", "1",
                         "--data_parallel", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result))  # the last line is the JSON
    assert result["ms_per_step"] > 0 and result["head_step_ms"] > 0
    assert set(result["parts"]) == {"forward", "backward", "optimizer"}
    assert result["parts"]["forward"] > 0 and result["parts"]["optimizer"] > 0
    assert len(result["backward_profile"]) == 5
    assert "1 device, batch 1" in result["data_parallel"]


@pytest.mark.slow
def test_train_benchmark_peer_is_the_same_step(capsys):
    pytest.importorskip("torch")  # not a dependency: the peer is checked where torch is
    result = train.main(["--narrow", "--height", "36", "--width", "44", "--steps", "1",
                         "--peer"])
    check = result["peer_check"]
    assert check["loss"] == pytest.approx(check["torch_loss"], rel=1e-5)
    assert check["max_update"] > 1e-6  # a step that moved the weights...
    assert check["max_param_diff"] < 1e-3 * check["max_update"]  # ...the same way as torch's
    assert set(result["peer_ms_per_step"]) == {"cwfcn", "torch eager", "torch.compile"}
    assert "torch eager" in capsys.readouterr().out
