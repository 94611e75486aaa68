"""Benchmark: does memory stay flat in the length of the video?

The engine: streams a long video through it two ways, each in a fresh process so that
each has its own peak:
  step    `Clockwork.step`, frame by frame, keeping only the class map;
  chunks  `Clockwork.chunks`, `--chunk` frames per scan with the state carried, as
          `clockwork.run` and the evaluator do for long videos.
The input video is made (on the host) before anything is measured. The peak resident
memory (and, on a GPU, the device's peak bytes in use) is read after `--early`
frames and again at the end: flat means the end is within a few % of the early one.

The evaluator (`--evaluate`): `evaluate.py --data video:FILE` (decoded, run and scored
part by part) on the sample's vtest.avi (768x576, 795 frames) and on a synthetic
`--eval_size` video of `--eval_frames` frames that the benchmark writes, each in a fresh
process with `--max_frames` `--early` and then all of it: the peak RSS of the whole run,
after `--early` frames against after all of them.

    python bench/memory.py                     # 2000 frames, 32x32, VGG16 widths
    python bench/memory.py --narrow --frames 500 --json memory.json
    python bench/memory.py --evaluate --early 100 --eval_frames 2000   # tiny config's net
    python bench/memory.py --modes --evaluate --schedule oracle        # the evaluator only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import device_info, emit, load_config
from cwfcn import clockwork, compilation, evaluate_lib, hostmem, model
from cwfcn.data import datasets, samples, video

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


def _synthetic_video(path: Path, frames: int, size: tuple[int, int]) -> None:
    """A slow pan over a random scene of blocks, `frames` frames of `size` (H, W), written
    frame by frame (never whole) to `path`."""
    height, width = size
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (height // 16 + 1, (width + frames) // 16 + 1, 3), np.uint8)
    scene = blocks.repeat(16, 0).repeat(16, 1)[:height]
    with video.VideoWriter(path, fps=25) as writer:
        for t in tqdm(range(frames), desc=f"writing {path.name}", file=sys.stderr):
            writer.write(scene[:, t : t + width])


def measure_evaluation(args) -> dict:
    """One `evaluate.py --data video:FILE --max_frames N` run in this process: its peak RSS."""
    hostmem.limit_arenas()  # as evaluate.py runs: its arenas, its compilation cache
    compilation.enable_cache()
    with contextlib.redirect_stdout(io.StringIO()):  # the table: not this benchmark's output
        rows = evaluate_lib.evaluate(load_config(args.config), schedule=args.schedule,
                                     data=f"video:{args.eval_child}",
                                     checkpoint_path=args.checkpoint,
                                     max_frames=args.max_frames)
    return {"frames": rows[0]["frames"], "rss_mb": _peaks()["rss_mb"],
            "ms_per_frame": rows[0]["ms_per_frame"]}


def evaluations(args) -> list[dict]:
    """Each video's peak RSS after `args.early` frames and after all, a process each."""
    if not args.checkpoint:  # train (or find) the config's model here, not in a measured child
        config = load_config(args.config)
        evaluate_lib.load_net(config, None, datasets.mean_bgr_of(config))
    with tempfile.TemporaryDirectory(prefix="cwfcn-memory-") as folder:
        height, width = (int(x) for x in args.eval_size.split("x"))
        videos = {}
        if "synthetic" in args.eval_videos:
            path = videos[f"synthetic-{height}p.mp4"] = Path(folder) / f"synthetic-{height}p.mp4"
            _synthetic_video(path, args.eval_frames, (height, width))
        if "vtest" in args.eval_videos:
            videos["vtest.avi"] = samples.fetch(["videos"])["videos"] / "vtest.avi"
        return [_evaluation(name, path, args) for name, path in videos.items()]


def _evaluation(name: str, path: Path, args) -> dict:
    """One video's evaluations, its first `args.early` frames and then all, each a child."""
    runs = {}
    for part, frames in (("early", args.early), ("end", None)):
        child = [sys.executable, __file__, "--eval_child", str(path), "--config", args.config,
                 "--schedule", args.schedule,
                 *(["--checkpoint", args.checkpoint] if args.checkpoint else []),
                 *(["--max_frames", str(frames)] if frames else [])]
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name}: the evaluation failed:\n{done.stderr[-2000:]}")
        runs[part] = json.loads(done.stdout.strip().splitlines()[-1])
    probe = video.probe(path)
    return {"video": name, "size": [probe["height"], probe["width"]], **runs,
            "rss_growth": runs["end"]["rss_mb"] / runs["early"]["rss_mb"] - 1}


def _table(result: dict) -> str:
    head = (f"{'mode':<8}{'frames':>8}{'RSS early MB':>14}{'RSS end MB':>12}{'growth':>9}"
            f"{'device end MB':>15}{'compiles':>10}")
    lines = [f"\n{result['device']}, {result['size']}x{result['size']}, widths "
             f"{result['widths']}, {result['schedule']}, early = {result['early']} frames",
             head, "-" * len(head)] if result["modes"] else []
    for r in result["modes"]:
        dev = r["end"]["device_mb"]
        lines.append(f"{r['mode']:<8}{r['frames']:>8}{r['early']['rss_mb']:>14.1f}"
                     f"{r['end']['rss_mb']:>12.1f}{r['rss_growth']:>+9.1%}"
                     f"{'-' if dev is None else f'{dev:.1f}':>15}"
                     f"{r['compiles']['step'] + r['compiles']['scan']:>10}")
    for r in result.get("evaluations", []):
        if r is result["evaluations"][0]:
            head = (f"{'video':<20}{'size':>10}{'frames':>13}{'RSS early MB':>14}"
                    f"{'RSS end MB':>12}{'growth':>9}")
            lines += [f"\nevaluate.py --data video:FILE, {result['config']}, "
                      f"{result['schedule']}", head, "-" * len(head)]
        lines.append(f"{r['video']:<20}{'x'.join(map(str, r['size'])):>10}"
                     f"{r['early']['frames']:>6} / {r['end']['frames']:<5}"
                     f"{r['early']['rss_mb']:>14.1f}{r['end']['rss_mb']:>12.1f}"
                     f"{r['rss_growth']:>+9.1%}")
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
    parser.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES),
                        help="the engine's modes measured (none: only --evaluate)")
    parser.add_argument("--mode", choices=MODES, help="run one mode here (internal)")
    parser.add_argument("--evaluate", action="store_true",
                        help="also measure evaluate.py on video files (see above)")
    parser.add_argument("--config", default="configs/tiny.py",
                        help="the evaluated net's config (--evaluate)")
    parser.add_argument("--eval_frames", type=int, default=2000,
                        help="length of the synthetic video (--evaluate)")
    parser.add_argument("--eval_size", default="720x1280", help="its HxW (--evaluate)")
    parser.add_argument("--eval_videos", nargs="+", default=["vtest", "synthetic"],
                        choices=["vtest", "synthetic"], help="what --evaluate runs")
    parser.add_argument("--checkpoint", help="the evaluated net's weights (--evaluate; "
                        "default: the config's own model, trained once and cached)")
    parser.add_argument("--eval_child", help="evaluate this video here (internal)")
    parser.add_argument("--max_frames", type=int, help="with --eval_child (internal)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    clockwork.parse_schedule(args.schedule)  # fail before any work on a bad name
    if args.eval_child:  # the child: one evaluation, JSON on stdout
        print(json.dumps(measure_evaluation(args)))
        return {}
    if not 0 < args.early < min(args.frames, args.eval_frames if args.evaluate else args.frames):
        parser.error("need 0 < --early < --frames (and < --eval_frames)")
    if args.mode:  # the child: one mode, JSON on stdout
        print(json.dumps(measure(args.mode, args)))
        return {}
    child = [sys.executable, __file__, "--frames", str(args.frames), "--early", str(args.early),
             "--size", str(args.size), "--chunk", str(args.chunk), "--schedule", args.schedule,
             *(["--narrow"] if args.narrow else [])]
    modes = []
    for mode in args.modes:  # a fresh process each, so that each peak is its own
        done = subprocess.run([*child, "--mode", mode],
                              capture_output=True, text=True, check=True)
        modes.append(json.loads(done.stdout.strip().splitlines()[-1]))
    widths = model.NARROW_WIDTHS if args.narrow else model.VGG16_WIDTHS
    result = {"benchmark": "memory", **device_info(), "size": args.size,
              "widths": list(widths), "schedule": args.schedule, "early": args.early,
              "modes": modes}
    if args.evaluate:
        result.update(config=args.config, evaluations=evaluations(args))
    emit(result, _table(result), args.json)
    return result


if __name__ == "__main__":
    main()
