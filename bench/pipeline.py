"""Benchmark: is the evaluator as fast as the engine it drives?

`evaluation.evaluate_schedule` (what `evaluate.py` runs) decodes each video in a
background thread, computes its boundary bands there, runs the engine, and keeps
the confusion matrices on the device. Its frames/s (compiling excluded) is set
against the engine alone: `clockwork.run` on the same videos, decoded and
preprocessed beforehand, on the device. Same schedule, one run, round-robin.

    python bench/pipeline.py                         # the embedded sample, adaptive:0.25
    python bench/pipeline.py --data synthetic --size 256 --json pipeline.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import device_info, emit, round_robin, timed
from cwfcn import clockwork, evaluation, model
from cwfcn.data import datasets, protocol, sources, synthetic


def _source(args) -> sources.Source:
    if args.data == "sample":
        return sources.open_source("sample")
    videos = synthetic.scenes(seed=0, num_videos=args.videos, size=args.size, shift=16,
                              num_frames=6, num_classes=21)
    return sources.Source("synthetic", 21, datasets.get("voc").mean_bgr, videos,
                          protocol.form_whole)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("sample", "synthetic"), default="sample")
    parser.add_argument("--size", type=int, default=256, help="synthetic frame size (px)")
    parser.add_argument("--videos", type=int, default=4, help="synthetic videos")
    parser.add_argument("--schedule", default="adaptive:0.25")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed rounds; each side keeps its fastest")
    parser.add_argument("--narrow", action="store_true", help="narrow net (smoke test)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    schedule = clockwork.parse_schedule(args.schedule)

    widths = model.NARROW_WIDTHS if args.narrow else model.VGG16_WIDTHS
    net = model.FCN8s(21, widths=widths, zero_init_scores=False, rngs=nnx.Rngs(0))
    source = _source(args)
    mean = source.mean_bgr
    frames = [jax.device_put(model.preprocess(rgb, mean)) for rgb, _ in source]
    count = sum(len(f) for f in frames)

    def engine():
        return [clockwork.run(net, f, schedule).scores for f in frames]

    timed(engine)  # compile every shape
    walls = []

    def pipeline():
        walls.append(evaluation.evaluate_schedule(net, source.clips(schedule), schedule,
                                                  mean_bgr=mean)["wall_s"])
        return jnp.zeros(())

    times = round_robin({"engine": engine, "evaluate": pipeline}, args.repeats)
    engine_fps = count / times["engine"]["wall_s"]
    evaluate_fps = count / min(walls)  # its own clock leaves compiling out
    result = {"benchmark": "pipeline", **device_info(), "data": source.name,
              "schedule": schedule.name, "videos": len(frames), "frames": count,
              "widths": list(widths), "engine_fps": engine_fps, "evaluate_fps": evaluate_fps,
              "evaluate_of_engine": evaluate_fps / engine_fps}
    table = (f"\n{result['device']}, {source.name}: {len(frames)} videos, {count} frames, "
             f"{schedule.name}\nengine alone (clockwork.run): {engine_fps:.3f} frames/s\n"
             f"evaluate_schedule (decode, bands, metrics): {evaluate_fps:.3f} frames/s = "
             f"{result['evaluate_of_engine']:.1%} of the engine\n")
    emit(result, table, args.json)
    return result


if __name__ == "__main__":
    main()
