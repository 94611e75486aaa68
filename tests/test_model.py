"""Tests for cwfcn.model: FCN-8s shapes, stages and exactness to the Caffe net.

References are independent: numpy scatter loops for (de)convolutions and upsampling,
numpy ceil-mode pooling, Caffe's size and coordinate-map arithmetic worked out here,
and the stage methods called by hand.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cwfcn import model
from cwfcn.data import datasets

C = 5  # classes of the session net (conftest)


def _frames(seed: int, shape: tuple[int, ...], scale: float = 60.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, shape).astype(np.float32)


# A few frame stacks: odd x even, square, tall. Few distinct shapes keep compiles cheap.
FRAMES = {
    (1, 23, 30): _frames(1, (1, 23, 30, 3)),
    (2, 32, 32): _frames(2, (2, 32, 32, 3)),
    (1, 40, 21): _frames(3, (1, 40, 21, 3)),
}
F2 = FRAMES[(2, 32, 32)]


def _close(actual, expected, rel: float = 1e-4) -> None:
    """allclose with an absolute tolerance relative to the scale of `expected`."""
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0, atol=rel * scale)


# ---------------------------------------------------------------------------------------------
# numpy references


def _np_max_pool_ceil(x: np.ndarray) -> np.ndarray:
    """2x2/2 max-pool, Caffe ceil mode: the last window may hang over the border."""
    n, h, w, c = x.shape
    out = np.empty((n, math.ceil(h / 2), math.ceil(w / 2), c), x.dtype)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(1, 2))
    return out


def _np_deconv(x: np.ndarray, w: np.ndarray, s: int) -> np.ndarray:
    """Caffe Deconvolution, no pad: out[s*i+a, s*j+b, o] += x[i, j, c] * w[a, b, c, o]."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, h, wd, _ = x.shape
    kh, kw, _, cout = w.shape
    out = np.zeros((n, (h - 1) * s + kh, (wd - 1) * s + kw, cout))
    for i in range(h):
        for j in range(wd):
            for a in range(kh):
                for b in range(kw):
                    out[:, s * i + a, s * j + b, :] += x[:, i, j, :] @ w[a, b]
    return out


def _bilinear_1d(size: int) -> np.ndarray:
    """Bilinear taps of a size-2f kernel: (1, 3, 5, ..., 2f-1, 2f-1, ..., 3, 1) / 2f."""
    assert size % 2 == 0
    half = np.arange(1, size, 2) / size
    return np.concatenate([half, half[::-1]])


def _np_upsample_crop(x: np.ndarray, f: int, off: int, hw: tuple[int, int]) -> np.ndarray:
    """Per-channel scatter deconv with the 2-D bilinear kernel (2f, stride f), then a crop."""
    x = np.asarray(x, np.float64)
    k2 = np.outer(_bilinear_1d(2 * f), _bilinear_1d(2 * f))
    n, h, w, c = x.shape
    out = np.zeros((n, (h - 1) * f + 2 * f, (w - 1) * f + 2 * f, c))
    for i in range(h):
        for j in range(w):
            out[:, f * i : f * i + 2 * f, f * j : f * j + 2 * f, :] += (
                x[:, i, j, None, None, :] * k2[None, :, :, None]
            )
    assert out.shape[1] >= off + hw[0] and out.shape[2] >= off + hw[1], "crop out of range"
    return out[:, off : off + hw[0], off : off + hw[1]]


def _caffe_shapes(h: int) -> dict[str, int]:
    """Caffe FCN-8s sizes along one axis: conv1_1 pad 100, ceil pools, fc6 7x7 VALID."""
    size = h + 200 - 2
    pools = []
    for _ in range(5):
        size = -(-size // 2)
        pools.append(size)
    fc6 = pools[4] - 7 + 1
    upscore2 = (fc6 - 1) * 2 + 4
    up4 = (upscore2 - 1) * 2 + 4
    return {
        "pool3": pools[2],
        "pool4": pools[3],
        "fc6": fc6,
        "upscore2": upscore2,
        "upscore_pool4": up4,
        "upscore8": (up4 - 1) * 8 + 16,
    }


# ---------------------------------------------------------------------------------------------
# building blocks


def test_max_pool_ceil_matches_numpy_ceil_mode():
    """Odd and even sizes; all-negative inputs so a 0-padded border would be caught."""
    rng = np.random.default_rng(0)
    for shape in [(2, 5, 7, 3), (1, 4, 6, 2), (1, 1, 3, 1)]:
        x = -np.abs(rng.normal(size=shape)).astype(np.float32) - 0.5
        got = np.asarray(model.max_pool_ceil(jnp.asarray(x)))
        assert got.shape == (shape[0], math.ceil(shape[1] / 2), math.ceil(shape[2] / 2), shape[3])
        np.testing.assert_array_equal(got, _np_max_pool_ceil(x))


@pytest.mark.parametrize("k,s", [(4, 2), (5, 3), (3, 1), (16, 8)])
def test_deconv_matches_scatter_loop(k, s):
    """A random non-symmetric kernel catches a missing flip or transposed channels."""
    rng = np.random.default_rng(k * 10 + s)
    x = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    w = rng.normal(size=(k, k, 3, 2)).astype(np.float32)
    got = np.asarray(model.deconv(jnp.asarray(x), jnp.asarray(w), s))
    assert got.shape == (2, 2 * s + k, 3 * s + k, 2)
    _close(got, _np_deconv(x, w, s), rel=1e-5)


def test_deconv_hand_worked():
    """One input pixel and an asymmetric 2x2 kernel: the kernel is stamped, not flipped."""
    x = np.zeros((1, 2, 1, 1), np.float32)
    x[0, 1, 0, 0] = 2.0
    w = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[:, :, None, None]
    got = np.asarray(model.deconv(jnp.asarray(x), jnp.asarray(w), 3))[0, :, :, 0]
    expected = np.zeros((5, 2))
    expected[3:5, 0:2] = [[2.0, 4.0], [6.0, 8.0]]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_bilinear_kernel_values():
    np.testing.assert_allclose(model.bilinear_kernel(4), [0.25, 0.75, 0.75, 0.25], atol=1e-7)
    # size 16 (factor 8, centre 7.5): 1 - |i - 7.5| / 8 = (2i + 1) / 16 on the left half.
    expected16 = [1 - abs(i - 7.5) / 8 for i in range(16)]
    np.testing.assert_allclose(model.bilinear_kernel(16), expected16, atol=1e-7)
    np.testing.assert_allclose(model.bilinear_kernel(16)[:8], np.arange(1, 16, 2) / 16)
    # odd size 3 (factor 2, centre 1), FCN's upsample_filt
    np.testing.assert_allclose(model.bilinear_kernel(3), [0.5, 1.0, 0.5], atol=1e-7)
    assert model.bilinear_kernel(32).dtype == np.float32


def test_bilinear_deconv_init_is_per_channel_outer_product():
    w = model.bilinear_deconv_init(4, 3)
    assert w.shape == (4, 4, 3, 3)
    k2 = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    for ci in range(3):
        for co in range(3):
            np.testing.assert_allclose(w[:, :, ci, co], k2 if ci == co else 0.0, atol=1e-7)


@pytest.mark.parametrize(
    "factor,offset,in_hw,out_hw",
    [(8, 31, (8, 7), (23, 30)), (2, 1, (4, 3), (7, 5)), (16, 107, (14, 15), (23, 30))],
)
def test_upsample_crop_matches_scatter_deconv(factor, offset, in_hw, out_hw):
    x = np.random.default_rng(factor).normal(size=(2, *in_hw, 3)).astype(np.float32)
    got = np.asarray(model.upsample_crop(jnp.asarray(x), factor, offset, out_hw))
    assert got.shape == (2, *out_hw, 3)
    _close(got, _np_upsample_crop(x, factor, offset, out_hw), rel=1e-5)


@pytest.mark.parametrize("kh,kw", [(7, 7), (3, 2), (1, 1)])
def test_conv_as_matmul_matches_lax_conv(kh, kw):
    rng = np.random.default_rng(kh * 10 + kw)
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 4)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(kh, kw, 4, 6)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
    expected = jax.lax.conv_general_dilated(
        x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ) + b
    got = model.conv_as_matmul(x, k, b)
    assert got.shape == (2, 9 - kh + 1, 10 - kw + 1, 6)
    _close(got, expected, rel=1e-5)


def _np_conv_grads(x, kernel, g, pad):
    """d/dx, d/dkernel, d/dbias of sum(g * conv(x) + bias), as numpy loops over the taps."""
    (top, bottom), (left, right) = pad
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = kernel.shape[:2]
    h, w = g.shape[1:3]
    dxp, dk = np.zeros_like(xp), np.zeros_like(kernel)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i : i + h, j : j + w]
            dk[i, j] = np.einsum("nhwc,nhwd->cd", window, g)
            dxp[:, i : i + h, j : j + w] += np.einsum("nhwd,cd->nhwc", g, kernel[i, j])
    dx = dxp[:, top : top + x.shape[1], left : left + x.shape[2]]
    return dx, dk, g.sum((0, 1, 2))


@pytest.mark.parametrize("chunk_bytes", [None, 4096])  # one chunk; many, the last overhanging
def test_conv2d_and_its_gradients_match_numpy(chunk_bytes, monkeypatch):
    if chunk_bytes:
        monkeypatch.setattr(model, "KERNEL_GRAD_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 13, 9, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    bias = rng.normal(size=(4,)).astype(np.float32)
    pad = ((2, 2), (1, 0))  # uneven, as conv1_1's narrowed pad may be per axis
    y, vjp = jax.vjp(lambda *a: model.conv2d(*a, pad), *map(jnp.asarray, (x, kernel, bias)))
    expected = jax.lax.conv_general_dilated(x, kernel, (1, 1), pad,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    assert y.shape == (2, 15, 8, 4)
    _close(y, expected, rel=1e-5)
    g = rng.normal(size=y.shape).astype(np.float32)
    for got, want in zip(vjp(jnp.asarray(g)), _np_conv_grads(x, kernel, g, pad), strict=True):
        _close(got, want, rel=1e-5)


def test_preprocess_flips_to_bgr_and_subtracts_mean():
    rgb = np.array([[[[10, 20, 30], [255, 0, 7]]]], np.uint8)  # [1, 1, 2, 3]
    out = model.preprocess(rgb, (1.0, 2.0, 3.0))
    assert out.dtype == jnp.float32 and out.shape == (1, 1, 2, 3)
    # BGR = (30, 20, 10) and (7, 0, 255), minus (1, 2, 3); no uint8 wrap-around.
    np.testing.assert_allclose(out[0, 0], [[29.0, 18.0, 7.0], [6.0, -2.0, 252.0]])
    voc = model.preprocess(np.zeros((2, 3)), datasets.get("voc").mean_bgr)
    np.testing.assert_allclose(voc[0], [-104.00698793, -116.66876762, -122.67891434], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# the net


@pytest.mark.parametrize("shape", list(FRAMES))
def test_output_shape_and_dtype(net, shape):
    out = net(jnp.asarray(FRAMES[shape]))
    assert out.shape == (*shape, C)
    assert out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()
    assert float(jnp.std(out)) > 0.0  # random score layers: not a constant map


@pytest.mark.parametrize("hw", [(23, 30), (32, 32), (40, 21), (1, 1), (20, 37), (64, 48)])
def test_stage_shapes_follow_caffe_arithmetic(net, hw):
    """pool3 / pool4 / upscore2 sizes from the stage methods, vs Caffe's size arithmetic."""
    sh, sw = _caffe_shapes(hw[0]), _caffe_shapes(hw[1])
    x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
    pool3, score_pool3 = jax.eval_shape(net.stage1, x)
    pool4, score_pool4 = jax.eval_shape(net.stage2, pool3)
    upscore2 = jax.eval_shape(net.stage3, pool4)
    assert pool3.shape == (1, sh["pool3"], sw["pool3"], model.NARROW_WIDTHS[2])
    assert score_pool3.shape == (1, sh["pool3"], sw["pool3"], C)
    assert pool4.shape == (1, sh["pool4"], sw["pool4"], model.NARROW_WIDTHS[3])
    assert score_pool4.shape == (1, sh["pool4"], sw["pool4"], C)
    assert upscore2.shape == (1, sh["upscore2"], sw["upscore2"], C)
    out = jax.eval_shape(lambda a, b, c: net.fuse(a, b, c, hw), score_pool3, score_pool4, upscore2)
    assert out.shape == (1, *hw, C)
    assert jax.eval_shape(net, x).shape == (1, *hw, C)


def test_caffe_crops_always_fit():
    """With pad 100 every crop window lies inside its source (Caffe's arithmetic)."""
    for h in range(1, 200):
        s = _caffe_shapes(h)
        assert s["fc6"] >= 1
        assert model.POOL4_CROP + s["upscore2"] <= s["pool4"]
        assert model.POOL3_CROP + s["upscore_pool4"] <= s["pool3"]
        assert model.UPSCORE8_CROP + h <= s["upscore8"]


# Caffe coordinate maps: a layer maps its top coordinate y to its bottom as scale*y + shift.
def _conv_map(k: int, pad: int, stride: int = 1) -> tuple[float, float]:
    return stride, (k - 1) / 2 - pad


def _deconv_map(k: int, s: int) -> tuple[float, float]:
    return 1 / s, -(k - 1) / (2 * s)


def _compose(*maps: tuple[float, float]) -> tuple[float, float]:
    """Input coordinate of the last layer's output: in = a * y + b (maps from input side)."""
    a, b = 1.0, 0.0
    for scale, shift in maps:
        a, b = a * scale, a * shift + b
    return a, b


def _crop_offset(source: tuple[float, float], target: tuple[float, float]) -> float:
    """Offset o with source[y + o] aligned to target[y] (same stride on the input)."""
    assert source[0] == target[0]
    return (target[1] - source[1]) / source[0]


def test_crop_offsets_follow_caffe_coordinate_maps():
    conv3, pool = _conv_map(3, 1), _conv_map(2, 0, 2)
    pool3 = [_conv_map(3, 100), conv3, pool, conv3, conv3, pool, conv3, conv3, conv3, pool]
    pool4 = [*pool3, conv3, conv3, conv3, pool]
    score_fr = [*pool4, conv3, conv3, conv3, pool, _conv_map(7, 0), _conv_map(1, 0)]
    upscore2 = [*score_fr, _conv_map(1, 0), _deconv_map(4, 2)]
    upscore_pool4 = [*upscore2, _deconv_map(4, 2)]
    upscore8 = [*upscore_pool4, _deconv_map(16, 8)]
    assert _compose(*pool3) == (8, -95.5) and _compose(*pool4) == (16, -91.5)
    assert _crop_offset(_compose(*pool4), _compose(*upscore2)) == model.POOL4_CROP == 5
    assert _crop_offset(_compose(*pool3), _compose(*upscore_pool4)) == model.POOL3_CROP == 9
    assert _crop_offset(_compose(*upscore8), (1, 0)) == model.UPSCORE8_CROP == 31
    # The truncated baselines: score_pool3 x8 (kernel 16) and score_pool4 x16 (kernel 32).
    trunc3 = _compose(*pool3, _deconv_map(16, 8))
    trunc4 = _compose(*pool4, _deconv_map(32, 16))
    assert _crop_offset(trunc3, (1, 0)) == model.TRUNC_POOL3_CROP == 103
    assert _crop_offset(trunc4, (1, 0)) == model.TRUNC_POOL4_CROP == 107


def test_stages_compose_to_full_net(net):
    x = jnp.asarray(F2)
    pool3, score_pool3 = net.stage1(x)
    pool4, score_pool4 = net.stage2(pool3)
    upscore2 = net.stage3(pool4)
    _close(net.fuse(score_pool3, score_pool4, upscore2, (32, 32)), net(x), rel=1e-5)


def test_trunk_and_head_split_the_net_where_its_convolutions_end(net):
    x = jnp.asarray(F2)
    pool3, score_pool3 = net.stage1(x)
    pool4, score_pool4 = net.stage2(pool3)
    maps = net.trunk(x)
    _close(maps[0], pool3, rel=1e-6)
    _close(maps[1], pool4, rel=1e-6)
    conv5 = pool4
    for layer in (net.conv5_1, net.conv5_2, net.conv5_3):
        conv5 = jax.nn.relu(layer(conv5))
    _close(maps[2], _np_max_pool_ceil(np.asarray(conv5)), rel=1e-5)
    expected = net.fuse(score_pool3, score_pool4, net.stage3(pool4), (32, 32))
    _close(net.head(*maps, (32, 32)), expected, rel=1e-5)


def test_stage3_by_hand(net):
    """conv5 + ceil pool + fc6 (a plain VALID conv) + fc7 + score_fr + upscore2 scatter."""
    pool4, _ = net.stage2(net.stage1(jnp.asarray(F2))[0])
    x = pool4
    for layer in (net.conv5_1, net.conv5_2, net.conv5_3):
        x = jax.nn.relu(layer(x))
    x = jnp.asarray(_np_max_pool_ceil(np.asarray(x)))
    x = jax.nn.relu(net.fc6(x))  # nnx.Conv with padding VALID, not conv_as_matmul
    x = jax.nn.relu(net.fc7(x))
    expected = _np_deconv(np.asarray(net.score_fr(x)), np.asarray(net.upscore2[...]), 2)
    _close(net.stage3(pool4), expected, rel=1e-4)


def test_fuse_by_hand_with_dense_upsamplers(net):
    """Fusion = crops at 5 / 9 / 31, with learned (random, channel-mixing) upsamplers."""
    rng = np.random.default_rng(7)
    net2 = nnx.clone(net)
    net2.upscore2[...] = jnp.asarray(rng.normal(size=(4, 4, C, C)), jnp.float32)
    net2.upscore_pool4[...] = jnp.asarray(rng.normal(size=(4, 4, C, C)), jnp.float32)
    x = jnp.asarray(FRAMES[(1, 23, 30)])
    pool3, score_pool3 = net2.stage1(x)
    pool4, score_pool4 = net2.stage2(pool3)
    upscore2 = np.asarray(net2.stage3(pool4), np.float64)
    hu, wu = upscore2.shape[1:3]
    fuse_pool4 = upscore2 + np.asarray(score_pool4)[:, 5 : 5 + hu, 5 : 5 + wu]
    up4 = _np_deconv(fuse_pool4, np.asarray(net2.upscore_pool4[...]), 2)
    h4, w4 = up4.shape[1:3]
    fuse_pool3 = up4 + np.asarray(score_pool3)[:, 9 : 9 + h4, 9 : 9 + w4]
    expected = _np_upsample_crop(fuse_pool3, 8, 31, (23, 30))
    _close(net2.fuse(score_pool3, score_pool4, jnp.asarray(upscore2, jnp.float32), (23, 30)),
           expected, rel=1e-4)
    _close(net2(x), expected, rel=1e-4)
    # The random upsamplers matter: the session net (bilinear ones) gives other scores.
    assert float(jnp.abs(net(x) - net2(x)).max()) > 1e-2 * np.abs(expected).max()


# ---------------------------------------------------------------------------------------------
# truncated baselines and dropout


def test_truncated_by_hand(net):
    """stages=1: score_pool3 x8 cropped at 103; stages=2: score_pool4 x16 cropped at 107."""
    x = jnp.asarray(FRAMES[(1, 23, 30)])
    pool3, score_pool3 = net.stage1(x)
    _, score_pool4 = net.stage2(pool3)
    t1, t2 = net.truncated(x, stages=1), net.truncated(x, stages=2)
    assert t1.shape == t2.shape == (1, 23, 30, C)
    assert t1.dtype == t2.dtype == jnp.float32
    _close(t1, _np_upsample_crop(np.asarray(score_pool3), 8, 103, (23, 30)), rel=1e-5)
    _close(t2, _np_upsample_crop(np.asarray(score_pool4), 16, 107, (23, 30)), rel=1e-5)


def test_truncated_does_not_depend_on_stage3(net):
    """Zeroing fc6 changes the full net's scores but neither truncated baseline."""
    x = jnp.asarray(F2)
    net0 = nnx.clone(net)
    net0.fc6.kernel[...] = jnp.zeros_like(net0.fc6.kernel[...])
    full, full0 = net(x), net0(x)
    assert float(jnp.abs(full - full0).max()) > 1e-3 * float(jnp.abs(full).max())
    for stages in (1, 2):
        t, t0 = net.truncated(x, stages=stages), net0.truncated(x, stages=stages)
        assert t.shape == (2, 32, 32, C)
        np.testing.assert_array_equal(np.asarray(t), np.asarray(t0))


def test_truncated_rejects_other_stage_counts(net):
    x = jnp.asarray(FRAMES[(1, 23, 30)])
    for stages in (0, 3):
        with pytest.raises(ValueError):
            net.truncated(x, stages=stages)


def test_dropout_only_with_a_key(net):
    """Inference is deterministic (even after train()); a dropout_key turns dropout on."""
    x = jnp.asarray(F2)
    plain = np.asarray(net(x))
    np.testing.assert_array_equal(np.asarray(net(x)), plain)
    trained = nnx.clone(net)
    trained.train()
    _close(trained(x), plain, rel=1e-6)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    a, b = net(x, dropout_key=k1), net(x, dropout_key=k2)
    assert float(jnp.abs(a - plain).max()) > 1e-6, "a dropout_key must turn dropout on"
    assert float(jnp.abs(a - b).max()) > 1e-6, "different keys must give different masks"
    _close(net(x, dropout_key=k1), a, rel=1e-6)  # same key, same mask
    # Dropout sits in S3 only: S1/S2 outputs and the truncated nets ignore it.
    np.testing.assert_array_equal(np.asarray(net.truncated(x, 2)), np.asarray(net.truncated(x, 2)))


def _dense_stage1(net, x):
    """S1 as the Caffe net computes it: conv1_1 on its full 100-px pad, every map whole."""
    for block in ((net.conv1_1, net.conv1_2), (net.conv2_1, net.conv2_2),
                  (net.conv3_1, net.conv3_2, net.conv3_3)):
        for layer in block:
            x = jax.nn.relu(layer(x))
        x = model.max_pool_ceil(x)
    return x


@pytest.mark.parametrize("hw, gradients", [((1, 1), False), ((6, 7), True), ((24, 32), False),
                                           ((33, 50), False), ((64, 61), True)])
def test_stage1_border_shortcut_equals_the_full_pad(net, hw, gradients):
    """The narrower pad plus inserted far-field copies gives the full pad's pool3, and the
    same gradients (training goes through it too: checked on an odd small and a large
    size, each about 5 s of compiling)."""
    x = jnp.asarray(np.random.default_rng(sum(hw)).normal(0, 60, (2, *hw, 3)), jnp.float32)
    assert net.conv1_1.padding == 100  # the module still says what Caffe does
    want = np.asarray(jax.jit(_dense_stage1)(net, x))
    got = np.asarray(net.stage1(x)[0])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    if not gradients:
        return
    graphdef, params = nnx.split(net)

    def loss(p, f):
        return jnp.sum(jnp.sin(f(nnx.merge(graphdef, p), x)))

    grad = jax.jit(jax.grad(loss), static_argnums=1)  # op by op, each case took 20 s
    g_want = grad(params, _dense_stage1)
    g_got = grad(params, lambda n, v: n.stage1(v)[0])
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


@pytest.mark.parametrize("n", [1, 7, 256, 384, 499, 500, 1024])
def test_border_plan_lands_on_the_caffe_pad(n):
    p, (e2, *_), (e3, *_) = model.border_plan(n)
    assert p + 4 * e2 + 8 * e3 == model.CAFFE_PAD
    assert p < 60  # the shortcut really narrows the border (about 40% less S1 work)


@pytest.mark.parametrize("stages", [1, 2])
def test_truncated_fcn_by_hand(stages):
    """nets/net-pool3.py, net-pool4.py: the trunk to pool3 (pool4), score_fr on it, a fixed
    bilinear upscore (x8 kernel 16 / x16 kernel 32) and the crop (103 / 107)."""
    net = model.TruncatedFCN(stages, C, widths=model.NARROW_WIDTHS, zero_init_scores=False,
                             rngs=nnx.Rngs(2))
    assert not hasattr(net, f"conv{stages + 3}_1")  # nothing past its pool
    assert net.name == ("pool3", "pool4")[stages - 1]
    x = jnp.asarray(FRAMES[(1, 23, 30)])
    pool = np.asarray(_dense_stage1(net, x))
    if stages == 2:
        y = jnp.asarray(pool)
        for layer in (net.conv4_1, net.conv4_2, net.conv4_3):
            y = jax.nn.relu(layer(y))
        pool = _np_max_pool_ceil(np.asarray(y))
    score = pool @ np.asarray(net.score_fr.kernel[0, 0]) + np.asarray(net.score_fr.bias)
    factor, offset = (8, 103) if stages == 1 else (16, 107)
    want = _np_upsample_crop(score, factor, offset, (23, 30))
    _close(net(x), want, rel=1e-5)
    _close(net(x, dense=True), want, rel=1e-5)


def test_truncated_fcn_takes_one_or_two_stages():
    for stages in (0, 3):
        with pytest.raises(ValueError, match=r"use 1 .* or 2"):
            model.TruncatedFCN(stages, C, widths=model.NARROW_WIDTHS, rngs=nnx.Rngs(0))


def test_score_layers_are_the_nets_own(net):
    x = jnp.asarray(FRAMES[(1, 23, 30)])
    layers = net.score_layers(x)
    pool3, sp3 = net.stage1(x)
    pool4, sp4 = net.stage2(pool3)
    _close(layers["score_pool3"], sp3, rel=1e-6)
    _close(layers["score_pool4"], sp4, rel=1e-6)
    _close(layers["score"], net(x), rel=1e-5)
    up = np.asarray(model.deconv(layers["score_fr"], net.upscore2[...], 2))
    _close(up, net.stage3(pool4), rel=1e-5)


def test_truncated_tables_come_from_the_schedule_registry():
    from cwfcn import schedules

    assert model.TRUNCATED_STAGES == schedules.BASELINES == {"pool3": 1, "pool4": 2}
    assert model.TRUNCATED_NAMES == {1: "pool3", 2: "pool4"}
    assert model.ARCHS == ("fcn8s", "pool3", "pool4")
