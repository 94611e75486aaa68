"""Benchmark: does each clockwork schedule save the time its FLOPs say it should?

Runs FCN-8s (VGG16 widths, random weights: speed does not depend on them) over a
translated video that pans and holds (`_video`) with every schedule, and prints,
per schedule, ms/frame, the fraction of frames each stage fired, the analytic
FLOP fraction of oracle and the measured time fraction of oracle, all from one
run. Also times `Clockwork.step` in a Python loop against the scan-based `run`.

    python bench/schedules.py                 # 500x500, the PASCAL size
    python bench/schedules.py --size 256 --frames 6 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from cwfcn import clockwork, cost, model
from cwfcn.data import translate

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
    return np.asarray(model.preprocess(pans[positions], model.MEAN_BGR["voc"]))


def _timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _bench_schedules(net, frames, names: list[str], repeats: int) -> list[dict]:
    """Times every schedule; the repeats go round-robin so that drift in the machine's
    load hits all schedules alike, and each keeps its fastest run."""
    runs = {name: functools.partial(clockwork.run, net, frames, name) for name in names}
    first = {name: _timed(lambda f=fn: f().scores) for name, fn in runs.items()}  # compiles
    best = dict.fromkeys(names, float("inf"))
    for _ in tqdm(range(repeats), desc="timing rounds", file=sys.stderr):
        for name, fn in runs.items():
            best[name] = min(best[name], _timed(lambda f=fn: f().scores))
    rows = []
    for name in names:
        fired = np.asarray(runs[name]().fired)
        rows.append({
            "schedule": clockwork.parse_schedule(name).name,
            "ms_per_frame": 1e3 * best[name] / len(frames),
            "compile_s": max(first[name] - best[name], 0.0),
            "fired": fired.mean(0).round(4).tolist(),
            "fired_frames": fired.sum(0).tolist(),
            "_fired": fired,
        })
    return rows


def _bench_stream(net, frames, repeats: int) -> float:
    """ms/frame of `Clockwork.step` called from Python, oracle schedule."""
    cw = clockwork.Clockwork(net, "oracle")

    def loop():
        state = cw.init(frames.shape[1:])
        for frame in frames:
            state, scores, _ = cw.step(state, frame)
        return scores

    _timed(loop)  # compile
    return 1e3 * min(_timed(loop) for _ in range(repeats)) / len(frames)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=500, help="frame height and width (px)")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (T)")
    parser.add_argument("--shift", type=int, default=16, help="translation per frame (px)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds; each schedule keeps its fastest")
    parser.add_argument("--schedules", nargs="+", default=list(DEFAULT_SCHEDULES))
    parser.add_argument("--narrow", action="store_true", help="narrow net (smoke test)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    for name in args.schedules:
        clockwork.parse_schedule(name)  # fail before any work on a bad name

    widths = model.NARROW_WIDTHS if args.narrow else model.VGG16_WIDTHS
    net = model.FCN8s(21, widths=widths, zero_init_scores=False, rngs=nnx.Rngs(0))
    frames = _video(args.size, args.frames, args.shift, seed=0)
    flops = cost.stage_flops(net, frames.shape[1:])

    rows = _bench_schedules(net, frames, args.schedules, args.repeats)
    for row in rows:
        row["flop_fraction"] = cost.flop_fraction(row.pop("_fired"), flops)
    oracle_ms = next((r["ms_per_frame"] for r in rows if r["schedule"] == "oracle"), None)
    for row in rows:
        row["time_fraction"] = row["ms_per_frame"] / oracle_ms if oracle_ms else None
        gap = None if oracle_ms is None else row["time_fraction"] - row["flop_fraction"]
        row["gap"] = gap
    stream_ms = _bench_stream(net, frames, args.repeats)

    result = {
        "benchmark": "schedules",
        "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
        "host": platform.node(),
        "jax": jax.__version__,
        "size": args.size,
        "frames": args.frames,
        "widths": list(widths),
        "flops_per_stage": list(flops.stages),
        "flops_fuse": flops.fuse,
        "schedules": rows,
        "stream_step_ms_per_frame": stream_ms,
        "run_oracle_ms_per_frame": oracle_ms,
    }
    _print_table(result)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return result


def _print_table(result: dict) -> None:
    head = f"{'schedule':<16}{'ms/frame':>10}{'fired S1/S2/S3':>18}{'FLOP frac':>11}"
    head += f"{'time frac':>11}{'gap':>8}{'compile s':>11}"
    print(f"\n{result['device']}, {result['size']}x{result['size']}, T={result['frames']}, "
          f"GFLOP/stage {[round(f / 1e9, 2) for f in result['flops_per_stage']]} "
          f"+ fuse {result['flops_fuse'] / 1e9:.3f}")
    print(head)
    print("-" * len(head))
    for r in result["schedules"]:
        fired = "/".join(f"{f:.2f}" for f in r["fired"])
        tf = "-" if r["time_fraction"] is None else f"{r['time_fraction']:.3f}"
        gap = "-" if r["gap"] is None else f"{r['gap']:+.3f}"
        print(f"{r['schedule']:<16}{r['ms_per_frame']:>10.1f}{fired:>18}"
              f"{r['flop_fraction']:>11.3f}{tf:>11}{gap:>8}{r['compile_s']:>11.1f}")
    run_ms = result["run_oracle_ms_per_frame"]
    print(f"streaming step (oracle, Python loop): {result['stream_step_ms_per_frame']:.1f} "
          f"ms/frame" + ("" if run_ms is None else f" vs run: {run_ms:.1f} ms/frame") + "\n")


if __name__ == "__main__":
    main()
