"""Frame-to-frame differences of FCN-8s's score layers over YouTube-Objects (Table 1, Fig. 2).

The authors' notebook ``youtube-differences.ipynb`` (shelhamer/clockwork-fcn, cells 6-14),
step by step:

- for every labelled shot, every raw frame from its first labelled one on
  (`youtube.full_rate_shot`) goes through the net, and frame ``ix`` is compared with frame
  ``ix - 1``; entry 0 compares the first frame with itself, so it is 0, and it counts in the
  means;
- per score layer (`LAYERS`: score_pool3 and score_pool4 uncropped, score_fr, and the output
  ``score``): the relative difference ``mean(|new - old| / ((|new| + |old|) / 2))`` over all
  C x h x w elements, with 0/0 (NaN) taken as 0, and the argmax change
  ``mean(argmax_c(new) != argmax_c(old))`` over positions (key ``<layer>-argmax``);
- ``data``: the same relative difference on the preprocessed input (BGR minus the mean);
- ``label``: ``mean(new_label != label)``, where ``new_label`` is reloaded on labelled frames
  only and compared with the previous labelled frame's labels, so it is 0 on the others;
- per shot the mean over frames; across shots the mean and the std (population, ``np.std``)
  of those per-shot means (the notebook prints only the std; both are reported here).

The paper's Table 1 rows are ours as: pixels -> data, pool3 -> score_pool3, pool4 ->
score_pool4, fc7 -> score_fr; its "temporal difference" is the argmax change. Fig. 2 plots
per shot the argmax change of score_pool4 and score_fr over the first 75 frames.

Library: `layer_changes` (one shot's per-frame changes of the net's layers and input),
`label_changes`, `summarize`. Command line::

    python -m cwfcn.differences --checkpoint FILE_OR_DIR --data-dir ROOT [--out DIR] ...

prints the table and, with ``--out``, writes ``differences.json``, ``differences.txt`` and
``fig2_<class>_<video>_<shot>.png`` for the first ``--plots`` shots.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from cwfcn import model
from cwfcn.data import voc, youtube
from cwfcn.metrics import IGNORE_LABEL

PROG = "differences"
LAYERS = ("score_pool3", "score_pool4", "score_fr", "score")
# Every measure of a shot: the input's relative difference, each layer's relative difference
# and argmax change, the label difference.
MEASURES = ("data", *LAYERS, *(f"{name}-argmax" for name in LAYERS), "label")
# Table 1's rows: the paper's name, ours.
TABLE_ROWS = (("pixels", "data"), ("pool3", "score_pool3"), ("pool4", "score_pool4"),
              ("fc7", "score_fr"), ("score", "score"))
# Fig. 2: the paper's pool4 (green) and fc7 (blue) argmax changes, in this order.
FIG2_TRACES = (("pool4 (score_pool4)", "score_pool4-argmax"), ("fc7 (score_fr)",
                                                              "score_fr-argmax"))
FIG2_FRAMES = 75
DEFAULT_CHUNK = 16


def _relative(new: jax.Array, old: jax.Array) -> jax.Array:
    """Per frame, ``mean(|new - old| / ((|new| + |old|) / 2))`` over all but axis 0, with
    NaN (0/0: both elements are 0) set to 0, as the notebook."""
    rel = jnp.abs(new - old) / ((jnp.abs(new) + jnp.abs(old)) / 2.0)
    rel = jnp.where(jnp.isnan(rel), 0.0, rel)
    return jnp.mean(rel, axis=tuple(range(1, rel.ndim)))


def _argmax_change(new: jax.Array, old: jax.Array) -> jax.Array:
    """Per frame, the fraction of positions whose class argmax (last axis) differs."""
    changed = jnp.argmax(new, axis=-1) != jnp.argmax(old, axis=-1)
    return jnp.mean(changed.astype(jnp.float32), axis=tuple(range(1, changed.ndim)))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _chunk_changes(params, rgb, prev, mean_bgr, *, graphdef):
    """One chunk of frames: its per-frame changes and its last frame's layers (the carry).

    `prev` holds the layers (and input) of the frame before the chunk, each ``[1, ...]``;
    None for a shot's first chunk, whose first frame is then compared with itself.
    """
    net = nnx.merge(graphdef, params)
    data = model.preprocess(rgb, mean_bgr)
    layers = dict(net.score_layers(data))
    layers["data"] = data
    if prev is None:
        prev = {name: x[:1] for name, x in layers.items()}
    changes = {}
    for name, new in layers.items():
        old = jnp.concatenate([prev[name], new[:-1]])  # frame ix - 1 of each frame ix
        # The notebook guards 0/0 only for the layers, not for "data"; we guard it for the
        # input too (with VOC's non-integer mean a preprocessed pixel is never exactly 0, so
        # this changes nothing there, but a 0/0 must not turn a shot's mean into NaN).
        changes[name] = _relative(new, old)
        if name != "data":
            changes[f"{name}-argmax"] = _argmax_change(new, old)
    return changes, {name: x[-1:] for name, x in layers.items()}


def layer_changes(
    net: nnx.Module,
    frames: np.ndarray,
    *,
    mean_bgr: Sequence[float] = voc.DATASET.mean_bgr,
    chunk: int = DEFAULT_CHUNK,
) -> dict[str, np.ndarray]:
    """The change of each score layer, and of the input, from each frame to the next.

    The net runs on `chunk` frames at a time (the last chunk padded by repeating its last
    frame, so one shape compiles once), carrying the previous frame's layers across chunks:
    the result does not depend on `chunk`, and memory stays bounded on long shots.

    Args:
      net: an `model.FCN8s` (anything with `score_layers`).
      frames: uint8 RGB `[T, H, W, 3]`, T >= 1, e.g. from `youtube.full_rate_shot`.
      mean_bgr: the mean that `model.preprocess` subtracts (VOC's for YouTube-Objects).
      chunk: frames per call of the net.

    Returns:
      float32 `[T]` per key: ``"data"`` and each of `LAYERS` (relative difference), and
      ``"<layer>-argmax"`` (argmax change); entry 0 is 0.

    Raises:
      ValueError: if frames are not uint8 `[T, H, W, 3]` with T >= 1, or chunk < 1.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be [T, H, W, 3] with T >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB (raw frames, preprocessed here), got "
                         f"{frames.dtype}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    graphdef, params = nnx.split(net)
    mean = jnp.asarray(mean_bgr, jnp.float32)  # traced: another mean compiles nothing new
    pieces: list[dict[str, jax.Array]] = []
    prev = None
    for start in range(0, len(frames), chunk):
        part = frames[start:start + chunk]
        n = len(part)
        if n < chunk:  # repeat the last frame: the padded changes are dropped below
            part = np.concatenate([part, np.repeat(part[-1:], chunk - n, axis=0)])
        changes, prev = _chunk_changes(params, jnp.asarray(part), prev, mean, graphdef=graphdef)
        pieces.append({name: x[:n] for name, x in changes.items()})
    pieces = jax.device_get(pieces)
    return {name: np.concatenate([p[name] for p in pieces]).astype(np.float32)
            for name in pieces[0]}


def label_changes(labels: np.ndarray) -> np.ndarray:
    """The label difference per frame, as the notebook: on each labelled frame the fraction
    of pixels whose label differs from the previous labelled frame's; 0 on the others and on
    frame 0.

    Args:
      labels: uint8 `[T, H, W]`; a frame whose pixels are all `IGNORE_LABEL` (255) is
        unlabelled (`youtube.full_rate_shot` fills those). Frame 0 must be labelled.

    Returns:
      float32 `[T]`.

    Raises:
      ValueError: if labels are not `[T, H, W]` with T >= 1, or frame 0 is unlabelled.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or len(labels) == 0:
        raise ValueError(f"labels must be [T, H, W] with T >= 1, got shape {labels.shape}")
    labelled = ~np.all(labels == IGNORE_LABEL, axis=(1, 2))
    if not labelled[0]:
        raise ValueError("frame 0 has no labels (all 255): the differences start at a "
                         "labelled frame (youtube.full_rate_shot starts at the first)")
    out = np.zeros(len(labels), np.float32)
    label = labels[0]
    for ix in np.flatnonzero(labelled):
        out[ix] = np.mean(labels[ix] != label)
        label = labels[ix]
    return out


def summarize(per_shot: Sequence[Mapping[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Across shots: the mean and the std of the per-shot means over frames.

    Args:
      per_shot: one dict per shot, measure -> per-frame values `[T]` (any T >= 1 per shot;
        a scalar counts as a shot's mean); every shot with the same measures.

    Returns:
      measure -> (mean, std), the std over shots (``np.std``, ddof 0, as the notebook).

    Raises:
      ValueError: if there is no shot, the shots' measures differ, or a shot has no frames.
    """
    if not per_shot:
        raise ValueError("no shots to summarize")
    names = list(per_shot[0])
    means = {name: [] for name in names}
    for i, shot in enumerate(per_shot):
        if set(shot) != set(names):
            raise ValueError(f"shot {i} has measures {sorted(shot)}, shot 0 has {sorted(names)}")
        for name in names:
            values = np.asarray(shot[name], np.float64)
            if values.size == 0:
                raise ValueError(f"shot {i} has no frames of {name!r}")
            means[name].append(values.mean())
    return {name: (float(np.mean(m)), float(np.std(m))) for name, m in means.items()}


def _shot_changes(net, root, shot_id: str, *, max_dim: int, max_frames: int | None,
                  chunk: int) -> dict[str, np.ndarray]:
    """Every measure of one shot, per frame (`layer_changes` + ``"label"``)."""
    frames, labels = youtube.full_rate_shot(root, shot_id, max_dim=max_dim)
    if max_frames is not None:
        frames, labels = frames[:max_frames], labels[:max_frames]
    changes = layer_changes(net, frames, mean_bgr=voc.DATASET.mean_bgr, chunk=chunk)
    changes["label"] = label_changes(labels)
    return changes


def table(summary: Mapping[str, tuple[float, float]], shots: int, frames: int) -> str:
    """Table 1 as text: a row per layer (relative difference and argmax change, mean ± std
    across shots), then the label difference."""
    def cell(name: str) -> str:
        if name not in summary:
            return "-"
        mean, std = summary[name]
        return f"{mean:.3f} ± {std:.3f}"

    lines = [f"Table 1: frame-to-frame differences over {shots} shots ({frames} frames); "
             "mean ± std across shots of the per-shot means",
             f"{'layer':<22} {'relative diff':>16} {'argmax change':>16}"]
    for paper, ours in TABLE_ROWS:
        label = paper if paper == ours else f"{paper} ({ours})"
        argmax = cell(f"{ours}-argmax") if ours != "data" else "-"
        lines.append(f"{label:<22} {cell(ours):>16} {argmax:>16}")
    lines.append(f"{'label difference':<22} {cell('label'):>16}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + error
        raise _UsageError(f"{message} (see {PROG} --help)")


class _UsageError(ValueError):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Table 1 and Fig. 2 of the clockwork paper: how much "
                "FCN-8s's score layers change from frame to frame on YouTube-Objects.")
    p.add_argument("--checkpoint", required=True,
                   help="weights: a .caffemodel/.onnx/.pth file or an orbax checkpoint dir")
    p.add_argument("--data-dir", required=True,
                   help="the directory holding youtube_masks/ and v1/ (YouTube-Objects)")
    p.add_argument("--widths", choices=("vgg16", "narrow"), default="vgg16")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--out", default=None, help="write differences.json, differences.txt and "
                   "the Fig. 2 PNGs here (none written if not given)")
    p.add_argument("--plots", type=int, default=4, help="Fig. 2 for at most this many shots")
    p.add_argument("--shots", default=None, help="comma-separated <class>/<video>/<shot> ids "
                   "(default: every labelled shot)")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames "
                   "per shot (default: all)")
    p.add_argument("--max-dim", type=int, default=youtube.MAX_DIM,
                   help="longer side of the resized frames (the reference's 500)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="frames per net call")
    return p


def _check_args(args: argparse.Namespace) -> list[str]:
    """Validates the arguments before any work; returns the shot ids."""
    for flag, value, least in (("--num-classes", args.num_classes, 1), ("--plots", args.plots, 0),
                               ("--max-frames", args.max_frames, 1),
                               ("--max-dim", args.max_dim, 1), ("--chunk", args.chunk, 1)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    if not os.path.isdir(args.data_dir):
        raise ValueError(f"--data-dir {args.data_dir} is not a directory: pass the one holding "
                         "youtube_masks/ and v1/")
    if args.shots:
        ids = [s.strip() for s in args.shots.split(",") if s.strip()]
        for shot_id in ids:
            youtube.mask_paths(args.data_dir, shot_id)  # a bad id or a missing shot raises
    else:
        ids = youtube.shot_ids(args.data_dir)
    if not ids:
        raise ValueError(f"no labelled shots in {os.path.join(args.data_dir, 'youtube_masks')} "
                         "(expected <class>/data/<video>/shots/<shot>/labels/<n>.jpg)")
    return ids


def _load_net(args: argparse.Namespace) -> model.FCN8s:
    from cwfcn import checkpoint, weights  # only the CLI needs the importers

    widths = {"vgg16": model.VGG16_WIDTHS, "narrow": model.NARROW_WIDTHS}[args.widths]
    net = model.FCN8s(args.num_classes, widths=widths, rngs=nnx.Rngs(0))
    if os.path.isdir(args.checkpoint):
        checkpoint.load_params(args.checkpoint, net)
    else:
        weights.load(net, args.checkpoint, mean_bgr=voc.DATASET.mean_bgr)
    return net


def _run(args: argparse.Namespace) -> None:
    ids = _check_args(args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    net = _load_net(args)
    per_shot = []
    for shot_id in tqdm(ids, desc=PROG, unit="shot", file=sys.stderr):
        per_shot.append(_shot_changes(net, args.data_dir, shot_id, max_dim=args.max_dim,
                                      max_frames=args.max_frames, chunk=args.chunk))
    summary = summarize(per_shot)
    frames = sum(len(c["data"]) for c in per_shot)
    text = table(summary, len(ids), frames)
    print(text)
    if not args.out:
        return
    from cwfcn import plots  # matplotlib only when figures are written

    record = {
        "checkpoint": args.checkpoint,
        "data_dir": args.data_dir,
        "max_dim": args.max_dim,
        "max_frames": args.max_frames,
        "shots": len(ids),
        "frames": frames,
        "summary": {name: {"mean": m, "std": s} for name, (m, s) in summary.items()},
        "per_shot": {
            shot_id: {"frames": len(c["data"]),
                      "mean": {name: float(np.mean(v, dtype=np.float64)) for name, v in c.items()},
                      "per_frame": {name: [float(x) for x in v] for name, v in c.items()}}
            for shot_id, c in zip(ids, per_shot, strict=True)},
    }
    with open(os.path.join(args.out, "differences.json"), "w") as f:
        json.dump(record, f, indent=1)
    with open(os.path.join(args.out, "differences.txt"), "w") as f:
        f.write(text + "\n")
    for shot_id, changes in list(zip(ids, per_shot, strict=True))[:args.plots]:
        cls, video, shot = shot_id.split("/")
        traces = {label: changes[key] for label, key in FIG2_TRACES}
        plots.plot_differences(os.path.join(args.out, f"fig2_{cls}_{video}_{shot}.png"), traces,
                               f"{cls} vid {video} shot {shot}", frames=FIG2_FRAMES)
    print(f"wrote {args.out}/differences.json, differences.txt and "
          f"{min(args.plots, len(ids))} Fig. 2 plots", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 and one stderr line on bad input)."""
    try:
        args = _parser().parse_args(argv)
        _run(args)
    except (ValueError, OSError) as e:
        sys.stderr.flush()
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
