"""Benchmark: is reading prepared records faster than decoding the raw layouts, and does the
training input keep ahead of the train step?

It writes raw layouts of real frame sizes in a temporary directory (YouTube-Objects shots:
JPEG frames and masks; NYUD photos: PNG and .mat labels), prepares them
(`cwfcn.data.prepare`), then, in one run, round-robin:
  - frames/s of the videos read through `--data youtube` (JPEG decoding, resizing to 500 px,
    thresholding the masks) against `--data tfds:cwfcn_youtube/shots` (the prepared records);
  - images/s of the training input (`training.make_input`, the grain pipeline over the
    prepared NYUD photos: shuffle, flip, batch, read-ahead) against the train step's
    (`train_lib.train_step` on those images), so the input never starves the step.

    python bench/data.py                                  # VGG16 widths, 425 x 560 photos
    python bench/data.py --narrow --shots 2 --photos 4 --json data.json
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.io
from flax import nnx
from PIL import Image

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Stepping, device_info, emit, round_robin
from configs import default
from cwfcn import model, train_lib
from cwfcn.data import datasets, prepare, sources, training

SUBSAMPLE = 10  # YouTube-Objects: a mask every 10th raw frame


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth photo-like uint8 RGB [h, w, 3] (JPEG decodes it at a photo's speed)."""
    coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
    noise = rng.integers(0, 24, (h, w, 3), dtype=np.uint8)
    return np.asarray(image) // 2 + noise


def write_youtube(root: Path, shots: int, masks: int, size: tuple[int, int], seed: int) -> int:
    """YouTube-Objects shots (`cwfcn.data.youtube`'s layout): `masks` masked frames 10 apart,
    each with its JPEG frame in the v1 tree. Returns the number of masked frames."""
    rng = np.random.default_rng(seed)
    h, w = size
    for s in range(shots):
        shot = Path("cat", "data", "0001", "shots", f"{s + 1:03d}")
        labels, frames = root / "youtube_masks" / shot / "labels", root / "v1" / shot
        labels.mkdir(parents=True)
        frames.mkdir(parents=True)
        for m in range(masks):
            n = 1 + SUBSAMPLE * m
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4: 3 * h // 4, (m * w) // (2 * masks): w // 2 + (m * w) // (2 * masks)] = 255
            Image.fromarray(mask).save(labels / f"{n:05d}.jpg", quality=95)
            Image.fromarray(_scene(rng, h, w)).save(frames / f"frame{n:04d}.jpg", quality=90)
    return shots * masks


def write_nyud(root: Path, photos: int, size: tuple[int, int], seed: int) -> None:
    """NYUD photos (`cwfcn.data.nyud`'s layout): PNG images, 40-class .mat labels, test.txt."""
    rng = np.random.default_rng(seed)
    h, w = size
    (root / "data" / "images").mkdir(parents=True)
    (root / "segmentation").mkdir()
    ids = [f"{5001 + i:04d}" for i in range(photos)]
    for image_id in ids:
        Image.fromarray(_scene(rng, h, w)).save(root / "data" / "images" / f"img_{image_id}.png")
        segmentation = rng.integers(0, 41, (-(-h // 8), -(-w // 8)), dtype=np.uint8).repeat(8, 0)
        segmentation = segmentation.repeat(8, 1)[:h, :w]
        scipy.io.savemat(root / "segmentation" / f"img_{image_id}.mat",
                         {"segmentation": segmentation})
    (root / "test.txt").write_text("".join(f"{i}\n" for i in ids))


def _read_all(source: sources.Source) -> int:
    """Reads every frame and label map of every video; returns the frames read."""
    count = 0
    for video in source.videos:
        frames = np.asarray(video.frames)
        video.label_maps()
        count += len(frames)
    return count


def _train_config(args, data_dir: Path):
    config = default.get_config()
    config.data.name = "tfds:cwfcn_nyud/images:test"
    config.data.root = str(data_dir)
    config.data.split = "test"
    config.data.workers = args.workers
    config.model.widths = "narrow" if args.narrow else "vgg16"
    config.train.batch_size = 1
    return config


def _input_rate(config, steps: int) -> float:
    """Images/s of the training input over `steps` batches, read-ahead started first."""
    reader = training.make_input(config).open(steps + 1)
    next(reader)  # the first batch waits for the workers to start
    start = time.perf_counter()
    images = sum(len(next(reader)[0]) for _ in range(steps))
    rate = images / (time.perf_counter() - start)
    reader.close()
    return rate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=4, help="YouTube shots written")
    parser.add_argument("--masks", type=int, default=6, help="masked frames per shot")
    parser.add_argument("--frame-size", type=int, nargs=2, default=(360, 640),
                        metavar=("H", "W"), help="raw YouTube frame size")
    parser.add_argument("--photos", type=int, default=8, help="NYUD photos written")
    parser.add_argument("--photo-size", type=int, nargs=2, default=(425, 560),
                        metavar=("H", "W"), help="NYUD photo size (its labelled crop)")
    parser.add_argument("--steps", type=int, default=8, help="train steps and input batches timed")
    parser.add_argument("--workers", type=int, default=0, help="training input worker processes")
    parser.add_argument("--narrow", action="store_true", help="the narrow net (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp) / "raw", Path(tmp) / "prepared"
        masked = write_youtube(raw / "youtube", args.shots, args.masks, tuple(args.frame_size), 0)
        write_nyud(raw / "nyud", args.photos, tuple(args.photo_size), 1)
        quiet = lambda message: None
        built = prepare.prepare("cwfcn_youtube/shots", data_dir=str(prepared),
                                manual_dir=str(raw / "youtube"), progress=False, log=quiet)
        built += prepare.prepare("cwfcn_nyud/images", data_dir=str(prepared),
                                 manual_dir=str(raw / "nyud"), progress=False, log=quiet)
        raw_source = sources.open_source("youtube", data_dir=str(raw / "youtube"))
        tfds_source = sources.open_source("tfds:cwfcn_youtube/shots", data_dir=str(prepared))
        frames = _read_all(raw_source)
        if _read_all(tfds_source) != frames:
            raise RuntimeError("the prepared shots hold other frames than the raw ones")
        reads = round_robin({"raw": lambda: _read_all(raw_source),
                             "prepared": lambda: _read_all(tfds_source)}, args.repeats,
                            desc="reading")

        config = _train_config(args, prepared)
        net = train_lib.build_net(config, nnx.Rngs(0))
        graphdef, params = nnx.split(net)
        tx = train_lib.make_optimizer(config)
        opt_state = tx.init(params)
        images, labels = training.make_batches(config)(0)
        x = model.preprocess(images, datasets.mean_bgr_of(config))
        y = jnp.asarray(labels, jnp.int32)
        step = Stepping(functools.partial(train_lib.train_step, graphdef=graphdef, tx=tx),
                        (params, opt_state), (x, y, jax.random.key(0)))
        step_s = round_robin({"train step": step}, args.repeats, desc="train step")["train step"]
        input_rate = max(_input_rate(config, args.steps) for _ in range(args.repeats))

    raw_fps = frames / reads["raw"]["wall_s"]
    tfds_fps = frames / reads["prepared"]["wall_s"]
    step_rate = len(images) / step_s["wall_s"]
    result = {
        **device_info(),
        "frames": frames, "masked_frames": masked, "frame_size": list(args.frame_size),
        "raw_frames_per_s": raw_fps, "prepared_frames_per_s": tfds_fps,
        "prepared_speedup": tfds_fps / raw_fps,
        "photo_size": list(args.photo_size), "widths": config.model.widths,
        "workers": args.workers,
        "input_images_per_s": input_rate, "train_step_images_per_s": step_rate,
        "input_headroom": input_rate / step_rate,
        "prepare_s": {p.name: p.seconds for p in built},
    }
    table = "\n".join([
        f"{'what':<36} {'per s':>10} {'ratio':>8}",
        f"{'raw youtube frames (decode+resize)':<36} {raw_fps:>10.1f} {1.0:>8.2f}",
        f"{'prepared youtube frames (records)':<36} {tfds_fps:>10.1f} {tfds_fps / raw_fps:>8.2f}",
        f"{'train step images (' + config.model.widths + ')':<36} {step_rate:>10.2f} {1.0:>8.2f}",
        f"{'training input images (grain)':<36} {input_rate:>10.1f} "
        f"{input_rate / step_rate:>8.1f}",
    ])
    emit(result, table, args.json)
    return result


if __name__ == "__main__":
    main()
