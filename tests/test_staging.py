"""Nothing outside model.py assumes three stages: a 2-stage and a 4-stage toy net through
`clockwork.run`, `Clockwork.step` / `run_chunk`, `batched.run_batch` and the evaluator.

Every output is compared with a reference written here: a loop over frames that calls the
toy's layers by hand on the stages a hand-typed fired table names, keeps the last output of
the others, and fuses.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cwfcn import batched, clockwork, evaluation

T, H, W, C = 9, 8, 8, 3


def _close(actual, expected, msg: str = "") -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-5,
                               err_msg=msg)


# ---------------------------------------------------------------------------------------------
# the toy nets: 1x1 layers (Linear on the channel axis), the last stage a global term so
# that its cache shows in every pixel


def _tanh_layer(name: str):
    def stage(m, x):
        return jnp.tanh(getattr(m, name)(x))

    return stage


def _first(m, frames):
    return jnp.tanh(m.layer1(frames / 100.0))


def _global_term(name: str):
    def stage(m, x):
        return getattr(m, name)(x).mean(axis=(1, 2), keepdims=True)  # [N, 1, 1, C]

    return stage


class Toy2(nnx.Module):
    """S1: 3 -> 4 channels; S2: a global [N, 1, 1, C] term. The clock watches S1."""

    num_classes = C

    def __init__(self, rngs: nnx.Rngs):
        self.layer1 = nnx.Linear(3, 4, rngs=rngs)
        self.layer2 = nnx.Linear(4, C, rngs=rngs)
        self.head1 = nnx.Linear(4, C, rngs=rngs)


def _fuse2(m: Toy2, outs, out_hw):
    h1, g = outs
    return m.head1(h1) + g


Toy2.staging = clockwork.Staging(stages=(_first, _global_term("layer2")), fuse=_fuse2,
                                 clock_scores=lambda outs: outs[0])


class Toy4(nnx.Module):
    """S1..S3: 3 -> 4 -> 5 -> 6 channels; S4: a global term. The clock watches S3."""

    num_classes = C

    def __init__(self, rngs: nnx.Rngs):
        self.layer1 = nnx.Linear(3, 4, rngs=rngs)
        self.layer2 = nnx.Linear(4, 5, rngs=rngs)
        self.layer3 = nnx.Linear(5, 6, rngs=rngs)
        self.layer4 = nnx.Linear(6, C, rngs=rngs)
        self.head1 = nnx.Linear(4, C, rngs=rngs)
        self.head2 = nnx.Linear(5, C, rngs=rngs)
        self.head3 = nnx.Linear(6, C, rngs=rngs)


def _fuse4(m: Toy4, outs, out_hw):
    h1, h2, h3, g = outs
    return m.head1(h1) + m.head2(h2) + m.head3(h3) + g


Toy4.staging = clockwork.Staging(
    stages=(_first, _tanh_layer("layer2"), _tanh_layer("layer3"), _global_term("layer4")),
    fuse=_fuse4, clock_scores=lambda outs: outs[2])


@pytest.fixture(scope="module")
def toy2():
    return Toy2(nnx.Rngs(1))


@pytest.fixture(scope="module")
def toy4():
    return Toy4(nnx.Rngs(2))


def _by_hand(net, stage: int, x):
    """Stage `stage` (0-based) of a toy, layer by layer."""
    layers = [f"layer{k + 1}" for k in range(len(net.staging.stages))]
    if stage == 0:
        return jnp.tanh(net.layer1(x / 100.0))
    out = getattr(net, layers[stage])(x)
    if stage == len(layers) - 1:
        return out.mean(axis=(1, 2), keepdims=True)
    return jnp.tanh(out)


def _fuse_by_hand(net, outs):
    heads = sum(getattr(net, f"head{k + 1}")(h) for k, h in enumerate(outs[:-1]))
    return np.asarray(heads + outs[-1])[0]


def _reference(net, frames, fired):
    """Scores `[T, H, W, C]`: stage k computed on frame t where fired[t][k], else cached."""
    outs, scores = [None] * len(fired[0]), []
    for t, row in enumerate(fired):
        for k, fires in enumerate(row):
            if fires:
                src = jnp.asarray(frames[t : t + 1]) if k == 0 else outs[k - 1]
                outs[k] = _by_hand(net, k, src)
        scores.append(_fuse_by_hand(net, outs))
    return np.stack(scores)


def _pipeline_reference(net, frames, lags_by_step):
    """Scores of a pipeline: on step t, a stage with lag 1 reads the previous step's output
    of the stage before it (the reference's loop of staged forwards)."""
    previous, scores = None, []
    for t in range(len(frames)):
        lags = lags_by_step[min(t, len(lags_by_step) - 1)]
        outs: list = []
        for k, lag in enumerate(lags):
            src = jnp.asarray(frames[t : t + 1]) if k == 0 else (previous if lag else outs)[k - 1]
            outs.append(_by_hand(net, k, src))
        previous = outs
        scores.append(_fuse_by_hand(net, outs))
    return np.stack(scores)


_rng = np.random.default_rng(0)
FRAMES = _rng.uniform(0, 255, (T, H, W, 3)).astype(np.float32)
_A, _B, _D = (_rng.uniform(0, 255, (H, W, 3)) for _ in range(3))
ADAPT_FRAMES = np.stack([_A, _A, _B, _B, _A, _D, _D, _B, _A]).astype(np.float32)
# Uniform frames whose brightness steps are hand-picked for the pixel clock.
BRIGHTNESS = [0, 3, 6, 30, 31, 45, 52, 10, 12]
PIXEL_FRAMES = np.stack([np.full((H, W, 3), 100.0 + b) for b in BRIGHTNESS]).astype(np.float32)

EXPONENTIAL_4 = [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0],
                 [1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]  # periods 1, 2, 4, 8
EXPONENTIAL_2 = [[1, 1], [1, 0]] * 4 + [[1, 1]]  # periods 1, 2
ALTERNATING_4 = [[1, 1, 1, 1], [1, 1, 1, 0]] * 4 + [[1, 1, 1, 1]]  # periods 1, 1, 1, 2
# The score clock on A A B B A D D B A: it fires on every change since its last firing.
ADAPTIVE_LAST = [1, 0, 1, 0, 1, 1, 0, 1, 1]
# The pixel clock, theta 20/255: change vs the last firing 0 3 6 30 | 1 15 22 | 42 | 2.
PIXEL_LAST = [1, 0, 0, 1, 0, 0, 1, 1, 0]
PIXEL_CHANGE = np.array([0, 3, 6, 30, 1, 15, 22, 42, 2], np.float32) / 255.0


def _gated(last: list[int], stages: int) -> list[list[int]]:
    return [[1] * (stages - 1) + [f] for f in last]


# ---------------------------------------------------------------------------------------------
# clockwork.run


@pytest.mark.parametrize("net_name,spec,fired", [
    ("toy4", "exponential", EXPONENTIAL_4),
    ("toy4", "alternating", ALTERNATING_4),
    ("toy2", "exponential", EXPONENTIAL_2),
    ("toy2", "oracle", [[1, 1]] * T),
])
def test_fixed_schedules_on_toy_stagings(request, net_name, spec, fired):
    net = request.getfixturevalue(net_name)
    out = clockwork.run(net, FRAMES, spec)
    np.testing.assert_array_equal(np.asarray(out.fired, int), fired)
    assert out.scores.shape == (T, H, W, C)
    _close(out.scores, _reference(net, FRAMES, fired))
    if spec != "oracle":  # the cache shows: not the oracle's scores
        oracle = _reference(net, FRAMES, [[1] * len(fired[0])] * T)
        assert np.abs(np.asarray(out.scores) - oracle).max() > 1e-3


def test_pipelines_on_toy_stagings(toy2, toy4):
    # pipeline3 on 4 stages lags the deepest 2: it fills (0,0,0,0), (0,0,0,1), then (0,0,1,1).
    out = clockwork.run(toy4, FRAMES, "pipeline3")
    assert np.asarray(out.fired).all()
    _close(out.scores, _pipeline_reference(toy4, FRAMES, [(0, 0, 0, 0), (0, 0, 0, 1),
                                                          (0, 0, 1, 1)]))
    out = clockwork.run(toy2, FRAMES, "pipeline2")
    _close(out.scores, _pipeline_reference(toy2, FRAMES, [(0, 0), (0, 1)]))
    with pytest.raises(ValueError, match=r"pipeline3 lags the deepest 2 stages.*has 2"):
        clockwork.run(toy2, FRAMES, "pipeline3")


def _clock_maps_differ(net, frames) -> bool:
    """A, B, D give different clock maps somewhere (the hand-typed table needs it)."""
    clock = len(net.staging.stages) - 2
    maps = []
    for t in (0, 2, 5):
        x = jnp.asarray(frames[t : t + 1])
        for k in range(clock + 1):
            x = _by_hand(net, k, x)
        maps.append(np.argmax(np.asarray(x), -1))
    return all((a != b).any() for a, b in ((maps[0], maps[1]), (maps[1], maps[2]),
                                            (maps[0], maps[2])))


@pytest.mark.parametrize("net_name", ["toy2", "toy4"])
def test_adaptive_clocks_on_toy_stagings(request, net_name):
    net = request.getfixturevalue(net_name)
    stages = len(net.staging.stages)
    assert _clock_maps_differ(net, ADAPT_FRAMES)
    out = clockwork.run(net, ADAPT_FRAMES, "adaptive:1e-6")
    np.testing.assert_array_equal(np.asarray(out.fired, int), _gated(ADAPTIVE_LAST, stages))
    _close(out.scores, _reference(net, ADAPT_FRAMES, _gated(ADAPTIVE_LAST, stages)))
    out = clockwork.run(net, PIXEL_FRAMES, f"adaptive-pixel:{20 / 255}")
    np.testing.assert_array_equal(np.asarray(out.fired, int), _gated(PIXEL_LAST, stages))
    np.testing.assert_allclose(np.asarray(out.change), PIXEL_CHANGE, atol=1e-6)
    _close(out.scores, _reference(net, PIXEL_FRAMES, _gated(PIXEL_LAST, stages)))


def test_schedules_of_another_stage_count_are_refused(toy2, toy4):
    with pytest.raises(ValueError, match="clocks 3 stages but the net has 4"):
        clockwork.run(toy4, FRAMES, "periods:1,2,4")
    with pytest.raises(ValueError, match="truncated baseline"):
        clockwork.Clockwork(toy2, "pool3")


# ---------------------------------------------------------------------------------------------
# Clockwork (streaming)


def test_streaming_on_a_four_stage_net(toy4):
    expected = _reference(toy4, FRAMES, EXPONENTIAL_4)
    cw = clockwork.Clockwork(toy4, "exponential")
    assert cw.schedule.periods == (1, 2, 4, 8)
    state = cw.init((H, W, 3))
    for t in range(T):
        state, scores, fired = cw.step(state, FRAMES[t])
        _close(scores, expected[t], msg=f"frame {t}")
        np.testing.assert_array_equal(np.asarray(fired, int), EXPONENTIAL_4[t])
    state = cw.init((H, W, 3))
    state, first = cw.run_chunk(state, FRAMES[:5])
    state, rest = cw.run_chunk(state, FRAMES[5:])
    _close(np.concatenate([first.scores, rest.scores]), expected)
    np.testing.assert_array_equal(np.concatenate([first.fired, rest.fired]).astype(int),
                                  EXPONENTIAL_4)


def test_streaming_on_a_two_stage_net(toy2):
    cw = clockwork.Clockwork(toy2, "adaptive:1e-6")
    state = cw.init((H, W, 3))
    expected = _reference(toy2, ADAPT_FRAMES, _gated(ADAPTIVE_LAST, 2))
    for t in range(T):
        state, scores, fired = cw.step(state, ADAPT_FRAMES[t])
        _close(scores, expected[t], msg=f"frame {t}")
        np.testing.assert_array_equal(np.asarray(fired, int), [1, ADAPTIVE_LAST[t]])


# ---------------------------------------------------------------------------------------------
# batched.run_batch


@pytest.mark.parametrize("net_name", ["toy2", "toy4"])
def test_run_batch_on_toy_stagings(request, net_name):
    net = request.getfixturevalue(net_name)
    stages = len(net.staging.stages)
    fixed = EXPONENTIAL_4 if stages == 4 else EXPONENTIAL_2
    out = batched.run_batch(net, np.stack([FRAMES, FRAMES[::-1]]), "exponential")
    for b, frames in enumerate((FRAMES, FRAMES[::-1])):
        np.testing.assert_array_equal(np.asarray(out.fired[b], int), fixed)
        _close(out.scores[b], _reference(net, frames, fixed), msg=f"stream {b}")
    # Adaptive: the gated stage fires per stream (stream 1 never changes after frame 0).
    still = np.repeat(ADAPT_FRAMES[:1], T, axis=0)
    out = batched.run_batch(net, np.stack([ADAPT_FRAMES, still]), "adaptive:1e-6")
    for b, (frames, last) in enumerate(((ADAPT_FRAMES, ADAPTIVE_LAST), (still, [1] + [0] * 8))):
        np.testing.assert_array_equal(np.asarray(out.fired[b], int), _gated(last, stages))
        _close(out.scores[b], _reference(net, frames, _gated(last, stages)), msg=f"stream {b}")


# ---------------------------------------------------------------------------------------------
# the evaluator


@pytest.mark.parametrize("net_name,fired_rates", [
    ("toy4", [1.0, 5 / 9, 3 / 9, 2 / 9]),  # exponential: periods 1, 2, 4, 8 over 9 frames
    ("toy2", [1.0, 5 / 9]),
])
def test_evaluator_on_toy_stagings(request, net_name, fired_rates):
    net = request.getfixturevalue(net_name)
    table = EXPONENTIAL_4 if net_name == "toy4" else EXPONENTIAL_2
    rgb = np.round(FRAMES).astype(np.uint8)
    # The net sees BGR minus a zero mean.
    preds = np.argmax(_reference(net, rgb[..., ::-1].astype(np.float32), table), -1)
    labels = np.random.default_rng(3).integers(0, C, (T, H, W)).astype(np.uint8)
    labels[0] = preds[0]  # frame 0 right everywhere
    row = evaluation.evaluate_schedule(net, [(rgb, labels)], "exponential",
                                       mean_bgr=(0.0, 0.0, 0.0), scored=slice(None))
    np.testing.assert_allclose(row["fired"], fired_rates, atol=1e-6)
    assert row["pixel_acc"] == pytest.approx(float(np.mean(preds == labels)), abs=1e-6)
