"""Benchmark: a live budget that holds, the latency a live user feels, the exported step.

On the real clips bikes.mp4 (a pan that speeds up) and vtest.avi (a fixed camera), downscaled:
  - budget: theta calibrated on the first --calibration frames to fire S3 on --rate of them
    ("fixed"), against the same start under the closed-loop budget (`adaptive:theta@R/W`,
    `cwfcn.control`), and against a fixed theta calibrated on the whole clip to the budget's
    own mean rate ("fixed, same rate": the best a fixed theta could do, known only after the
    fact). Per row: the mean rate, its range over every window of W frames, the fraction of
    windows within R +- e, and the mean IU of its segmentation against oracle's (no labels:
    agreement with the full net is the accuracy a schedule can lose);
  - latency: each schedule run live over the first clip (`cwfcn.live.run_live` on a file:
    decoded, preprocessed, stepped and waited for, frame by frame), p50/p90/p99/max and
    jitter of the per-frame latency, and the median of the frames where S3 fired against
    the others: keyframe schedules have uneven latency, which a mean hides;
  - export: the exported step (`cwfcn.export`, StableHLO, cpu) against `Clockwork.step`, ms
    per frame, round-robin.

The net is the config's: random by default (its score clock moves, and speed does not depend
on weights), `--checkpoint` weights, or `--trained` the config's own model (evaluate.py's).

    python bench/live.py                          # configs/tiny.py, 200 frames at 1/4 size
    python bench/live.py --config configs/sample.py --trained --json live.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from flax import nnx
from PIL import Image
from tqdm import tqdm

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import device_info, emit, load_config, round_robin
from cwfcn import (
    calibrate,
    clockwork,
    config_check,
    control,
    evaluate_lib,
    export,
    live,
    metrics,
    model,
    train_lib,
)
from cwfcn import schedules as schedules_lib
from cwfcn.data import datasets, samples, stream, video

VIDEOS = ("bikes.mp4", "vtest.avi")
LATENCY_SCHEDULES = ("oracle", "skip", "alternating", "pipeline3")


def _frames(path: Path, count: int, scale: float) -> np.ndarray:
    """The first `count` frames of a clip, resized by `scale`: uint8 RGB `[T, h, w, 3]`."""
    frames = video.read_video(path, count)
    h, w = frames.shape[1:3]
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def _agreement(preds: np.ndarray, reference: np.ndarray, num_classes: int) -> float:
    """Mean IU of `preds` against `reference` taken as labels (both int `[T, H, W]`)."""
    return metrics.scores(metrics.confusion(reference, preds, num_classes))["mean_iu"]


def _budget_rows(net, frames: np.ndarray, rate: float, window: int, tol: float,
                 calibration: int) -> list[dict]:
    """Fixed (calibrated on the start), budget, fixed (same mean rate): see the docstring."""
    maps = calibrate.clock_maps(net, frames)
    start = calibrate.theta_for_rate(maps[:calibration], rate)
    oracle = np.asarray(clockwork.run(net, frames, "oracle").scores).argmax(-1)

    def row(name: str, spec: str) -> dict:
        out = clockwork.run(net, frames, spec)
        fired = np.asarray(out.fired)[:, -1]
        rates = control.window_rates(fired, window)
        budget = schedules_lib.parse_schedule(f"adaptive@{rate}/{window}/{tol}")
        return {"row": name, "schedule": clockwork.parse_schedule(spec).name,
                "rate": float(fired.mean()), "window_min": float(rates.min()),
                "window_max": float(rates.max()),
                "within": control.within_budget(rates, budget),
                "iu_vs_oracle": _agreement(np.asarray(out.scores).argmax(-1), oracle,
                                           net.num_classes)}

    held = row("budget", f"adaptive:{start}@{rate}/{window}/{tol}")
    same = calibrate.theta_for_rate(maps, held["rate"])
    return [row("fixed", f"adaptive:{start}"), held, row("fixed, same rate", f"adaptive:{same}")]


def _latency_rows(net, frames: np.ndarray, mean_bgr, specs: list[str]) -> list[dict]:
    """Each schedule over the clip as a live run sees it (`live.run_live` on a file: every
    frame decoded, preprocessed, stepped and waited for; compiling untimed)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mkv"
        video.write_video(path, frames, fps=25)
        for spec in tqdm(specs, desc="latency", file=sys.stderr):
            with stream.FrameReader(path) as reader:
                row = live.run_live(net, reader, spec, mean_bgr=mean_bgr)
            rows.append({"schedule": row["schedule"], "frames": row["frames"],
                         "fired": row["fired"][-1], **row["latency_ms"],
                         "fired_ms": row["latency_fired_ms"],
                         "cached_ms": row["latency_cached_ms"]})
    return rows


def _export_rows(net, frames: np.ndarray, spec: str, repeats: int) -> dict:
    """ms per frame of the exported step and of `Clockwork.step` over the clip."""
    cw = clockwork.Clockwork(net, spec)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.bin"
        export.export_step(net, spec, frames.shape[1:], path, platforms=("cpu",))
        exported = export.load(path)

    def clockwork_steps():
        state = cw.init(frames.shape[1:])
        for frame in frames:
            state, scores, _ = cw.step(state, frame)
        return scores

    def exported_steps():
        state = exported.init()
        for frame in frames:
            state, scores, _ = exported.step(state, frame)
        return scores

    times = round_robin({"Clockwork.step": clockwork_steps, "exported": exported_steps},
                        repeats, desc="export rounds")
    per_frame = {k: 1e3 * v["wall_s"] / len(frames) for k, v in times.items()}
    return {"schedule": cw.schedule.name, "ms_per_frame": per_frame,
            "exported_over_step": per_frame["exported"] / per_frame["Clockwork.step"]}


def _net(config_path: str, checkpoint: str | None, trained: bool):
    """The config's net (random; from `checkpoint`; or with `trained` the config's own model,
    trained once and cached, as evaluate.py's) and its data set's mean (BGR)."""
    config = load_config(config_path)
    config_check.check(config)
    mean = datasets.mean_bgr_of(config)
    if checkpoint or trained:
        return evaluate_lib.load_net(config, checkpoint, mean)[0], mean
    return train_lib.build_net(config, nnx.Rngs(config.seed)), mean


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/tiny.py", help="the net's config file")
    parser.add_argument("--checkpoint", default=None, help="weights (.caffemodel, .pth, .onnx)")
    parser.add_argument("--trained", action="store_true",
                        help="the config's own model, trained once and cached (evaluate.py's)")
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=VIDEOS,
                        help="the clips (the latency and export parts use the first)")
    parser.add_argument("--frames", type=int, default=200, help="frames of each clip")
    parser.add_argument("--scale", type=float, default=0.25, help="resize factor of the clips")
    parser.add_argument("--rate", type=float, default=0.5, help="the budget's target rate R")
    parser.add_argument("--window", type=int, default=schedules_lib.DEFAULT_WINDOW)
    parser.add_argument("--tolerance", type=float, default=schedules_lib.DEFAULT_TOLERANCE)
    parser.add_argument("--calibration", type=int, default=30,
                        help="frames the fixed theta is calibrated on (a stream's start)")
    parser.add_argument("--latency_frames", type=int, default=60)
    parser.add_argument("--latency", nargs="+", default=list(LATENCY_SCHEDULES),
                        help="the schedules timed live, beside the fixed and budget adaptive")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the export timing")
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    net, mean = _net(args.config, args.checkpoint, args.trained)
    paths = samples.fetch(["videos"])["videos"]
    budget, clips, raw = {}, {}, {}
    for name in tqdm(args.videos, desc="budget", file=sys.stderr):
        raw[name] = _frames(paths / name, args.frames, args.scale)
        clips[name] = np.asarray(model.preprocess(raw[name], mean))
        budget[name] = _budget_rows(net, clips[name], args.rate, args.window,
                                    args.tolerance, args.calibration)
    first = clips[args.videos[0]][: args.latency_frames]
    held = budget[args.videos[0]][1]["schedule"]
    specs = [*args.latency, budget[args.videos[0]][0]["schedule"], held]
    result = {
        **device_info(), "config": args.config, "frames": args.frames, "scale": args.scale,
        "rate": args.rate, "window": args.window, "tolerance": args.tolerance,
        "frame_shapes": {k: list(v.shape[1:]) for k, v in clips.items()},
        "budget": budget,
        "latency": _latency_rows(net, raw[args.videos[0]][: args.latency_frames], mean, specs),
        "export": _export_rows(net, first, held, args.repeats),
    }
    emit(result, _table(result), args.json)
    return result


def _table(result: dict) -> str:
    lines = [f"budget: R = {result['rate']}, windows of {result['window']} frames, "
             f"+- {result['tolerance']}",
             f"{'clip':<11}{'row':<18}{'schedule':<28}{'rate':>6}{'win min':>9}{'win max':>9}"
             f"{'within':>8}{'IU vs oracle':>14}"]
    for clip, rows in result["budget"].items():
        for r in rows:
            lines.append(f"{clip:<11}{r['row']:<18}{r['schedule']:<28}{r['rate']:>6.2f}"
                         f"{r['window_min']:>9.2f}{r['window_max']:>9.2f}{r['within']:>8.2f}"
                         f"{100 * r['iu_vs_oracle']:>14.1f}")
    lines += ["", f"latency per frame (ms), {next(iter(result['budget']))}, frame by frame",
              f"{'schedule':<28}{'S3 rate':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
              f"{'jitter':>8}{'p99/p50':>9}{'S3/other':>14}"]

    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    for r in result["latency"]:
        lines.append(f"{r['schedule']:<28}{r['fired']:>8.2f}{r['p50']:>8.1f}{r['p90']:>8.1f}"
                     f"{r['p99']:>8.1f}{r['max']:>8.1f}{r['jitter']:>8.1f}{r['uneven']:>9.2f}"
                     f"{ms(r['fired_ms']) + '/' + ms(r['cached_ms']):>14}")
    e = result["export"]
    lines += ["", f"exported step vs Clockwork.step ({e['schedule']}): "
              + ", ".join(f"{k} {v:.2f} ms/frame" for k, v in e["ms_per_frame"].items())
              + f"; ratio {e['exported_over_step']:.2f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
