"""Checkpoints round-trip exactly, keep the newest steps, and refuse a net they do not fit."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from cwfcn import checkpoint, model


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_round_trip_params_and_optimizer(tmp_path):
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    params = nnx.state(net)
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(params)
    checkpoint.save(tmp_path, 7, params, opt_state)
    assert checkpoint.latest_step(tmp_path) == 7

    other = model.narrow_fcn8s(5, rngs=nnx.Rngs(1))  # different values, same shapes
    assert not _leaves_equal(nnx.state(other), params)
    step, restored, restored_opt = checkpoint.restore(tmp_path, nnx.state(other), opt_state)
    assert step == 7
    assert _leaves_equal(restored, params)
    assert _leaves_equal(restored_opt, opt_state)

    assert checkpoint.load_params(tmp_path, other) == 7
    x = np.random.default_rng(0).normal(size=(1, 20, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(other(x), net(x))


def test_keeps_only_the_newest_steps(tmp_path):
    params = nnx.state(model.narrow_fcn8s(5, rngs=nnx.Rngs(0)))
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, params, max_to_keep=2)
    assert checkpoint.latest_step(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3", "4"]


def test_missing_and_mismatched_checkpoints_raise_clear_errors(tmp_path):
    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    assert checkpoint.latest_step(tmp_path / "nothing") is None
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load_params(tmp_path / "nothing", net)
    checkpoint.save(tmp_path, 1, nnx.state(net))
    with pytest.raises(checkpoint.CheckpointError, match=r"does not fit this net.*score_fr"):
        checkpoint.load_params(tmp_path, model.narrow_fcn8s(7, rngs=nnx.Rngs(0)))


def test_optimizer_change_is_named(tmp_path):
    params = nnx.state(model.narrow_fcn8s(5, rngs=nnx.Rngs(0)))
    checkpoint.save(tmp_path, 1, params, optax.sgd(0.1, momentum=0.9).init(params))
    with pytest.raises(checkpoint.CheckpointError, match="another optimizer"):
        checkpoint.restore(tmp_path, params, optax.adam(1e-3).init(params))
