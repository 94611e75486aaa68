"""The engine's speed and memory machinery: chunked runs, the compute dtype, compiling
once, and the persistent compilation cache. (Speed itself is measured in bench/.)"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cwfcn import clockwork, compilation, model

T, H, W = 7, 24, 32
_rng = np.random.default_rng(7)
# Frames that change a lot and then not at all, so that every clock both fires and waits.
_a, _b = _rng.normal(0, 60, (H, W, 3)), _rng.normal(0, 60, (H, W, 3)) + 80
FRAMES = np.stack([_a, _a, _b, _b, _a, _rng.normal(0, 60, (H, W, 3)), _a]).astype(np.float32)


def _assert_same_run(actual: clockwork.RunOutput, expected: clockwork.RunOutput) -> None:
    scale = float(np.abs(np.asarray(expected.scores)).max())
    np.testing.assert_allclose(np.asarray(actual.scores), np.asarray(expected.scores),
                               rtol=0, atol=1e-5 * scale)
    np.testing.assert_array_equal(np.asarray(actual.fired), np.asarray(expected.fired))
    np.testing.assert_allclose(np.asarray(actual.change), np.asarray(expected.change), atol=1e-7)


@pytest.mark.parametrize("spec", ["adaptive:0.05", "exponential", "pipeline3"])
@pytest.mark.parametrize("chunk", [2, 3])
def test_chunked_run_equals_one_scan(net, spec, chunk):
    """7 frames in chunks of 2 or 3: the last chunk is padded; the state crosses chunks."""
    whole = clockwork.run(net, FRAMES, spec, chunk=None)
    chunked = clockwork.run(net, FRAMES, spec, chunk=chunk)
    assert isinstance(chunked.scores, np.ndarray)  # moved to the host chunk by chunk
    assert chunked.scores.shape == (T, H, W, net.num_classes)
    _assert_same_run(chunked, whole)
    if spec == "adaptive:0.05":  # the clock really waited somewhere
        assert not np.asarray(whole.fired)[:, 2].all()


@pytest.mark.parametrize(("spec", "chunk"), [("adaptive:0.05", 3), ("pipeline3", None),
                                             ("exponential", 64)])
def test_compiled_run_compiles_ahead_then_equals_run(net, spec, chunk):
    """`CompiledRun.compile` compiles from a shape alone (no frame exists to run); the
    call then compiles nothing and gives `run`'s outputs, or their argmax for classes."""
    whole = clockwork.run(net, FRAMES, spec, chunk=None)
    runs = clockwork.CompiledRun(net, spec, chunk=chunk or T, classes=False)
    maps = clockwork.CompiledRun(net, spec, chunk=chunk or T, classes=True)
    for compiled in (runs, maps):
        assert compiled.compile(FRAMES.shape) > 0
        assert compiled.compile(FRAMES.shape) == 0  # compiled already
    before = runs.compile_seconds + maps.compile_seconds
    _assert_same_run(runs(FRAMES), whole)
    out = maps(FRAMES)
    np.testing.assert_array_equal(np.asarray(out.scores),
                                  np.argmax(np.asarray(whole.scores), -1))
    np.testing.assert_array_equal(np.asarray(out.fired), np.asarray(whole.fired))
    assert runs.compile_seconds + maps.compile_seconds == before  # the calls compiled nothing
    compiled = maps.compile_seconds
    maps(FRAMES[:, : H - 8])  # a frame size not compiled yet compiles on first sight
    assert maps.compile_seconds > compiled
    for bad in [(T, H, W), (0, H, W, 3), (T, H, W, 1)]:
        with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
            maps.compile(bad)


def test_executables_compile_once_per_shape_dtype_and_static_argument():
    traces = []

    @functools.partial(jax.jit, static_argnames="k")
    def scaled(x, *, k):
        traces.append(x.shape)
        return x * k

    fn = compilation.Executables(scaled)
    assert fn.compile(jax.ShapeDtypeStruct((2,), jnp.float32), k=3).out_info.shape == (2,)
    np.testing.assert_array_equal(fn(jnp.ones(2), k=3), [3.0, 3.0])
    np.testing.assert_array_equal(fn(jnp.ones(2), k=3), [3.0, 3.0])
    assert traces == [(2,)]  # compiled from the spec, then only run
    fn(jnp.ones(2), k=4)
    fn(jnp.ones(2, jnp.int32), k=3)
    fn(jnp.ones(5), k=3)
    assert len(traces) == 4 and fn.compile_seconds > 0


def test_run_chunk_and_step_continue_each_other(net):
    cw = clockwork.Clockwork(net, "adaptive:0.05")
    state = cw.init(FRAMES.shape[1:])
    state, scores0, fired0 = cw.step(state, FRAMES[0])
    state, first = cw.run_chunk(state, FRAMES[1:4])
    state, second = cw.run_chunk(state, FRAMES[4:])
    got = clockwork.RunOutput(
        np.concatenate([np.asarray(scores0)[None], first.scores, second.scores]),
        np.concatenate([np.asarray(fired0)[None], first.fired, second.fired]),
        np.concatenate([[0.0], first.change, second.change]))
    _assert_same_run(got, clockwork.run(net, FRAMES, "adaptive:0.05"))
    assert int(state.t) == T


def test_chunks_reject_a_state_of_another_size(net):
    cw = clockwork.Clockwork(net, "oracle")
    state = cw.init((H, W, 3))
    with pytest.raises(ValueError, match="do not match the state"):
        cw.run_chunk(state, FRAMES[:, : H - 8])
    with pytest.raises(ValueError, match="chunk"):
        clockwork.run(net, FRAMES, "oracle", chunk=0)


TRACES = {"s1": 0, "s2": 0, "s3": 0}  # how often each stage of `Counted` was traced


class Counted(nnx.Module):
    """A two-layer staged module whose stage functions count how often they are traced."""

    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(3, 4, rngs=rngs)
        self.b = nnx.Linear(4, 3, rngs=rngs)


def _counting(name, fn):
    def stage(module, x):
        TRACES[name] += 1  # runs at trace time only: jit replays the compiled code
        return fn(module, x)
    return stage


Counted.staging = clockwork.Staging(
    stages=(_counting("s1", lambda m, x: jnp.tanh(m.a(x / 50.0))),
            _counting("s2", lambda m, h: jnp.tanh(m.b(h))),
            _counting("s3", lambda m, h: h.mean(axis=(1, 2), keepdims=True))),
    fuse=lambda m, outs, hw: outs[0][..., :3] + outs[1] + outs[2],
    clock_scores=lambda outs: outs[1],
)


def test_nothing_is_retraced_after_the_first_frame():
    net = Counted(nnx.Rngs(0))
    frames = np.random.default_rng(0).normal(0, 60, (9, 5, 6, 3)).astype(np.float32)
    cw = clockwork.Clockwork(net, "adaptive:0.3")
    state = cw.init(frames.shape[1:])
    state, _, _ = cw.step(state, frames[0])
    after_first = dict(TRACES)
    for frame in frames[1:]:
        state, _, _ = cw.step(state, frame)
    assert TRACES == after_first
    # A second stream of the same shape, even through a new Clockwork: still no trace.
    other = clockwork.Clockwork(net, "adaptive:0.3")
    other.step(other.init(frames.shape[1:]), frames[0])
    assert TRACES == after_first

    counts = clockwork.compile_counts()
    clockwork.run(net, frames, "exponential", chunk=4)  # chunks of 4, 4 and 1 (padded)
    once = dict(TRACES)
    assert clockwork.compile_counts()["scan"] == counts["scan"] + 1
    clockwork.run(net, frames[::-1].copy(), "exponential", chunk=4)
    clockwork.run(net, frames[:3], "exponential", chunk=None)
    traced = dict(TRACES)
    clockwork.run(net, frames[3:6], "exponential", chunk=None)  # same shape: compiled
    assert TRACES == traced and traced != once  # the 3-frame scan is another shape
    assert clockwork.compile_counts()["scan"] == counts["scan"] + 1


def test_bfloat16_computes_in_bfloat16_and_returns_float32(net):
    full = clockwork.run(net, FRAMES, "alternating")
    half = clockwork.run(net, FRAMES, "alternating", dtype="bfloat16")
    assert half.scores.dtype == jnp.float32
    scale = float(np.abs(np.asarray(full.scores)).max())
    diff = np.abs(np.asarray(half.scores) - np.asarray(full.scores))
    assert 0 < diff.max() < 0.05 * scale  # rounded (so really bf16), but close
    agree = np.mean(np.argmax(half.scores, -1) == np.argmax(full.scores, -1))
    assert agree > 0.9
    cw = clockwork.Clockwork(net, "alternating", dtype=jnp.bfloat16)
    state = cw.init(FRAMES.shape[1:])
    assert {leaf.dtype for leaf in jax.tree.leaves(state.cache)} == {jnp.dtype(jnp.bfloat16)}
    assert nnx.state(net, nnx.Param)["conv1_1"]["kernel"][...].dtype == jnp.float32


@pytest.mark.parametrize("dtype", ["float16", "int8", "fp32"])
def test_unknown_compute_dtypes_are_refused(net, dtype):
    with pytest.raises(ValueError, match="dtype"):
        clockwork.run(net, FRAMES, "oracle", dtype=dtype)


def test_pointwise_equals_the_1x1_convolution():
    conv = nnx.Conv(6, 5, (1, 1), rngs=nnx.Rngs(2))
    x = np.random.default_rng(3).normal(size=(2, 4, 7, 6)).astype(np.float32)
    want = np.einsum("nhwc,cd->nhwd", x, np.asarray(conv.kernel[...])[0, 0]) + conv.bias[...]
    np.testing.assert_allclose(model.pointwise(jnp.asarray(x), conv), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv(x), want, rtol=1e-5, atol=1e-5)


def test_compilation_cache_dir_follows_the_environment(tmp_path):
    assert compilation.cache_dir({"CWFCN_COMPILATION_CACHE": "0"}) is None
    assert compilation.cache_dir({"CWFCN_COMPILATION_CACHE": str(tmp_path)}) == tmp_path
    assert compilation.cache_dir({"CWFCN_CACHE": str(tmp_path)}) == tmp_path / "jax"


_CACHED_RUN = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from flax import nnx
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
    from cwfcn import clockwork, compilation, model
    path = compilation.enable_cache()
    net = model.narrow_fcn8s(3, rngs=nnx.Rngs(0))
    frames = np.zeros((2, 16, 16, 3), np.float32)
    clockwork.run(net, frames, "alternating").scores.block_until_ready()
    print(json.dumps({"path": str(path), "hits": len(hits)}))
""")


@pytest.mark.slow
def test_a_second_process_loads_the_engine_from_the_compilation_cache(tmp_path):
    """...and an entry that a killed process left half written is dropped and written again
    (issue 17: it made every later run warn that it could not read it, and compile)."""
    cache = tmp_path / "xla"
    env = {**os.environ, "CWFCN_COMPILATION_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", _CACHED_RUN], env=env, capture_output=True,
                              text=True, check=True)
        assert "Error reading persistent compilation cache" not in done.stderr, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def atime(entry: Path) -> Path:  # what JAX writes once `entry` is whole
        return entry.with_name(entry.name.removesuffix("-cache") + "-atime")

    first, second = run(), run()
    assert first["path"] == str(cache)
    entries = sorted(cache.glob("*-cache"))  # the first process wrote the executables,
    assert entries and all(atime(e).exists() for e in entries)
    assert (cache / ".lockfile").exists()  # under JAX's lock: the size bound turns it on
    assert first["hits"] == 0 and second["hits"] >= 1
    for entry in entries:  # what a kill in the middle of writing them leaves
        entry.write_bytes(entry.read_bytes()[:100])
        atime(entry).unlink()
    assert run()["hits"] == 0  # dropped and compiled (and the warning above never given)
    rewritten = [e for e in entries if e.exists()]  # those again over the time to be cached
    assert rewritten and all(e.stat().st_size > 100 and atime(e).exists() for e in rewritten)
