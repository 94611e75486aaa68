"""Benchmark: does memory stay flat in the length of the video?

Streams a long video through the engine two ways, each in a fresh process so that
each has its own peak:
  step    `Clockwork.step`, frame by frame, keeping only the class map;
  chunks  `Clockwork.chunks`, `--chunk` frames per scan with the state carried, as
          `clockwork.run` and the evaluator do for long videos.
The input video is made (on the host) before anything is measured. The peak resident
memory (and, on a GPU, the device's peak bytes in use) is read after `--early`
frames and again at the end: flat means the end is within a few % of the early one.

    python bench/memory.py                     # 2000 frames, 32x32, VGG16 widths
    python bench/memory.py --narrow --frames 500 --json memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import device_info, emit
from cwfcn import clockwork, model
from cwfcn.data import datasets

MODES = ("step", "chunks")


def _peaks() -> dict[str, float | None]:
    """Peak RSS of this process so far (MB) and the device's peak bytes in use (MB)."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    stats = jax.devices()[0].memory_stats() or {}
    device = stats.get("peak_bytes_in_use")
    return {"rss_mb": rss_kb / 1024, "device_mb": None if device is None else device / 2**20}


def _video(frames: int, size: int) -> np.ndarray:
    """A slow pan over a random scene, preprocessed: float32 `[T, size, size, 3]` (host)."""
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (size, size + frames, 3), dtype=np.uint8)
    video = np.stack([scene[:, t : t + size] for t in range(frames)])
    return np.asarray(model.preprocess(video, datasets.get("voc").mean_bgr))


def measure(mode: str, args) -> dict:
    """Runs one mode in this process; peaks after `args.early` frames and at the end."""
    widths = model.NARROW_WIDTHS if args.narrow else model.VGG16_WIDTHS
    net = model.FCN8s(21, widths=widths, rngs=nnx.Rngs(0))
    video = _video(args.frames, args.size)
    cw = clockwork.Clockwork(net, args.schedule)
    argmax = jax.jit(lambda s: jnp.argmax(s, -1))
    early, done = None, 0
    bar = tqdm(total=args.frames, desc=mode, file=sys.stderr)
    if mode == "step":
        state = cw.init(video.shape[1:])
        for frame in video:
            state, scores, _ = cw.step(state, frame)
            np.asarray(argmax(scores))  # what a consumer keeps: the class map, on the host
            done += 1
            bar.update()
            if done == args.early:
                early = _peaks()
    else:
        for out in cw.chunks(video, args.chunk):
            np.asarray(argmax(out.scores))
            done += len(out.fired)
            bar.update(len(out.fired))
            if early is None and done >= args.early:
                early = _peaks()
    bar.close()
    end = _peaks()
    return {"mode": mode, "frames": done, "early_frames": args.early, "early": early,
            "end": end, "rss_growth": end["rss_mb"] / early["rss_mb"] - 1,
            "compiles": clockwork.compile_counts()}


def _table(result: dict) -> str:
    head = (f"{'mode':<8}{'frames':>8}{'RSS early MB':>14}{'RSS end MB':>12}{'growth':>9}"
            f"{'device end MB':>15}{'compiles':>10}")
    lines = [f"\n{result['device']}, {result['size']}x{result['size']}, widths "
             f"{result['widths']}, {result['schedule']}, early = {result['early']} frames",
             head, "-" * len(head)]
    for r in result["modes"]:
        dev = r["end"]["device_mb"]
        lines.append(f"{r['mode']:<8}{r['frames']:>8}{r['early']['rss_mb']:>14.1f}"
                     f"{r['end']['rss_mb']:>12.1f}{r['rss_growth']:>+9.1%}"
                     f"{'-' if dev is None else f'{dev:.1f}':>15}"
                     f"{r['compiles']['step'] + r['compiles']['scan']:>10}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="video length")
    parser.add_argument("--early", type=int, default=50, help="first measurement, frames")
    parser.add_argument("--size", type=int, default=32, help="frame height and width (px)")
    parser.add_argument("--chunk", type=int, default=clockwork.DEFAULT_CHUNK,
                        help="frames per scan (chunks mode)")
    parser.add_argument("--schedule", default="adaptive:0.25")
    parser.add_argument("--narrow", action="store_true", help="narrow net")
    parser.add_argument("--mode", choices=MODES, help="run one mode here (internal)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    clockwork.parse_schedule(args.schedule)  # fail before any work on a bad name
    if not 0 < args.early < args.frames:
        parser.error("need 0 < --early < --frames")
    if args.mode:  # the child: one mode, JSON on stdout
        print(json.dumps(measure(args.mode, args)))
        return {}
    child = [sys.executable, __file__, "--frames", str(args.frames), "--early", str(args.early),
             "--size", str(args.size), "--chunk", str(args.chunk), "--schedule", args.schedule,
             *(["--narrow"] if args.narrow else [])]
    modes = []
    for mode in MODES:  # a fresh process each, so that each peak is its own
        done = subprocess.run([*child, "--mode", mode],
                              capture_output=True, text=True, check=True)
        modes.append(json.loads(done.stdout.strip().splitlines()[-1]))
    widths = model.NARROW_WIDTHS if args.narrow else model.VGG16_WIDTHS
    result = {"benchmark": "memory", **device_info(), "size": args.size,
              "widths": list(widths), "schedule": args.schedule, "early": args.early,
              "modes": modes}
    emit(result, _table(result), args.json)
    return result


if __name__ == "__main__":
    main()
