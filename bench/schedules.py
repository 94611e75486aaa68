"""Benchmark: does each clockwork schedule save the time its FLOPs say it should?

Runs FCN-8s (VGG16 widths, random weights: speed does not depend on them) over a
translated video that pans and holds (`_video`) with every schedule, and prints,
per schedule, ms/frame, the compile time, the fraction of frames each stage fired,
the analytic FLOP fraction of oracle and the measured time fraction of oracle, all
from one run. Also:
  - the adaptive clock's decision alone (argmax of the clock scores, compared with
    the reference map), as a fraction of a full frame;
  - `Clockwork.step` called from Python, frame by frame, against the scan-based
    `run` (oracle), and how many times each was compiled.
Pipelined schedules run the stages of a step side by side; their ms/frame against
oracle's shows what the backend makes of that. With 3 or more devices (on a CPU:
`XLA_FLAGS=--xla_force_host_platform_device_count=3`), pipeline3 is also timed with each
stage on its own device (`distributed.StagePipeline`). The persistent compilation cache is on,
as in the CLIs (`CWFCN_COMPILATION_CACHE=0` turns it off): "compile s" of a second run
shows what the cache saves.

    python bench/schedules.py                 # 500x500, the PASCAL size
    python bench/schedules.py --size 256 --frames 6 --dtype bfloat16 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import device_info, emit, round_robin, timed
from cwfcn import clockwork, compilation, cost, distributed, model
from cwfcn.data import datasets, translate

DEFAULT_SCHEDULES = (
    "oracle", "skip", "exponential", "alternating", "adaptive:0.25", "pipeline2", "pipeline3",
)


def _video(size: int, frames: int, shift: int, seed: int) -> np.ndarray:
    """A smooth random scene under a camera that pans one step, then holds one frame.

    The pans are the paper's translated video (`shift` px per step); the holds give
    the adaptive clock still frames to skip. Positions: 0, 1, 1, 2, 2, 3, ...

    Returns:
      float32 `[T, size, size, 3]`, preprocessed.
    """
    positions = [0] + [1 + i // 2 for i in range(frames - 1)]
    rng = np.random.default_rng(seed)
    long_side = size + shift * positions[-1]
    coarse = rng.uniform(0, 255, (long_side // 16 + 2, size // 16 + 2, 3))
    image = np.kron(coarse, np.ones((16, 16, 1)))[:long_side, :size].astype(np.uint8)
    label = np.zeros(image.shape[:2], np.uint8)
    pans, _ = translate.make_translated_frames(image, label, shift, positions[-1] + 1)
    return np.asarray(model.preprocess(pans[positions], datasets.get("voc").mean_bgr))


def _bench_schedules(net, frames, names: list[str], repeats: int, dtype) -> list[dict]:
    """Times every schedule (round-robin; each keeps its fastest run)."""
    runs = {name: functools.partial(clockwork.run, net, frames, name, dtype=dtype)
            for name in names}
    times = round_robin({n: lambda f=fn: f().scores for n, fn in runs.items()}, repeats)
    rows = []
    for name in names:
        fired = np.asarray(runs[name]().fired)
        best = times[name]["wall_s"]
        rows.append({
            "schedule": clockwork.parse_schedule(name).name,
            "ms_per_frame": 1e3 * best / len(frames),
            "compile_s": max(times[name]["first_s"] - best, 0.0),
            "fired": fired.mean(0).round(4).tolist(),
            "fired_frames": fired.sum(0).tolist(),
            "_fired": fired,
        })
    return rows


def _decision_ms(net, frames, repeats: int, dtype) -> float:
    """ms of the adaptive clock's decision alone on one frame: the class argmax of the
    clock scores (S2's output here) against the reference map, and the changed fraction."""
    staging = clockwork.staging_of(net)
    graphdef, params = nnx.split(net)
    params = clockwork.cast_params(params, dtype)
    x = jnp.asarray(frames[:1], dtype)
    outs = []
    for k, stage in enumerate(staging.stages[:-1]):
        outs.append(jax.jit(lambda p, s, f=stage: f(nnx.merge(graphdef, p), s))(
            params, x if k == 0 else outs[-1]))
    scores = staging.clock_scores((*outs, None))
    ref = clockwork.clock_classes(scores)

    @jax.jit
    def decide(scores, ref):
        return jnp.mean((clockwork.clock_classes(scores) != ref).astype(jnp.float32))

    return 1e3 * round_robin({"decide": lambda: decide(scores, ref)}, repeats,
                             desc="decision")["decide"]["wall_s"]


def _bench_stream(net, frames, repeats: int, dtype) -> tuple[float, int]:
    """ms/frame of `Clockwork.step` called from Python (oracle), and its compile count."""
    cw = clockwork.Clockwork(net, "oracle", dtype=dtype)

    def loop():
        state = cw.init(frames.shape[1:])
        for frame in frames:
            state, scores, _ = cw.step(state, frame)
        return scores

    timed(loop)  # compile
    best = min(timed(loop)[0] for _ in range(repeats))
    return 1e3 * best / len(frames), clockwork.compile_counts()["step"]


def _bench_stage_devices(net, frames, repeats: int) -> dict | None:
    """pipeline3 with each stage on its own device (`distributed.StagePipeline`) against
    the one-device scan; None with fewer than 3 devices."""
    if jax.device_count() < 3:
        return None
    pipe = distributed.StagePipeline(net, "pipeline3", jax.devices()[:3])
    times = round_robin({"one device": lambda: clockwork.run(net, frames, "pipeline3").scores,
                         "3 devices": lambda: pipe.run(frames).scores}, repeats,
                        desc="stage devices")
    one, three = (1e3 * times[k]["wall_s"] / len(frames) for k in ("one device", "3 devices"))
    return {"one_device_ms_per_frame": one, "three_devices_ms_per_frame": three,
            "ratio": three / one}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=500, help="frame height and width (px)")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (T)")
    parser.add_argument("--shift", type=int, default=16, help="translation per frame (px)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds; each schedule keeps its fastest")
    parser.add_argument("--schedules", nargs="+", default=list(DEFAULT_SCHEDULES))
    parser.add_argument("--dtype", default="float32", choices=sorted(clockwork.DTYPES),
                        help="compute dtype")
    parser.add_argument("--narrow", action="store_true", help="narrow net (smoke test)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    for name in args.schedules:
        clockwork.parse_schedule(name)  # fail before any work on a bad name

    cache = compilation.enable_cache()  # as the CLIs: a second run loads compiled code
    widths = model.NARROW_WIDTHS if args.narrow else model.VGG16_WIDTHS
    net = model.FCN8s(21, widths=widths, zero_init_scores=False, rngs=nnx.Rngs(0))
    frames = _video(args.size, args.frames, args.shift, seed=0)
    flops = cost.stage_flops(net, frames.shape[1:])

    rows = _bench_schedules(net, frames, args.schedules, args.repeats, args.dtype)
    for row in rows:
        row["flop_fraction"] = cost.flop_fraction(row.pop("_fired"), flops)
    oracle_ms = next((r["ms_per_frame"] for r in rows if r["schedule"] == "oracle"), None)
    for row in rows:
        row["time_fraction"] = row["ms_per_frame"] / oracle_ms if oracle_ms else None
        gap = None if oracle_ms is None else row["time_fraction"] - row["flop_fraction"]
        row["gap"] = gap
    stream_ms, stream_compiles = _bench_stream(net, frames, args.repeats, args.dtype)
    decision_ms = _decision_ms(net, frames, args.repeats, args.dtype)
    stage_devices = _bench_stage_devices(net, frames, args.repeats)

    result = {
        "benchmark": "schedules",
        **device_info(),
        "dtype": args.dtype,
        "compilation_cache": None if cache is None else str(cache),
        "size": args.size,
        "frames": args.frames,
        "widths": list(widths),
        "flops_per_stage": list(flops.stages),
        "flops_fuse": flops.fuse,
        "schedules": rows,
        "stream_step_ms_per_frame": stream_ms,
        "stream_step_compiles": stream_compiles,
        "run_oracle_ms_per_frame": oracle_ms,
        "run_compiles": clockwork.compile_counts()["run"],
        "decision_ms": decision_ms,
        "decision_of_frame": None if oracle_ms is None else decision_ms / oracle_ms,
        "pipeline3_stage_devices": stage_devices,
    }
    emit(result, _table(result), args.json)
    return result


def _table(result: dict) -> str:
    head = f"{'schedule':<16}{'ms/frame':>10}{'fired S1/S2/S3':>18}{'FLOP frac':>11}"
    head += f"{'time frac':>11}{'gap':>8}{'compile s':>11}"
    lines = [f"\n{result['device']}, {result['size']}x{result['size']}, T={result['frames']}, "
             f"{result['dtype']}, GFLOP/stage "
             f"{[round(f / 1e9, 2) for f in result['flops_per_stage']]} "
             f"+ fuse {result['flops_fuse'] / 1e9:.3f}", head, "-" * len(head)]
    for r in result["schedules"]:
        fired = "/".join(f"{f:.2f}" for f in r["fired"])
        tf = "-" if r["time_fraction"] is None else f"{r['time_fraction']:.3f}"
        gap = "-" if r["gap"] is None else f"{r['gap']:+.3f}"
        lines.append(f"{r['schedule']:<16}{r['ms_per_frame']:>10.1f}{fired:>18}"
                     f"{r['flop_fraction']:>11.3f}{tf:>11}{gap:>8}{r['compile_s']:>11.1f}")
    run_ms = result["run_oracle_ms_per_frame"]
    lines.append(f"streaming step (oracle, Python loop): {result['stream_step_ms_per_frame']:.1f}"
                 f" ms/frame, compiled {result['stream_step_compiles']}x"
                 + ("" if run_ms is None else f"; run: {run_ms:.1f} ms/frame"))
    frac = result["decision_of_frame"]
    lines.append(f"adaptive decision: {result['decision_ms']:.2f} ms"
                 + ("" if frac is None else f" = {frac:.2%} of an oracle frame"))
    if result["pipeline3_stage_devices"]:
        d = result["pipeline3_stage_devices"]
        lines.append(f"pipeline3, a stage per device: {d['three_devices_ms_per_frame']:.1f} "
                     f"ms/frame against {d['one_device_ms_per_frame']:.1f} on one device "
                     f"({d['ratio']:.2f})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
