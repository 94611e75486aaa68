"""Shared fixture: one narrow FCN-8s for the whole session (test_model and test_clockwork).

The net is shared so that each (shape, schedule) is traced and compiled once. Tests must
not mutate `net`: use `nnx.clone(net)` before changing parameters or train/eval mode.
"""

from __future__ import annotations

import pytest
from flax import nnx

from cwfcn import model

NUM_CLASSES = 5


@pytest.fixture(scope="session")
def net() -> model.FCN8s:
    """Narrow FCN-8s, 5 classes, random (non-zero) score layers."""
    return model.narrow_fcn8s(num_classes=NUM_CLASSES, rngs=nnx.Rngs(0))

