"""The schedules benchmark runs end to end (narrow net, tiny frames) and reports sanely."""

import json

import pytest

from bench import schedules


@pytest.mark.slow
def test_schedules_benchmark_smoke(tmp_path, capsys):
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
