"""Benchmark: does the batched adaptive engine keep the clockwork saving over many streams?

B streams of scenes that cut (a new random scene) or hold (the same frame): the adaptive
clock fires S3 on the cuts, per stream. For each cut rate, `batched.run_batch` with the
adaptive schedule is timed against the oracle on the same batch; the time fraction of
oracle should track the FLOP fraction that the fired table implies (S1 and S2 run on
every frame, so it is 1 - (1 - S3 fired) x S3's FLOP share). With `--vmap`, `jax.vmap`
of the single-video engine is timed too: its per-stream `lax.cond` becomes a select
that computes S3 on every stream, so it saves nothing.

    python bench/batched.py                              # B=8, 256x256, T=6, VGG16 widths
    python bench/batched.py --rates 0.25 0.5 --vmap --json out.json
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import device_info, emit, round_robin
from cwfcn import batched, clockwork, cost, model
from cwfcn.data import datasets


def _streams(batch: int, frames: int, size: int, rate: float, seed: int) -> np.ndarray:
    """B videos that cut to a new scene on round(rate x B x (T - 1)) of the frames after the
    first (chosen at random) and hold the previous frame on the others.

    Returns:
      float32 `[B, T, size, size, 3]`, preprocessed.
    """
    rng = np.random.default_rng(seed)
    slots = batch * (frames - 1)
    cuts = np.zeros(slots, bool)
    cuts[rng.choice(slots, round(rate * slots), replace=False)] = True
    cuts = np.concatenate([np.ones((batch, 1), bool), cuts.reshape(batch, frames - 1)], 1)
    videos = np.empty((batch, frames, size, size, 3), np.uint8)
    for b in range(batch):
        for t in range(frames):
            if cuts[b, t]:  # a smooth random scene: blocks of 16 px
                coarse = rng.uniform(0, 255, (size // 16 + 1, size // 16 + 1, 3))
                scene = np.kron(coarse, np.ones((16, 16, 1)))[:size, :size]
            videos[b, t] = scene
    return np.asarray(model.preprocess(videos, datasets.get("voc").mean_bgr))


def _vmapped_run(net, videos, schedule: str):
    """`jax.vmap` of the single-video engine: its clock's `lax.cond`s become selects."""
    return jax.jit(jax.vmap(lambda video: clockwork.run(net, video, schedule)))(videos)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="streams (B)")
    parser.add_argument("--size", type=int, default=256, help="frame height and width (px)")
    parser.add_argument("--frames", type=int, default=6, help="frames per stream (T)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.5, 0.8],
                        help="fractions of frames after the first that cut to a new scene")
    parser.add_argument("--theta", type=float, default=0.02,
                        help="the adaptive threshold (a hold changes nothing, a cut changes more)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds, round-robin; each run keeps its fastest")
    parser.add_argument("--vmap", action="store_true",
                        help="also time jax.vmap of clockwork's engine at the first rate")
    parser.add_argument("--narrow", action="store_true", help="narrow net (smoke test)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.frames < 2 or not all(0 <= r <= 1 for r in args.rates):
        raise ValueError("need --batch >= 1, --frames >= 2 and --rates in [0, 1]")
    schedule = f"adaptive:{args.theta}"
    clockwork.parse_schedule(schedule)  # fail before any work on a bad theta

    widths = model.NARROW_WIDTHS if args.narrow else model.VGG16_WIDTHS
    net = model.FCN8s(21, widths=widths, zero_init_scores=False, rngs=nnx.Rngs(0))
    videos = {r: _streams(args.batch, args.frames, args.size, r, seed=i)
              for i, r in enumerate(args.rates)}
    flops = cost.stage_flops(net, (args.size, args.size, 3))
    first = args.rates[0]
    runs = {"oracle": functools.partial(batched.run_batch, net, videos[first], "oracle")}
    runs.update({r: functools.partial(batched.run_batch, net, videos[r], schedule)
                 for r in args.rates})
    if args.vmap:
        runs["vmap"] = functools.partial(_vmapped_run, net, videos[first], schedule)
    outputs = {name: fn() for name, fn in runs.items()}
    times = round_robin({name: lambda f=fn: f().scores for name, fn in runs.items()},
                        args.repeats)
    best = {name: t["wall_s"] for name, t in times.items()}

    rows = []
    for name in runs:
        if name == "oracle":
            continue
        fired = np.asarray(outputs[name].fired).reshape(-1, 3)
        rows.append({
            "run": "vmap(clockwork.run)" if name == "vmap" else "run_batch",
            "cut_rate": first if name == "vmap" else name,
            "s3_fired": float(fired[:, 2].mean()),
            "flop_fraction": cost.flop_fraction(fired, flops),
            "time_fraction": best[name] / best["oracle"],
            "ms_per_frame": 1e3 * best[name] / (args.batch * args.frames),
        })
        rows[-1]["gap"] = rows[-1]["time_fraction"] - rows[-1]["flop_fraction"]
    result = {
        "benchmark": "batched",
        **device_info(),
        "batch": args.batch, "size": args.size, "frames": args.frames, "schedule": schedule,
        "widths": list(widths),
        "s3_flop_share": flops.stages[2] / flops.total,
        "oracle_ms_per_frame": 1e3 * best["oracle"] / (args.batch * args.frames),
        "rows": rows,
    }
    emit(result, _table(result), args.json)
    return result


def _table(result: dict) -> str:
    head = (f"{'run':<22}{'cut rate':>9}{'S3 fired':>10}{'FLOP frac':>11}{'time frac':>11}"
            f"{'gap':>8}{'ms/frame':>10}")
    lines = [f"\n{result['device']}, B={result['batch']}, {result['size']}x{result['size']}, "
             f"T={result['frames']}, {result['schedule']}, S3 = {result['s3_flop_share']:.3f} "
             f"of the FLOPs, oracle {result['oracle_ms_per_frame']:.1f} ms per stream-frame",
             head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(f"{r['run']:<22}{r['cut_rate']:>9.2f}{r['s3_fired']:>10.3f}"
                     f"{r['flop_fraction']:>11.3f}{r['time_fraction']:>11.3f}{r['gap']:>+8.3f}"
                     f"{r['ms_per_frame']:>10.1f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
