"""Compute cost of a staged net: FLOPs per stage and the share a schedule spends.

Two counts, side by side in the results:
- executed: XLA's own cost analysis of each stage as cwfcn compiles it, lowered for one
  frame shape, every layer included (2 x multiply-adds, plus the elementwise work). XLA
  leaves out the convolution taps that read zero padding, and FCN-8s's S1 takes a border
  shortcut (`model.border_plan`): 300 GFLOP at 500 px.
- dense: the Caffe net as the paper ran it, 2 x the multiply-adds of every convolution
  and matrix product, every kernel tap counted, conv1_1 on its full 100-px pad
  (`dense_flops` over the staging's `dense_staging` if it has one): 363 GFLOP at 500 px.

`pipeline_latency` models a pipelined step as the paper does (section 4.1): the stages
of a step run concurrently, so a step takes its longest stage, plus the fusion.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from cwfcn.clockwork import Staging, cast_params, compute_dtype, staging_of


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


def _subjaxprs(params: dict) -> list:
    found = []
    for value in params.values():
        for v in value if isinstance(value, list | tuple) else (value,):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                found.append(v.jaxpr)
            elif isinstance(v, jax.extend.core.Jaxpr):
                found.append(v)
    return found


def _dense_macs(jaxpr) -> float:
    """Multiply-adds of every conv and dot in a jaxpr (sub-jaxprs included), all taps."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
            out = eqn.outvars[0].aval
            spec = eqn.params["dimension_numbers"]
            taps = np.prod([rhs.shape[d] for d in spec.rhs_spec[2:]], dtype=np.float64)
            cin, cout = rhs.shape[spec.rhs_spec[1]], rhs.shape[spec.rhs_spec[0]]
            if any(d > 1 for d in eqn.params["lhs_dilation"]):
                # A transposed conv (Caffe's Deconvolution): every input pixel meets every tap.
                pixels = np.prod([lhs.shape[d] for d in spec.lhs_spec[2:]], dtype=np.float64)
                total += float(lhs.shape[spec.lhs_spec[0]] * pixels * taps * cin * cout)
            else:
                total += float(np.prod(out.shape, dtype=np.float64) * taps * cin)
        elif name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval
            contracted = np.prod([lhs.shape[d] for d in lc], dtype=np.float64)
            total += float(np.prod(eqn.outvars[0].aval.shape, dtype=np.float64) * contracted)
        for sub in _subjaxprs(eqn.params):
            total += _dense_macs(sub)
    return total


def dense_flops(fn, *args) -> float:
    """2 x the multiply-adds of every convolution and matrix product `fn(*args)` computes,
    every kernel tap counted (padding included), as a dense Caffe net runs it; elementwise
    work (biases, ReLUs, pools) is not counted. Args may be `jax.ShapeDtypeStruct`s."""
    return 2.0 * _dense_macs(jax.make_jaxpr(fn)(*args).jaxpr)


def stage_flops(
    net: nnx.Module, frame_shape: tuple[int, int, int], *, dense: bool = False
) -> StageFlops:
    """FLOPs per stage for one frame of `frame_shape` = (H, W, 3); nothing is run.

    Args:
      net: a staged net.
      frame_shape: (H, W, 3).
      dense: count the dense net (`dense_flops` of the class's `dense_staging`, else of its
        `staging`) instead of what XLA executes (`flops`).
    """
    staging = staging_of(net)
    count = flops
    if dense:
        dense_staging = getattr(type(net), "dense_staging", None)
        staging = dense_staging if isinstance(dense_staging, Staging) else staging
        count = dense_flops
    graphdef, params = nnx.split(net)
    x = jax.ShapeDtypeStruct((1, *frame_shape), jax.numpy.float32)
    counts, outs = [], []
    for k, stage in enumerate(staging.stages):
        src = x if k == 0 else outs[-1]

        def call(params, src, stage=stage):
            return stage(nnx.merge(graphdef, params), src)

        counts.append(count(call, params, src))
        outs.append(jax.eval_shape(call, params, src))

    def fuse(params, outs):
        return staging.fuse(nnx.merge(graphdef, params), outs, frame_shape[:2])

    return StageFlops(tuple(counts), count(fuse, params, tuple(outs)))


def net_flops(net: nnx.Module, frame_shape: tuple[int, int, int], call, *,
              dense: bool = False) -> float:
    """FLOPs of a net run whole on one frame of `frame_shape` (e.g. a truncated baseline):
    executed (XLA) or dense (`dense_flops`).

    Args:
      net: the module.
      frame_shape: (H, W, 3).
      call: `call(module, frames) -> scores`, the computation counted; for a dense count it
        should compute as the dense net does (e.g. `TruncatedFCN(..., dense=True)`).
      dense: count all taps (`dense_flops`) instead of XLA's executed count.
    """
    graphdef, params = nnx.split(net)
    x = jax.ShapeDtypeStruct((1, *frame_shape), jax.numpy.float32)
    def whole(params, frames):
        return call(nnx.merge(graphdef, params), frames)

    return (dense_flops if dense else flops)(whole, params, x)


def pipeline_latency(lags: Sequence[int], stages: Sequence[float], fuse: float) -> float:
    """One pipelined step's latency as a fraction of the full net's, as the paper models it
    ("the total time to process the frame is the time of the longest stage ... plus the
    time for interpolating and fusing outputs", section 4.1).

    Stages joined by a lag of 0 run in series within a step; the groups a lag separates run
    concurrently, on different frames.

    Args:
      lags: the schedule's lags (`Schedule.lags`); all 0 is the full net (1.0).
      stages: each stage's cost (FLOPs or seconds).
      fuse: the fusion's cost.

    Returns:
      (longest group + fuse) / (all stages + fuse).
    """
    groups: list[float] = []
    for k, stage_cost in enumerate(stages):
        if k == 0 or lags[k]:  # a lag starts a group that runs beside the one before
            groups.append(0.0)
        groups[-1] += stage_cost
    return (max(groups) + fuse) / (sum(stages) + fuse)


def stage_seconds(net: nnx.Module, frame_shape: tuple[int, int, int], dtype: Any = None,
                  repeats: int = 3) -> StageFlops:
    """Measured seconds per stage and for the fusion on one frame (best of `repeats`, after a
    compiling call), for `pipeline_latency` from time rather than FLOPs."""
    staging = staging_of(net)
    graphdef, params = nnx.split(net)
    params = cast_params(params, dtype)
    x = jax.numpy.zeros((1, *frame_shape), compute_dtype(dtype))

    def timed(fn, *args):
        jitted = jax.jit(fn)
        out = jax.block_until_ready(jitted(params, *args))
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(jitted(params, *args))
            best = min(best, time.perf_counter() - start)
        return best, out

    seconds, outs, src = [], [], x
    for stage in staging.stages:
        took, src = timed(lambda params, src, stage=stage: stage(nnx.merge(graphdef, params),
                                                                  src), src)
        seconds.append(took)
        outs.append(src)
    took, _ = timed(lambda params, outs: staging.fuse(nnx.merge(graphdef, params), outs,
                                                      frame_shape[:2]), tuple(outs))
    return StageFlops(tuple(seconds), took)


def flop_fraction(fired: np.ndarray, flops: StageFlops) -> float:
    """FLOPs a schedule spent, as a fraction of running the full net on every frame.

    Args:
      fired: bool `[T, N]`, from `clockwork.run`.
      flops: from `stage_flops`.

    Returns:
      (sum over frames of the fired stages' FLOPs + the fusion) / (T x total).
    """
    fired = np.asarray(fired, bool)
    per_frame = fired.astype(np.float64) @ np.asarray(flops.stages) + flops.fuse
    return float(per_frame.sum() / (len(fired) * flops.total))
