"""Benchmark: a fresh machine's first run of the README's main command.

Runs `python evaluate.py --schedule adaptive --theta 0.25` as a fresh machine does: in an
empty cache, so it trains the config's model (configs/sample.py) before it evaluates. The
samples are copied in from this machine's cache (fetched there first if missing), so no
network is needed; `--fetch` fetches them into the empty cache too. It reports the run's
wall time, its peak RSS, the size of the cache it leaves, the time it spent loading and
training, and the trained model's quality: mean IU and pixel accuracy on the street clip,
frames it was not trained on, and on its own photos. `--reference DIR` adds the same for
another checkpoint of the net (a model trained another way), measured in the same run.

    python bench/first_run.py
    python bench/first_run.py --reference ~/.cache/cwfcn/models/<key>  # an older model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_collections
from flax import nnx

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import device_info, emit, load_config
from cwfcn import checkpoint, evaluate_lib, train_lib
from cwfcn.data import samples

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ("vgg16_onnx", "voc_images", "street_clip")  # what the main job reads
# Quality sets: the labelled sample each is read from, and whether the model trained on it.
QUALITY = {"unseen (street clip)": "street_clip", "trained on (photos)": "voc_images"}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def quality(config: ml_collections.ConfigDict, net: nnx.Module) -> dict[str, dict[str, float]]:
    """The full net's mean IU and pixel accuracy on each set of `QUALITY`."""
    graphdef, params = nnx.split(net)
    paths = samples.fetch(list(QUALITY.values()))
    out = {}
    for name, sample in QUALITY.items():
        on = ml_collections.ConfigDict(config.to_dict())
        on.data.val_root, on.data.val_split = str(paths[sample]), "val"
        scores = train_lib.validate(on, graphdef, params)
        out[name] = {"mean_iu": scores["val_mean_iu"], "pixel_acc": scores["val_pixel_acc"]}
    return out


def first_run(cache: Path, config_path: str, args: list[str], fetch: bool) -> dict:
    """The main job in the empty `cache`: wall_s, peak_rss_gb, its results' timing."""
    if not fetch:  # as fetched: the copies hold their completion markers
        samples.fetch(list(SAMPLES))
        for name in SAMPLES:
            shutil.copytree(samples.resolve_cache_dir(None, os.environ) / name, cache / name)
    output = cache.parent / "results.json"
    command = [sys.executable, str(ROOT / "evaluate.py"), "--config", config_path,
               "--output", str(output), *args]
    print("running:", " ".join(command), file=sys.stderr)
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, samples.CACHE_ENV: str(cache)}, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"the main job failed (exit {done.returncode}); its messages are above")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    return {"wall_s": wall, "peak_rss_gb": peak_kib * 1024 / 1e9,
            "timing": json.loads(output.read_text())["timing"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "sample.py"),
                        help="the config whose model the first run trains")
    parser.add_argument("--args", default="--schedule adaptive --theta 0.25",
                        help="evaluate.py's arguments (the README's main command)")
    parser.add_argument("--fetch", action="store_true",
                        help="fetch the samples into the empty cache too (needs a network)")
    parser.add_argument("--reference", help="another checkpoint of the net, for its quality")
    parser.add_argument("--json", help="also write the JSON here")
    opts = parser.parse_args(argv)
    config = load_config(opts.config)
    with tempfile.TemporaryDirectory(prefix="cwfcn-first-run-") as work:
        cache = Path(work) / "cache"
        cache.mkdir()
        run = first_run(cache, opts.config, opts.args.split(), opts.fetch)
        model_dir = evaluate_lib.model_cache_dir(config, {samples.CACHE_ENV: str(cache)})
        run["model_cache_gb"] = _size(model_dir) / 1e9
        run["cache_gb"] = _size(cache) / 1e9
        net = train_lib.build_net(config, nnx.Rngs(0))
        checkpoint.load_params(model_dir, net)
        models = {"first run's model": quality(config, net)}
    if opts.reference:
        reference = train_lib.build_net(config, nnx.Rngs(0))
        checkpoint.load_params(opts.reference, reference)
        models[f"reference {opts.reference}"] = quality(config, reference)
    result = {"benchmark": "first_run", **device_info(), "args": opts.args, **run,
              "quality": models}
    lines = [f"first run: {run['wall_s']:.0f} s wall ({run['timing']['load_s']:.0f} s loading "
             f"and training, {run['timing']['wall_s']:.0f} s evaluating), peak RSS "
             f"{run['peak_rss_gb']:.2f} GB, model cache {run['model_cache_gb']:.2f} GB",
             f"{'model':<40}{'set':>24}{'mean IU':>9}{'pix acc':>9}"]
    for model_name, sets in models.items():
        for set_name, s in sets.items():
            lines.append(f"{model_name[-40:]:<40}{set_name:>24}{100 * s['mean_iu']:>9.1f}"
                         f"{100 * s['pixel_acc']:>9.1f}")
    emit(result, "\n".join(lines), opts.json)
    return result


if __name__ == "__main__":
    main()
