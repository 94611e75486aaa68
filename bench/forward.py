"""Benchmark: how close does the FCN-8s forward come to the machine's matmul speed?

In one run, for each frame size and compute dtype: the GFLOP/s of square matmuls
(the fastest is the machine's practical peak for this dtype), of the full FCN-8s forward
(analytic FLOPs / time) and of each clockwork stage on its own. With `--layers`,
also every layer alone (conv + bias + ReLU, pools, fc6 as patches + one matmul,
the score layers, the upsamplers): the profile that shows what bounds the net.
FLOPs are the dense net's (the layers, conv1_1 on its full 100-px pad); the table also
shows what XLA counts in the compiled code, less in S1, which skips the border work
whose result is a known constant (`model.border_plan`).

    python bench/forward.py                            # 500 and 384 px, float32
    python bench/forward.py --dtypes float32 bfloat16 --layers --json forward.json
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

if not __package__:  # run as a script: the repository root holds bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import device_info, emit, round_robin
from cwfcn import clockwork, cost, model
from cwfcn.data import datasets


def _jit_with(module: nnx.Module, fn: Callable, dtype) -> Callable[[jax.Array], jax.Array]:
    """`fn(module, x)` jitted, with the module's params cast to `dtype` once, up front."""
    graphdef, params = nnx.split(module)
    params = clockwork.cast_params(params, dtype)
    jitted = jax.jit(lambda p, x: fn(nnx.merge(graphdef, p), x))
    return functools.partial(jitted, params)


def _relu_of(name: str) -> Callable:
    return lambda net, x: jax.nn.relu(getattr(net, name)(x))


def _layer_ops(net: model.FCN8s) -> list[tuple[str, Callable, bool, int]]:
    """The dense forward, layer by layer: (name, f(net, x) -> y, side branch?, stage).

    conv1_1 is the module itself, padded by 100 as in Caffe: summed, these layers give
    the net's analytic (dense) FLOPs, whatever shortcut `stage1` takes. A side branch
    (the skips' score layers) reads the running tensor but does not replace it.
    """
    ops: list[tuple[str, Callable, bool, int]] = []
    for block, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
        stage = {4: 2, 5: 3}.get(block, 1)
        ops += [(f"conv{block}_{i}", _relu_of(f"conv{block}_{i}"), False, stage)
                for i in range(1, n + 1)]
        ops.append((f"pool{block}", lambda net, x: model.max_pool_ceil(x), False, stage))
        if block in (3, 4):
            ops.append((f"score_pool{block}", lambda net, x, b=block:
                        model.pointwise(x, getattr(net, f"score_pool{b}")), True, stage))

    def fc6(net, x):
        return jax.nn.relu(model.conv_as_matmul(x, net.fc6.kernel[...], net.fc6.bias[...]))

    ops += [("fc6", fc6, False, 3),
            ("fc7", lambda net, x: jax.nn.relu(model.pointwise(x, net.fc7)), False, 3),
            ("score_fr", lambda net, x: model.pointwise(x, net.score_fr), False, 3),
            ("upscore2", lambda net, x: model.deconv(x, net.upscore2[...], 2), False, 3)]
    return ops


def _layer_fns(net, frames, dtype) -> dict[str, tuple[Callable, float, int]]:
    """name -> (timed call, FLOPs, stage) for every layer, each fed its real input."""
    fns, x = {}, frames
    for name, op, side, stage in _layer_ops(net):
        call = _jit_with(net, op, dtype)
        fns[name] = (functools.partial(call, x), cost.flops(jax.jit(call), x), stage)
        y = call(x)
        if not side:
            x = y
    return fns


def _stage_fns(net, frames, dtype) -> dict[str, tuple[Callable, float]]:
    """name -> (timed call, FLOPs executed): the full forward, S1, S2, S3 and the fusion."""
    staging = clockwork.staging_of(net)
    full = _jit_with(net, lambda n, x: n(x), dtype)
    fns = {"forward": (functools.partial(full, frames), cost.flops(jax.jit(full), frames))}
    src, outs = frames, []
    for k, stage in enumerate(staging.stages):
        call = _jit_with(net, stage, dtype)
        fns[f"S{k + 1}"] = (functools.partial(call, src), cost.flops(jax.jit(call), src))
        src = call(src)
        outs.append(src)
    fuse = _jit_with(net, lambda n, o: staging.fuse(n, o, frames.shape[1:3]), dtype)
    fns["fuse"] = (functools.partial(fuse, tuple(outs)), cost.flops(jax.jit(fuse), tuple(outs)))
    return fns


def _matmul_fn(n: int, dtype) -> tuple[Callable, float]:
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
    b = jnp.asarray(np.random.default_rng(1).normal(size=(n, n)), dtype)
    return functools.partial(jax.jit(jnp.matmul), a, b), 2.0 * n**3


def bench_size(net, size: int, dtype_name: str, args) -> dict:
    """One frame size and dtype: matmuls, forward, stages (and layers), timed together.

    GFLOP/s are analytic (dense) FLOPs over time; `executed_gflop` is what XLA counts in
    the compiled code (less in S1, whose border shortcut skips constant work).
    """
    dtype = clockwork.compute_dtype(dtype_name)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    frames = model.preprocess(rgb, datasets.get("voc").mean_bgr).astype(dtype)
    layers = _layer_fns(net, frames, dtype)
    stages = _stage_fns(net, frames, dtype)
    dense = {f"S{k}": sum(f for _, f, s in layers.values() if s == k) for k in (1, 2, 3)}
    dense["fuse"] = stages["fuse"][1]
    dense["forward"] = sum(dense.values())
    fns = {f"matmul {n}": _matmul_fn(n, dtype) for n in args.matmul_sizes}
    fns.update({k: (f, dense[k], executed) for k, (f, executed) in stages.items()})
    if args.layers:
        fns.update({f"layer:{k}": (f, flop, flop) for k, (f, flop, _) in layers.items()})
    times = round_robin({k: v[0] for k, v in fns.items()}, args.repeats,
                        desc=f"{size}px {dtype_name}")
    rows = []
    for name, (_, flop, *executed) in fns.items():
        t = times[name]
        rows.append({"name": name, "ms": 1e3 * t["wall_s"], "gflop": flop / 1e9,
                     "executed_gflop": (executed or [flop])[0] / 1e9,
                     "gflops": flop / t["wall_s"] / 1e9,
                     "cpu_gflops": flop / max(t["cpu_s"], 1e-9) / 1e9})
    by = {r["name"]: r for r in rows}
    peak = max((r for r in rows if r["name"].startswith("matmul")), key=lambda r: r["gflops"])
    for r in rows:
        r["of_matmul"] = r["gflops"] / peak["gflops"]
        r["cpu_of_matmul"] = r["cpu_gflops"] / peak["cpu_gflops"]
        r["time_share"] = r["ms"] / by["forward"]["ms"]
    return {"size": size, "dtype": dtype_name, "matmul_gflops": peak["gflops"],
            "matmul_best": peak["name"], "forward_gflops": by["forward"]["gflops"],
            "forward_of_matmul": by["forward"]["of_matmul"],
            "forward_ms": by["forward"]["ms"], "rows": rows}


def _table(result: dict) -> str:
    lines = [f"\n{result['device']} ({result['cpu_count']} cores), widths {result['widths']}, "
             f"XLA_FLAGS={result['xla_flags']!r}"]
    head = (f"{'size':>5} {'dtype':<9}{'what':<16}{'ms':>9}{'GFLOP':>8}{'executed':>9}"
            f"{'GFLOP/s':>9}{'of matmul':>10}{'(CPU time)':>11}{'time share':>11}")
    lines += [head, "-" * len(head)]
    for run in result["runs"]:
        for r in run["rows"]:
            lines.append(f"{run['size']:>5} {run['dtype']:<9}{r['name']:<16}{r['ms']:>9.1f}"
                         f"{r['gflop']:>8.2f}{r['executed_gflop']:>9.2f}"
                         f"{r['gflops']:>9.1f}{r['of_matmul']:>10.2f}"
                         f"{r['cpu_of_matmul']:>11.2f}{r['time_share']:>11.3f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 384],
                        help="frame sizes (px, square)")
    parser.add_argument("--dtypes", nargs="+", default=["float32"],
                        choices=sorted(clockwork.DTYPES), help="compute dtypes")
    parser.add_argument("--layers", action="store_true", help="also time every layer alone")
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[1024, 2048, 4096],
                        help="n of the n x n matmuls; the fastest is the reference")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds; each entry keeps its fastest")
    parser.add_argument("--narrow", action="store_true", help="narrow net (smoke test)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    widths = model.NARROW_WIDTHS if args.narrow else model.VGG16_WIDTHS
    net = model.FCN8s(21, widths=widths, zero_init_scores=False, rngs=nnx.Rngs(0))
    runs = [bench_size(net, size, dtype, args) for dtype in args.dtypes for size in args.sizes]
    result = {"benchmark": "forward", **device_info(), "widths": list(widths),
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "runs": runs}
    emit(result, _table(result), args.json)
    return result


if __name__ == "__main__":
    main()
