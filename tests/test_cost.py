"""FLOP accounting: XLA's count per stage against hand-counted convolutions."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cwfcn import clockwork, cost, model

WIDTHS = (16, 16, 32, 32, 32, 64)


def _conv_flops(h, w, k, cin, cout):
    return 2 * h * w * k * k * cin * cout


def _hand_flops(size, widths, c):
    """Multiply-add FLOPs of every conv/deconv of FCN-8s as computed: S1's blocks run on
    conv1_1's narrower pads (`model.border_plan`), the rest by the Caffe shape arithmetic."""
    w1, w2, w3, w4, w5, wf = widths
    pad, (e2, *_), (e3, *_) = model.border_plan(size)
    h = size + 2 * pad - 2
    s1 = _conv_flops(h, h, 3, 3, w1) + _conv_flops(h, h, 3, w1, w1)
    h = -(-h // 2)
    s1 += _conv_flops(h, h, 3, w1, w2) + _conv_flops(h, h, 3, w2, w2)
    h = -(-h // 2) + 2 * e2
    s1 += _conv_flops(h, h, 3, w2, w3) + 2 * _conv_flops(h, h, 3, w3, w3)
    h3 = -(-h // 2) + 2 * e3
    assert h3 == -(-(-(-(size + 198) // 2) // 2) // 2)  # pool3 of the full 100-px pad
    s1 += _conv_flops(h3, h3, 1, w3, c)
    s2 = _conv_flops(h3, h3, 3, w3, w4) + 2 * _conv_flops(h3, h3, 3, w4, w4)
    h4 = -(-h3 // 2)
    s2 += _conv_flops(h4, h4, 1, w4, c)
    s3 = _conv_flops(h4, h4, 3, w4, w5) + 2 * _conv_flops(h4, h4, 3, w5, w5)
    h6 = -(-h4 // 2) - 6
    s3 += _conv_flops(h6, h6, 7, w5, wf) + _conv_flops(h6, h6, 1, wf, wf)
    s3 += _conv_flops(h6, h6, 1, wf, c)
    return s1, s2, s3


def test_stage_flops_match_hand_count():
    net = model.FCN8s(5, widths=WIDTHS, rngs=nnx.Rngs(0))
    flops = cost.stage_flops(net, (40, 40, 3))
    hand = _hand_flops(40, WIDTHS, 5)
    # XLA skips the taps that read zero padding (~8% here, on small maps) and adds
    # biases, ReLUs and pools: the count stays close below the dense hand count.
    for got, want in zip(flops.stages, hand, strict=True):
        assert 0.9 * want <= got <= 1.02 * want, (got, want)
    assert 0 < flops.fuse < 0.01 * flops.total
    assert flops.total == pytest.approx(sum(flops.stages) + flops.fuse)


def test_flop_fraction_hand_worked():
    flops = cost.StageFlops(stages=(1.0, 2.0, 3.0), fuse=0.5)
    fired = np.array([[1, 1, 1], [1, 0, 0]], bool)
    # frame 0: 6 + 0.5; frame 1: 1 + 0.5; of 2 x 6.5.
    assert cost.flop_fraction(fired, flops) == pytest.approx(8.0 / 13.0)
    assert cost.flop_fraction(np.ones((4, 3), bool), flops) == pytest.approx(1.0)


def _mm(net, x):
    return x @ net.w[...]


def _fuse_sum(net, outs, hw):
    return outs[-1]


class _MatmulNet(nnx.Module):
    """Three stages of plain matmuls: their FLOPs are exactly 2 * M * K * N each."""

    staging = clockwork.Staging(stages=(_mm, _mm, _mm), fuse=_fuse_sum,
                                clock_scores=lambda outs: outs[1])

    def __init__(self):
        self.w = nnx.Param(jnp.ones((3, 3)))


def test_stage_flops_exact_on_matmuls():
    flops = cost.stage_flops(_MatmulNet(), (4, 5, 3))
    assert flops.stages == (2 * 20 * 3 * 3,) * 3
    assert flops.fuse == 0


def _dense_hand_flops(size, widths, c):
    """The Caffe net's multiply-add FLOPs: conv1_1 on the full 100-px pad, every tap."""
    w1, w2, w3 = widths[:3]
    h = size + 198
    s1 = _conv_flops(h, h, 3, 3, w1) + _conv_flops(h, h, 3, w1, w1)
    h = -(-h // 2)
    s1 += _conv_flops(h, h, 3, w1, w2) + _conv_flops(h, h, 3, w2, w2)
    h = -(-h // 2)
    s1 += _conv_flops(h, h, 3, w2, w3) + 2 * _conv_flops(h, h, 3, w3, w3)
    h3 = -(-h // 2)
    s1 += _conv_flops(h3, h3, 1, w3, c)
    return (s1, *_hand_flops(size, widths, c)[1:])


def test_dense_flops_are_the_caffe_count():
    net = model.FCN8s(5, widths=WIDTHS, rngs=nnx.Rngs(0))
    dense = cost.stage_flops(net, (40, 40, 3), dense=True)
    hand = _dense_hand_flops(40, WIDTHS, 5)
    # S3 also counts upscore2, a 4x4 deconv of C channels on fc7's 2x2 map (40 px: 238, 119,
    # 60, 30, 15, 8 after the pools, minus 6 for fc6), as Caffe's Deconvolution: each input
    # pixel meets each tap.
    up2 = 2 * (2 * 2) * 16 * 5 * 5
    assert dense.stages[0] == pytest.approx(hand[0])
    assert dense.stages[1] == pytest.approx(hand[1])
    assert dense.stages[2] == pytest.approx(hand[2] + up2)
    executed = cost.stage_flops(net, (40, 40, 3))
    assert executed.stages[0] < 0.9 * dense.stages[0]  # the border shortcut: less work


def test_the_paper_scale_dense_count():
    """FCN-8s at 500 px: 363 GFLOP dense (DESIGN.md), S1 half of it."""
    net = nnx.eval_shape(lambda: model.FCN8s(21, rngs=nnx.Rngs(0)))  # shapes suffice
    dense = cost.stage_flops(net, (500, 500, 3), dense=True)
    assert dense.total / 1e9 == pytest.approx(363, abs=1.0)
    assert dense.stages[0] / dense.total == pytest.approx(0.50, abs=0.01)


def test_pipeline_latency_hand_worked():
    stages, fuse = (5.0, 3.0, 2.0), 0.5
    assert cost.pipeline_latency((0, 0, 0), stages, fuse) == pytest.approx(1.0)
    assert cost.pipeline_latency((0, 1, 1), stages, fuse) == pytest.approx(5.5 / 10.5)
    assert cost.pipeline_latency((0, 0, 1), stages, fuse) == pytest.approx(8.5 / 10.5)
    assert cost.pipeline_latency((0, 1, 0), stages, fuse) == pytest.approx(5.5 / 10.5)


def test_baseline_net_flops():
    trunc = model.TruncatedFCN(1, 5, widths=WIDTHS, rngs=nnx.Rngs(0))
    dense = cost.net_flops(trunc, (40, 40, 3), lambda m, f: m(f, dense=True), dense=True)
    # conv1_1 .. conv3_3 and score_fr on pool3, as S1; plus the bilinear x8 as two matmuls:
    # [40 x 30] over the rows of [30, 30, 5], then [40 x 30] over the columns of [40, 30, 5].
    s1 = _dense_hand_flops(40, WIDTHS, 5)[0]
    assert dense == pytest.approx(s1 + 2 * (40 * 30 * 30 * 5 + 40 * 40 * 30 * 5))
    assert cost.net_flops(trunc, (40, 40, 3), lambda m, f: m(f)) < 0.9 * dense
