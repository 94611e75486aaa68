"""Compute cost of a staged net: FLOPs per stage and the share a schedule spends.

FLOPs come from XLA's own cost analysis of each stage, lowered for one frame
shape, so any staged net is counted, every layer included (2 x multiply-adds).
XLA leaves out the convolution taps that read zero padding: FCN-8s at 500 px
counts 359 GFLOP here against 362 for the dense count.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from cwfcn.clockwork import staging_of


class StageFlops(NamedTuple):
    """FLOPs of one frame through each stage and through the fusion."""

    stages: tuple[float, ...]
    fuse: float

    @property
    def total(self) -> float:
        return sum(self.stages) + self.fuse


def flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` by XLA's cost analysis (args may be `jax.ShapeDtypeStruct`s)."""
    analysis = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax returns one dict per device
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))  # absent when nothing is computed


def stage_flops(net: nnx.Module, frame_shape: tuple[int, int, int]) -> StageFlops:
    """FLOPs per stage for one frame of `frame_shape` = (H, W, 3); nothing is run."""
    staging = staging_of(net)
    graphdef, params = nnx.split(net)
    x = jax.ShapeDtypeStruct((1, *frame_shape), jax.numpy.float32)
    counts, outs = [], []
    for k, stage in enumerate(staging.stages):
        src = x if k == 0 else outs[-1]

        def call(p, s, stage=stage):
            return stage(nnx.merge(graphdef, p), s)

        counts.append(flops(call, params, src))
        outs.append(jax.eval_shape(call, params, src))

    def fuse(p, o):
        return staging.fuse(nnx.merge(graphdef, p), o, frame_shape[:2])

    return StageFlops(tuple(counts), flops(fuse, params, tuple(outs)))


def flop_fraction(fired: np.ndarray, flops: StageFlops) -> float:
    """FLOPs a schedule spent, as a fraction of running the full net on every frame.

    Args:
      fired: bool `[T, N]`, from `clockwork.run`.
      flops: from `stage_flops`.

    Returns:
      (sum over frames of the fired stages' FLOPs + the fusion) / (T x total).
    """
    fired = np.asarray(fired, bool)
    spent = fired.astype(np.float64) @ np.asarray(flops.stages) + flops.fuse
    return float(spent.sum() / (len(fired) * flops.total))
