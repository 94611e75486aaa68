"""Tests for cwfcn.batched: many streams equal one `clockwork.run` per stream, and the
adaptive gate computes the gated stage on a slot no larger than the firing streams need."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cwfcn import batched, clockwork

H = W = 48
THETA = 0.05

_rng = np.random.default_rng(1)
_SCENES = {
    "A": _rng.normal(0.0, 60.0, (H, W, 3)),
    "B": np.full((H, W, 3), 150.0),
    "D": np.full((H, W, 3), -150.0),
    "E": _rng.uniform(-120.0, 120.0, (H, W, 3)),
}
# Four streams whose clocks differ: one never refires, one refires on most frames.
_PLAYLISTS = ("AAAAA", "AEEBB", "BABAB", "EEEDA")
VIDEOS = np.stack([np.stack([_SCENES[s] for s in p]) for p in _PLAYLISTS]).astype(np.float32)


@pytest.mark.parametrize("schedule", ["adaptive:0.05", "exponential", "pipeline3"])
def test_each_stream_equals_clockwork_run_alone(net, schedule):
    out = batched.run_batch(net, VIDEOS, schedule)
    assert out.scores.shape == (*VIDEOS.shape[:-1], 5)
    assert out.fired.shape == (*VIDEOS.shape[:2], 3) and out.change.shape == VIDEOS.shape[:2]
    for b, video in enumerate(VIDEOS):
        ref = clockwork.run(net, video, schedule)
        np.testing.assert_array_equal(out.fired[b], ref.fired, err_msg=f"stream {b}")
        np.testing.assert_allclose(out.change[b], ref.change, atol=1e-6)
        scale = float(np.abs(ref.scores).max())
        np.testing.assert_allclose(out.scores[b], ref.scores, rtol=0, atol=1e-5 * scale)
    if schedule.startswith("adaptive"):
        # The streams disagree on some frames, so the gather, not a shared clock, was tested.
        per_frame = np.asarray(out.fired[:, 1:, 2]).sum(0)
        assert set(per_frame.tolist()) - {0, len(VIDEOS)}, per_frame


def test_adaptive_batch_with_coarse_capacities_gives_the_same(net):
    fine = batched.run_batch(net, VIDEOS, f"adaptive:{THETA}")
    coarse = batched.run_batch(net, VIDEOS, f"adaptive:{THETA}", capacities=(2,))
    np.testing.assert_array_equal(coarse.fired, fine.fired)
    np.testing.assert_allclose(coarse.scores, fine.scores, rtol=0, atol=1e-4)


# A stage that reports the size of the slot it ran on, so the test sees the work done.
_STAGING = clockwork.Staging(
    stages=(lambda net, x: x, lambda net, x: jnp.full_like(x, x.shape[0])),
    fuse=lambda net, outs, hw: outs[-1],
    clock_scores=lambda outs: outs[0],
)


@pytest.mark.parametrize(
    ("fire", "capacities", "slot"),
    [
        ([0, 1, 0, 1, 1], (1, 2, 3, 4, 5), 3),
        ([0, 1, 0, 1, 1], (1, 2, 4, 5), 4),
        ([0, 0, 0, 1, 0], (1, 2, 4, 5), 1),
        ([1, 1, 1, 1, 1], (1, 2, 4, 5), 5),
        ([0, 0, 0, 0, 0], (1, 2, 4, 5), None),
    ],
)
def test_gated_stage_runs_on_the_smallest_slot_holding_the_firing_streams(fire, capacities, slot):
    fire = jnp.asarray(fire, bool)
    src = jnp.arange(5.0)[:, None]
    cached = jnp.full((5, 1), -1.0)

    @jax.jit
    def gate(src, cached, fire):
        return batched.gated_stage(None, _STAGING, capacities, src, cached, fire)

    out = np.asarray(gate(src, cached, fire))[:, 0]
    want = np.where(np.asarray(fire), slot if slot is not None else -1, -1.0)
    np.testing.assert_array_equal(out, want)
    # One compiled branch per capacity plus the skip; only the taken one runs.
    assert "cond" in str(jax.make_jaxpr(gate)(src, cached, fire))


def test_check_capacities():
    assert batched.check_capacities(None, 4) == (1, 2, 3, 4)
    assert batched.check_capacities([4, 1, 2, 2], 8) == (1, 2, 4, 8)
    for bad in ([0, 2], [9], []):
        with pytest.raises(ValueError, match="capacities"):
            batched.check_capacities(bad, 8)


def test_bad_input_raises(net):
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        batched.run_batch(net, VIDEOS[0], "oracle")
    with pytest.raises(ValueError, match="floating"):
        batched.run_batch(net, VIDEOS.astype(np.uint8), "oracle")
    with pytest.raises(ValueError, match="unknown schedule"):
        batched.run_batch(net, VIDEOS, "sometimes")
    with pytest.raises(ValueError, match="capacities"):
        batched.run_batch(net, VIDEOS, "adaptive", capacities=(5,))
