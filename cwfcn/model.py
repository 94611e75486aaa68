"""FCN-8s on VGG16 (Long, Shelhamer, Darrell), staged for clockwork execution.

The topology is the Caffe "fcn8s" net of the paper: conv1_1 is padded by 100, the
2x2/2 max-pools round up (Caffe's ceil mode), fc6 is a 7x7 convolution without
padding, and the skip paths are cropped at offsets 5 (score_pool4), 9 (score_pool3)
and 31 (upscore8). All tensors are NHWC; frames are BGR, 0..255, minus the data
set's mean (see `preprocess`).

The net is cut into three stages for the clockwork engine (DESIGN.md):
  S1 = conv1_1 .. pool3 (+ score_pool3), S2 = conv4_1 .. pool4 (+ score_pool4),
  S3 = conv5_1 .. fc7, score_fr, upscore2,
and `fuse` combines the latest output of each stage into full-size scores.
`FCN8s.staging` tells `clockwork` how to call them, so the engine never needs to
know this network.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cwfcn.clockwork import Staging
from cwfcn.schedules import BASELINES

# VGG16 channel widths per block, then fc6/fc7; `narrow` keeps the topology.
VGG16_WIDTHS = (64, 128, 256, 512, 512, 4096)
NARROW_WIDTHS = (4, 8, 8, 16, 16, 32)

# Crop offsets of the Caffe net, from its coordinate maps.
POOL4_CROP, POOL3_CROP, UPSCORE8_CROP = 5, 9, 31
# Offsets of the truncated baselines: score_pool4 x16 and score_pool3 x8 upsampled
# bilinearly, mapped back to the input (pool4 -> in = 16 y - 91.5, and a 32/16
# kernel shifts by 15.5: 107; pool3 -> in = 8 y - 95.5, a 16/8 kernel: 103).
TRUNC_POOL4_CROP, TRUNC_POOL3_CROP = 107, 103
# The truncated baselines' upsampling per stages kept: (factor, crop offset) of the fixed
# bilinear `upscore` (clockwork-fcn nets/net-pool3.py: kernel 16, stride 8; net-pool4.py:
# kernel 32, stride 16), and the paper's names for them.
TRUNCATED_UPSCORE = {1: (8, TRUNC_POOL3_CROP), 2: (16, TRUNC_POOL4_CROP)}
TRUNCATED_STAGES = dict(BASELINES)  # name -> stages kept (the schedule registry's baselines)
TRUNCATED_NAMES = {stages: name for name, stages in TRUNCATED_STAGES.items()}
ARCHS = ("fcn8s", *TRUNCATED_NAMES.values())  # what `config.model.arch` may name


def preprocess(images: jax.Array | np.ndarray, mean_bgr: Sequence[float]) -> jax.Array:
    """RGB uint8 images -> the net's input.

    Args:
      images: `[..., H, W, 3]` RGB, 0..255 (any numeric dtype).
      mean_bgr: the data set's mean, BGR order (`datasets.get(name).mean_bgr`).

    Returns:
      float32 `[..., H, W, 3]`: BGR minus the mean, no scaling (as the Caffe nets).
    """
    x = jnp.asarray(images, jnp.float32)[..., ::-1]
    return x - jnp.asarray(mean_bgr, jnp.float32)


def bilinear_kernel(size: int) -> np.ndarray:
    """1-D bilinear interpolation taps of an upsampling deconvolution.

    Args:
      size: the kernel size (2 x factor for the FCN upsamplers).

    Returns:
      float32 `[size]`; the 2-D kernel is its outer product (FCN's `upsample_filt`).
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return (1 - np.abs(np.arange(size) - center) / factor).astype(np.float32)


def bilinear_deconv_init(size: int, channels: int) -> np.ndarray:
    """A `[size, size, C, C]` deconv kernel that upsamples each channel on its own."""
    taps = np.outer(bilinear_kernel(size), bilinear_kernel(size))
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = taps[:, :, None]
    return kernel


def deconv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Caffe's Deconvolution with no padding: out[s*i + a] += x[i] * w[a].

    Args:
      x: `[N, h, w, Cin]`.
      kernel: `[k, k, Cin, Cout]`, Caffe's `[Cin, Cout, k, k]` transposed.
      stride: the upsampling factor s.

    Returns:
      `[N, (h-1)*s + k, (w-1)*s + k, Cout]`.
    """
    size = kernel.shape[0]
    # A transposed conv is a conv over the s-dilated input with the flipped kernel.
    return jax.lax.conv_general_dilated(
        x,
        kernel[::-1, ::-1],
        window_strides=(1, 1),
        padding=((size - 1, size - 1), (size - 1, size - 1)),
        lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _interp_matrix(n_in: int, factor: int, offset: int, n_out: int) -> np.ndarray:
    """`[n_out, n_in]`: a fixed bilinear deconv (kernel 2*factor) along one axis, cropped."""
    taps = bilinear_kernel(2 * factor)
    n_up = (n_in - 1) * factor + 2 * factor
    if offset + n_out > n_up:
        raise ValueError(f"crop [{offset}, {offset + n_out}) runs past the {n_up} upsampled "
                         f"positions of {n_in} inputs: the input is too small for this output")
    matrix = np.zeros((n_up, n_in), np.float32)
    for i in range(n_in):
        matrix[i * factor : i * factor + 2 * factor, i] = taps
    return matrix[offset : offset + n_out]


def upsample_crop(x: jax.Array, factor: int, offset: int, out_hw: tuple[int, int]) -> jax.Array:
    """A fixed per-channel bilinear deconv (kernel 2*factor, stride factor), then a crop.

    Equal to Caffe's grouped bilinear Deconvolution followed by Crop, but computed as
    two small matmuls, since the kernel is separable (grouped transposed convs are
    pathologically slow on XLA CPU).

    Args:
      x: `[N, h, w, C]`.
      factor: the stride; the kernel is 2 * factor wide.
      offset: the crop offset on both axes.
      out_hw: (H, W) of the output.

    Returns:
      `[N, H, W, C]`, x's dtype.
    """
    mh = jnp.asarray(_interp_matrix(x.shape[1], factor, offset, out_hw[0]), x.dtype)
    mw = jnp.asarray(_interp_matrix(x.shape[2], factor, offset, out_hw[1]), x.dtype)
    y = jnp.einsum("Hh,nhwc->nHwc", mh, x)
    return jnp.einsum("Ww,nHwc->nHWc", mw, y)


def max_pool_ceil(x: jax.Array) -> jax.Array:
    """2x2/2 max-pool that rounds up, as Caffe: `[N, h, w, C] -> [N, ceil(h/2), ceil(w/2), C]`.

    The max of four strided slices: XLA CPU fuses a `reduce_window` into the
    convolutions before it (one YNNPACK graph) and runs conv4_1..pool4 about 35% slower.
    """
    pad = ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0))
    x = jnp.pad(x, pad, constant_values=-jnp.inf)
    return jnp.maximum(jnp.maximum(x[:, 0::2, 0::2], x[:, 1::2, 0::2]),
                       jnp.maximum(x[:, 0::2, 1::2], x[:, 1::2, 1::2]))


def conv_as_matmul(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """A VALID, stride-1 convolution as shifted slices + one matmul (im2col).

    Used for fc6 (7x7, 512 -> 4096 on a small map), which XLA CPU runs at well
    under half its matmul speed as a convolution, and about 4x faster this way.

    Args:
      x: `[N, h, w, Cin]`.
      kernel: `[k, k, Cin, Cout]`.
      bias: `[Cout]`.

    Returns:
      `[N, h - k + 1, w - k + 1, Cout]`.
    """
    kh, kw, cin, cout = kernel.shape
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    cols = jnp.concatenate(
        [x[:, i : i + h, j : j + w] for i in range(kh) for j in range(kw)], axis=-1
    )
    return cols @ kernel.reshape(kh * kw * cin, cout) + bias


# Bytes of the patches one chunk of `_kernel_grad` builds: the full map's are up to 0.4 GB.
KERNEL_GRAD_CHUNK_BYTES = 32 * 2**20


def _conv(x: jax.Array, kernel: jax.Array, padding: tuple) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...],
                 padding: tuple) -> jax.Array:
    """The kernel gradient of a stride-1 conv as im2col matmuls, over chunks of rows.

    dW[i, j] = sum over n, h, w of xpad[n, h + i, w + j] g[n, h, w]: each chunk's patches
    `[rows * W, kh * kw * Cin]` times its `[rows * W, Cout]` of g, summed over the chunks
    (a scan; rows of g past the map are zero, so the last chunk may overhang).

    Args:
      x: the conv's input `[N, H_in, W_in, Cin]`.
      g: the output's cotangent `[N, H, W, Cout]`.
      kernel_shape: (kh, kw, Cin, Cout).
      padding: ((top, bottom), (left, right)).

    Returns:
      `[kh, kw, Cin, Cout]`, x's dtype.
    """
    kh, kw, cin, cout = kernel_shape
    n, h, w, _ = g.shape
    size = n * h * w * kh * kw * cin * x.dtype.itemsize
    chunks = min(h, -(-size // KERNEL_GRAD_CHUNK_BYTES))
    rows = -(-h // chunks)
    extra = rows * chunks - h
    (top, bottom), horizontal = padding
    xp = jnp.pad(x, ((0, 0), (top, bottom + extra), horizontal, (0, 0)))
    gp = jnp.pad(g, ((0, 0), (0, extra), (0, 0), (0, 0)))

    def chunk(index):
        xs = jax.lax.dynamic_slice_in_dim(xp, index * rows, rows + kh - 1, axis=1)
        gs = jax.lax.dynamic_slice_in_dim(gp, index * rows, rows, axis=1)
        cols = jnp.concatenate([xs[:, i : i + rows, j : j + w] for i in range(kh)
                                for j in range(kw)], axis=-1)
        return jnp.einsum("nhwk,nhwd->kd", cols, gs)

    if chunks == 1:
        grad = chunk(0)
    else:
        grad = jax.lax.fori_loop(0, chunks, lambda i, acc: acc + chunk(i),
                                 jnp.zeros((kh * kw * cin, cout), x.dtype))
    return grad.reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array, padding: tuple) -> jax.Array:
    """A stride-1 convolution + bias, as `nnx.Conv`, whose kernel gradient is im2col
    matmuls (`_kernel_grad`).

    XLA CPU computes a large map's kernel gradient as a convolution at a fraction of its
    matmul speed: at 384 px, conv1_1's takes 1011 ms that way and 22 ms as matmuls, conv1_2's
    468 ms and 315 ms. The forward and the input gradient are XLA's own.

    Args:
      x: `[N, H_in, W_in, Cin]`.
      kernel: `[kh, kw, Cin, Cout]`, x's dtype.
      bias: `[Cout]`.
      padding: ((top, bottom), (left, right)), static.

    Returns:
      `[N, H_in + top + bottom - kh + 1, W_in + left + right - kw + 1, Cout]`.
    """
    return _conv(x, kernel, padding) + bias


def _conv2d_fwd(x, kernel, bias, padding):
    return conv2d(x, kernel, bias, padding), (x, kernel)


def _conv2d_bwd(padding, residuals, g):
    x, kernel = residuals
    dx = jax.vjp(lambda v: _conv(v, kernel, padding), x)[1](g)[0]
    return dx, _kernel_grad(x, g, kernel.shape, padding), g.sum((0, 1, 2))


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv_relu(x: jax.Array, layer: nnx.Conv) -> jax.Array:
    """ReLU of a trunk's 3x3 `nnx.Conv` (padding 1) as `conv2d`, in the common dtype of x
    and the layer's params (as `nnx.Conv`)."""
    kernel, bias = layer.kernel[...], layer.bias[...]
    dtype = jnp.result_type(x, kernel)
    return jax.nn.relu(conv2d(x.astype(dtype), kernel.astype(dtype), bias.astype(dtype),
                              ((1, 1), (1, 1))))


def pointwise(x: jax.Array, conv: nnx.Conv) -> jax.Array:
    """A 1x1 `nnx.Conv` as one matmul: `[N, h, w, Cin] -> [N, h, w, Cout]`.

    XLA CPU runs a 1x1 convolution about half as fast as the same matmul (fc7:
    4096 x 4096 on the fc6 map).
    """
    return x @ conv.kernel[0, 0] + conv.bias[...]


# conv1_1 pads by 100 px (the Caffe net), so S1 spends about half its work on a border
# where, away from the photo and from the map's edge, every map is a per-channel
# constant. `stage1` runs its first blocks on a narrower pad and then widens the maps by
# copies of a border column (and row): exactly the maps of the full pad, for less work.
CAFFE_PAD = 100


def _influence(n: int, pad: int, ops: Sequence[str]) -> list[tuple[np.ndarray, ...]]:
    """Along one axis of n pixels, which positions of each layer's output the photo
    (content) or the map's left / right edge (the zero padding of the 3x3 convs) reach.

    Args:
      n: pixels of the photo along the axis.
      pad: conv1_1's padding.
      ops: the layers after conv1_1: "conv" (3x3, pad 1) or "pool" (2x2/2, ceil).

    Returns:
      Per layer, conv1_1's first: bool masks (content, left, right) over its positions.
      Elsewhere the map equals the far field: one constant per channel.
    """
    positions = n + 2 * pad - 2  # conv1_1's output: a 3x3 window over the padded photo
    content = np.zeros(positions, bool)
    content[max(pad - 2, 0) : pad + n] = True  # windows [j, j + 2] that meet the photo
    masks = [content, np.zeros(positions, bool), np.zeros(positions, bool)]
    out = [tuple(masks)]
    for op in ops:
        if op == "conv":  # window [j - 1, j + 1]; the zero padding is the edges' influence
            padded = [np.concatenate([[edge == 1], mk, [edge == 2]]) for edge, mk in
                      enumerate(masks)]
            masks = [p[:-2] | p[1:-1] | p[2:] for p in padded]
        else:  # window [2k, 2k + 1], cut at the end (ceil mode)
            masks = [np.logical_or.reduceat(mk, np.arange(0, len(mk), 2)) for mk in masks]
        out.append(tuple(masks))
    return out


def _separated(layers: list[tuple[np.ndarray, ...]]) -> bool:
    """No position is reached by both the photo and an edge, and the last layer has a
    far-field position on each side of the photo to copy."""
    for content, left, right in layers:
        if (content & (left | right)).any() or (left & right).any():
            return False
    content, left, right = layers[-1]
    far = ~(content | left | right)
    first = np.argmax(content)
    return far[:first].any() and far[first:].any()


def _far_positions(layer: tuple[np.ndarray, ...]) -> tuple[int, int]:
    """A far-field position left of the photo's reach and one right of it."""
    content, left, right = layer
    far = np.flatnonzero(~(content | left | right))
    first = np.argmax(content)
    return int(far[far < first][-1]), int(far[far > first][0])


_BLOCKS_1_2 = ("conv", "pool", "conv", "conv", "pool")  # conv1_2 .. pool2
_BLOCK3 = ("conv", "conv", "conv", "pool")  # conv3_1 .. pool3


@functools.cache
def border_plan(n: int) -> tuple[int, tuple[int, int, int], tuple[int, int, int]]:
    """How `stage1` narrows conv1_1's border along an axis of n pixels, exactly.

    Blocks 1-2 run with conv1_1 padded by `pad`; after pool2, `copies_pool2` copies of a
    far-field position are inserted on each side (the maps of the pad
    `pad_block3 = pad + 4 copies_pool2`); block 3 runs, and after pool3 `copies_pool3` more
    (the maps of the Caffe pad, `pad_block3 + 8 copies_pool3 = 100`). The pads are the
    smallest for which the photo's reach and the edges' never meet (`_influence`), so every
    map position sees exactly what it would see with the full pad.

    Args:
      n: pixels of the photo along the axis.

    Returns:
      (pad, (copies_pool2, left, right), (copies_pool3, left, right)): left / right are
      the positions whose copies are inserted, on the map before insertion.
    """
    # Each 4 px of conv1_1 pad is one position after pool2 (stride 4), each 8 px one after
    # pool3 (stride 8): narrow the pad seen by block 3 first, then that of blocks 1-2.
    pad_block3 = CAFFE_PAD
    while pad_block3 - 8 >= 2 and _separated(
            _influence(n, pad_block3 - 8, _BLOCKS_1_2 + _BLOCK3)):
        pad_block3 -= 8
    pad = pad_block3
    while pad - 4 >= 2 and _separated(_influence(n, pad - 4, _BLOCKS_1_2)):
        pad -= 4
    at_pool2 = _far_positions(_influence(n, pad, _BLOCKS_1_2)[-1])
    at_pool3 = _far_positions(_influence(n, pad_block3, _BLOCKS_1_2 + _BLOCK3)[-1])
    return (pad, ((pad_block3 - pad) // 4, *at_pool2),
            ((CAFFE_PAD - pad_block3) // 8, *at_pool3))


def _widen(x: jax.Array, axis: int, copies: int, left: int, right: int) -> jax.Array:
    """Inserts `copies` copies of slice `left` at `left` and of slice `right` at `right`."""
    if not copies:
        return x
    parts, start = [], 0
    for at in (left, right):
        band = jax.lax.slice_in_dim(x, at, at + 1, axis=axis)
        parts += [jax.lax.slice_in_dim(x, start, at, axis=axis),
                  jnp.repeat(band, copies, axis=axis)]
        start = at
    parts.append(jax.lax.slice_in_dim(x, start, x.shape[axis], axis=axis))
    return jnp.concatenate(parts, axis=axis)


def _crop(x: jax.Array, offset: int, hw: tuple[int, int]) -> jax.Array:
    return x[:, offset : offset + hw[0], offset : offset + hw[1]]


def vgg_pool3(net: nnx.Module, frames: jax.Array) -> jax.Array:
    """conv1_1 .. pool3 of a VGG16 trunk with Caffe's 100-px pad, on the narrower pads of
    `border_plan` (exactly the same maps, for a third less work).

    Args:
      net: a module with `conv1_1` .. `conv3_3` (`FCN8s`, `TruncatedFCN`).
      frames: float32 `[N, H, W, 3]`, preprocessed.

    Returns:
      pool3 `[N, h3, w3, c3]`.
    """
    plans = [border_plan(n) for n in frames.shape[1:3]]  # per axis: H, W
    pads = [(pad, pad) for pad, _, _ in plans]
    kernel, bias = net.conv1_1.kernel[...], net.conv1_1.bias[...]
    dtype = jnp.result_type(frames, kernel)  # as nnx.Conv: the common dtype
    x = jax.nn.relu(conv2d(  # conv1_1, on the narrower pad (see border_plan)
        frames.astype(dtype), kernel.astype(dtype), bias.astype(dtype), tuple(pads)))
    blocks = ((net.conv1_2,), (net.conv2_1, net.conv2_2),
              (net.conv3_1, net.conv3_2, net.conv3_3))
    for index, block in enumerate(blocks):
        for layer in block:
            x = conv_relu(x, layer)
        x = max_pool_ceil(x)
        if index:  # after pool2 and pool3: back to the maps of a wider pad (border_plan)
            for axis, plan in ((1, plans[0]), (2, plans[1])):
                x = _widen(x, axis, *plan[index])
    return x


def vgg_pool3_dense(net: nnx.Module, frames: jax.Array) -> jax.Array:
    """conv1_1 .. pool3 as the Caffe net computes it: conv1_1 on the full 100-px pad, no
    shortcut. The same maps as `vgg_pool3`, at the dense cost (for counting the paper's
    FLOPs, `cost.stage_flops(dense=True)`, and for checking the shortcut)."""
    x = frames
    for block in ((net.conv1_1, net.conv1_2), (net.conv2_1, net.conv2_2),
                  (net.conv3_1, net.conv3_2, net.conv3_3)):
        for layer in block:
            x = jax.nn.relu(layer(x))
        x = max_pool_ceil(x)
    return x


def _vgg_block(layers: Sequence[nnx.Conv], x: jax.Array) -> jax.Array:
    for layer in layers:
        x = conv_relu(x, layer)
    return max_pool_ceil(x)


def vgg_pool4(net: nnx.Module, pool3: jax.Array) -> jax.Array:
    """conv4_1 .. pool4 of a module with `conv4_1` .. `conv4_3`: `[N, h3, w3, c3] ->
    [N, h4, w4, c4]`."""
    return _vgg_block((net.conv4_1, net.conv4_2, net.conv4_3), pool3)


def vgg_pool5(net: nnx.Module, pool4: jax.Array) -> jax.Array:
    """conv5_1 .. pool5 of a module with `conv5_1` .. `conv5_3`: `[N, h4, w4, c4] ->
    [N, ceil(h4 / 2), ceil(w4 / 2), c5]`."""
    return _vgg_block((net.conv5_1, net.conv5_2, net.conv5_3), pool4)


VGG_BLOCK_SIZES = (2, 2, 3, 3, 3)  # 3x3 convolutions per VGG16 block


def vgg_conv_names(blocks: int) -> tuple[str, ...]:
    """The Caffe names of the 3x3 convolutions of VGG16's first `blocks` blocks, in order
    (conv1_1 .. conv3_3 for 3, the pool3 net's)."""
    return tuple(f"conv{b + 1}_{i + 1}" for b in range(blocks)
                 for i in range(VGG_BLOCK_SIZES[b]))


def _vgg_convs(widths: Sequence[int], blocks: int, rngs: nnx.Rngs) -> dict[str, nnx.Conv]:
    """The 3x3 convolutions of VGG16's first `blocks` blocks, by Caffe name (conv1_1 padded
    by 100, as FCN)."""
    convs, cin = {}, 3
    for name in vgg_conv_names(blocks):
        cout = widths[int(name[4]) - 1]  # conv<block>_<i>
        pad = 100 if name == "conv1_1" else 1
        convs[name] = nnx.Conv(cin, cout, (3, 3), padding=pad, rngs=rngs)
        cin = cout
    return convs


class FCN8s(nnx.Module):
    """FCN-8s, VGG16 trunk, as the Caffe net of the paper.

    Args:
      num_classes: C, the number of output classes (21 for PASCAL VOC).
      widths: channels of the five conv blocks and of fc6/fc7 (`VGG16_WIDTHS`);
        `NARROW_WIDTHS` gives the same topology, small enough for tests.
      dropout_rate: dropout after fc6 and fc7, active only when a `dropout_key` is
        given (training); inference is deterministic.
      zero_init_scores: zero-initialise the score layers, as FCN does when
        fine-tuning; random init gives a net whose outputs differ per class (tests).
      rngs: `nnx.Rngs` for initialisation.
    """

    staging: Staging  # set below the class: how the clockwork engine calls the stages
    dense_staging: Staging  # the same stages without the border shortcut (cost counting)

    def __init__(
        self,
        num_classes: int = 21,
        *,
        widths: Sequence[int] = VGG16_WIDTHS,
        dropout_rate: float = 0.5,
        zero_init_scores: bool = True,
        rngs: nnx.Rngs,
    ):
        self.num_classes = num_classes
        _, _, w3, w4, w5, wfc = widths
        for name, conv in _vgg_convs(widths, 5, rngs).items():
            setattr(self, name, conv)
        self.fc6 = nnx.Conv(w5, wfc, (7, 7), padding="VALID", rngs=rngs)
        self.fc7 = nnx.Conv(wfc, wfc, (1, 1), rngs=rngs)
        self.drop6 = nnx.Dropout(dropout_rate)
        self.drop7 = nnx.Dropout(dropout_rate)
        score_init = (
            nnx.initializers.zeros if zero_init_scores else nnx.initializers.normal(0.01)
        )
        score = functools.partial(nnx.Conv, kernel_size=(1, 1), kernel_init=score_init, rngs=rngs)
        self.score_fr = score(wfc, num_classes)
        self.score_pool4 = score(w4, num_classes)
        self.score_pool3 = score(w3, num_classes)
        # Learnable 2x upsamplers, bilinear at init; dense kernels so that a Caffe
        # model whose upsamplers were learned loads exactly. upscore8 is fixed.
        self.upscore2 = nnx.Param(jnp.asarray(bilinear_deconv_init(4, num_classes)))
        self.upscore_pool4 = nnx.Param(jnp.asarray(bilinear_deconv_init(4, num_classes)))

    def stage1(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
        """S1: conv1_1 .. pool3, + score_pool3.

        Args:
          frames: float32 `[N, H, W, 3]`, preprocessed (`preprocess`).

        Returns:
          pool3 `[N, h3, w3, w3c]` and score_pool3 `[N, h3, w3, C]`, uncropped.
        """
        x = vgg_pool3(self, frames)
        return x, pointwise(x, self.score_pool3)

    def stage2(self, pool3: jax.Array) -> tuple[jax.Array, jax.Array]:
        """S2: conv4_1 .. pool4, + score_pool4.

        Args:
          pool3: `[N, h3, w3, c3]` from `stage1`.

        Returns:
          pool4 `[N, h4, w4, c4]` and score_pool4 `[N, h4, w4, C]`, uncropped.
        """
        x = vgg_pool4(self, pool3)
        return x, pointwise(x, self.score_pool4)

    def stage3(self, pool4: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """S3: conv5_1 .. pool5, fc6, fc7, score_fr, upscore2.

        Args:
          pool4: `[N, h4, w4, c4]` from `stage2`.
          dropout_key: a PRNG key to apply dropout (training); None: no dropout.

        Returns:
          upscore2 `[N, 2 * h6 + 2, 2 * w6 + 2, C]` with h6 = ceil(h4 / 2) - 6.
        """
        return deconv(self.score_fr_map(pool4, dropout_key), self.upscore2[...], 2)

    def score_fr_map(self, pool4: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """conv5_1 .. pool5, fc6, fc7, score_fr: `[N, h4, w4, c4] -> [N, h6, w6, C]`,
        h6 = ceil(h4 / 2) - 6 (S3 before its upsampling)."""
        return self.fc_scores(vgg_pool5(self, pool4), dropout_key)

    def fc_scores(self, pool5: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """fc6, fc7, score_fr: pool5 `[N, h5, w5, c5] -> [N, h5 - 6, w5 - 6, C]`; dropout
        with a `dropout_key`."""
        fc6 = conv_as_matmul(pool5, self.fc6.kernel[...], self.fc6.bias[...])
        keys = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        x = self.drop6(jax.nn.relu(fc6), deterministic=dropout_key is None, rngs=keys[0])
        x = jax.nn.relu(pointwise(x, self.fc7))
        x = self.drop7(x, deterministic=dropout_key is None, rngs=keys[1])
        return pointwise(x, self.score_fr)

    def score_layers(self, frames: jax.Array) -> dict[str, jax.Array]:
        """The net's score layers on `frames` `[N, H, W, 3]`, as Table 1 compares them.

        Returns:
          {"score_pool3": `[N, h3, w3, C]`, "score_pool4": `[N, h4, w4, C]` (both
          uncropped), "score_fr": `[N, h6, w6, C]`, "score": `[N, H, W, C]` (the output)}.
        """
        pool3, score_pool3 = self.stage1(frames)
        pool4, score_pool4 = self.stage2(pool3)
        score_fr = self.score_fr_map(pool4)
        upscore2 = deconv(score_fr, self.upscore2[...], 2)
        score = self.fuse(score_pool3, score_pool4, upscore2, frames.shape[1:3])
        return {"score_pool3": score_pool3, "score_pool4": score_pool4, "score_fr": score_fr,
                "score": score}

    def fuse(
        self,
        score_pool3: jax.Array,
        score_pool4: jax.Array,
        upscore2: jax.Array,
        out_hw: tuple[int, int],
    ) -> jax.Array:
        """The skip fusion: crops, sums, upscore_pool4, upscore8, final crop.

        The three inputs may come from different frames (that is the clockwork).

        Args:
          score_pool3: `[N, h3, w3, C]` from `stage1`.
          score_pool4: `[N, h4, w4, C]` from `stage2`.
          upscore2: `[N, hu, wu, C]` from `stage3`.
          out_hw: (H, W) of the input frames.

        Returns:
          float32 scores `[N, H, W, C]`.
        """
        hw2 = upscore2.shape[1:3]
        fuse_pool4 = upscore2 + _crop(score_pool4, POOL4_CROP, hw2)
        up4 = deconv(fuse_pool4, self.upscore_pool4[...], 2)
        fuse_pool3 = up4 + _crop(score_pool3, POOL3_CROP, up4.shape[1:3])
        return upsample_crop(fuse_pool3, 8, UPSCORE8_CROP, tuple(out_hw))

    def trunk(self, frames: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The VGG convolutions' maps that the rest of the net reads: float32
        `[N, H, W, 3]` -> (pool3, pool4, pool5), as `stage1`, `stage2` and conv5 give them
        (what a frozen trunk computes once per image: `train_lib`'s `head_step`)."""
        pool3 = vgg_pool3(self, frames)
        pool4 = vgg_pool4(self, pool3)
        return pool3, pool4, vgg_pool5(self, pool4)

    def head(self, pool3: jax.Array, pool4: jax.Array, pool5: jax.Array,
             out_hw: tuple[int, int], dropout_key: jax.Array | None = None) -> jax.Array:
        """Everything after the VGG convolutions, on the `trunk`'s maps: fc6, fc7, the score
        layers, the upsamplers and the fusion -> scores `[N, *out_hw, C]`."""
        return self.fuse_maps(pool3, pool4, self.fc_scores(pool5, dropout_key), out_hw)

    def fuse_maps(self, pool3: jax.Array, pool4: jax.Array, score_fr: jax.Array,
                  out_hw: tuple[int, int]) -> jax.Array:
        """The skip scores of pool3 and pool4, upscore2 of score_fr, and their `fuse`:
        the head after fc_scores -> scores `[N, *out_hw, C]`."""
        return self.fuse(pointwise(pool3, self.score_pool3), pointwise(pool4, self.score_pool4),
                         deconv(score_fr, self.upscore2[...], 2), out_hw)

    def __call__(self, frames: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """The full net: float32 `[N, H, W, 3]` -> scores `[N, H, W, C]`.

        `dropout_key` (a PRNG key) turns dropout on, for training.
        """
        return self.head(*self.trunk(frames), frames.shape[1:3], dropout_key)

    def truncated(self, frames: jax.Array, stages: int, *, dense: bool = False) -> jax.Array:
        """FCN-8s cut after S1 or S2: a stand-in for the paper's latency baselines.

        The kept stage's skip score layer is upsampled bilinearly to the input (x8 from
        score_pool3, x16 from score_pool4), with no deeper stage computed. The paper's
        baselines are separately trained nets (`TruncatedFCN`); these use FCN-8s's own
        skip scores, which were trained to be summed with the deeper ones.

        Args:
          frames: float32 `[N, H, W, 3]`.
          stages: 1 (score from pool3) or 2 (score from pool4).
          dense: conv1_1 on the full pad as Caffe (`vgg_pool3_dense`): the same scores at
            the dense cost, for counting it.

        Returns:
          float32 scores `[N, H, W, C]`.
        """
        if stages not in TRUNCATED_UPSCORE:
            raise ValueError(f"truncated(stages={stages}): use 1 (pool3) or 2 (pool4)")
        pool3 = (vgg_pool3_dense if dense else vgg_pool3)(self, frames)
        score = pointwise(pool3, self.score_pool3)
        if stages == 2:
            score = self.stage2(pool3)[1]
        factor, offset = TRUNCATED_UPSCORE[stages]
        return upsample_crop(score, factor, offset, frames.shape[1:3])



class TruncatedFCN(nnx.Module):
    """The paper's latency baselines as the separately trained nets they are.

    clockwork-fcn's nets/net-pool3.py and net-pool4.py (weights voc-fcn-pool3.caffemodel,
    voc-fcn-pool4.caffemodel): VGG16's conv1_1 .. pool3 (stages=1) or .. pool4 (stages=2)
    with the FCN-8s trunk's padding, a 1x1 `score_fr` on that pool, a fixed bilinear
    `upscore` (x8, kernel 16 / x16, kernel 32; lr_mult 0) and a crop back to the input.
    Layer names are the Caffe ones, so `weights.load` fills it from those files.

    Args:
      stages: 1 (the "pool3" net) or 2 (the "pool4" net): the FCN-8s stages it keeps.
      num_classes: C.
      widths: as `FCN8s` (only the first `stages + 2` blocks are used).
      zero_init_scores: zero-initialise `score_fr` (as FCN when fine-tuning).
      rngs: `nnx.Rngs` for initialisation.
    """

    def __init__(
        self,
        stages: int,
        num_classes: int = 21,
        *,
        widths: Sequence[int] = VGG16_WIDTHS,
        zero_init_scores: bool = True,
        rngs: nnx.Rngs,
    ):
        if stages not in TRUNCATED_UPSCORE:
            raise ValueError(f"TruncatedFCN(stages={stages!r}): use 1 (the pool3 net) or 2 "
                             "(the pool4 net)")
        self.stages = stages
        self.num_classes = num_classes
        for name, conv in _vgg_convs(widths, stages + 2, rngs).items():
            setattr(self, name, conv)
        init = nnx.initializers.zeros if zero_init_scores else nnx.initializers.normal(0.01)
        self.score_fr = nnx.Conv(widths[stages + 1], num_classes, (1, 1), kernel_init=init,
                                 rngs=rngs)

    @property
    def name(self) -> str:
        """"pool3" or "pool4", as the paper's tables call it."""
        return TRUNCATED_NAMES[self.stages]

    def __call__(self, frames: jax.Array, dropout_key: jax.Array | None = None, *,
                 dense: bool = False) -> jax.Array:
        """float32 `[N, H, W, 3]` -> scores `[N, H, W, C]` (no dropout: none in these nets).

        `dense`: conv1_1 on the full pad as Caffe (`vgg_pool3_dense`), the same scores at the
        dense cost, for counting it.
        """
        del dropout_key
        x = (vgg_pool3_dense if dense else vgg_pool3)(self, frames)
        if self.stages == 2:
            x = vgg_pool4(self, x)
        factor, offset = TRUNCATED_UPSCORE[self.stages]
        return upsample_crop(pointwise(x, self.score_fr), factor, offset, frames.shape[1:3])


def _stage1(net: FCN8s, frames: jax.Array):
    return net.stage1(frames)


def _stage1_dense(net: FCN8s, frames: jax.Array):
    pool3 = vgg_pool3_dense(net, frames)
    return pool3, pointwise(pool3, net.score_pool3)


def _stage2(net: FCN8s, s1_out):
    return net.stage2(s1_out[0])


def _stage3(net: FCN8s, s2_out):
    return net.stage3(s2_out[0])


def _fuse(net: FCN8s, outs, out_hw):
    (_, score_pool3), (_, score_pool4), upscore2 = outs
    return net.fuse(score_pool3, score_pool4, upscore2, out_hw)


def _clock_scores(outs):
    # The adaptive clock watches the class argmax of the uncropped score_pool4.
    return outs[1][1]


FCN8s.staging = Staging(
    stages=(_stage1, _stage2, _stage3), fuse=_fuse, clock_scores=_clock_scores
)
# The same stages as the Caffe net computes them (S1 on the full pad): what the paper's
# cost counts (`cost.stage_flops(..., dense=True)`).
FCN8s.dense_staging = Staging(
    stages=(_stage1_dense, _stage2, _stage3), fuse=_fuse, clock_scores=_clock_scores
)

narrow_fcn8s = functools.partial(FCN8s, widths=NARROW_WIDTHS, zero_init_scores=False)
