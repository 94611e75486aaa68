"""What the weight importers share: cwfcn's layer names, the report, layouts and checks.

Every importer (`onnx`, `torchvision`, `caffe`) returns an `ImportResult`: the new
parameters of the net's layers in cwfcn's layout (`LayerArrays`: HWIO kernels
`[kh, kw, Cin, Cout]`, float32), the file's layers that the net does not use, and notes.
`weights.load` checks them (`check_shapes`) and assigns them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from flax import nnx

from cwfcn import model

VGG_CONVS = model.vgg_conv_names(5)  # conv1_1 .. conv5_3
FCS = ("fc6", "fc7")
# FCN-8s's learned head: score layers and the two learnable 2x upsamplers.
HEAD = ("score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4")
PARAM_LAYERS = VGG_CONVS + FCS + HEAD
# The convolutions of the truncated baselines (`model.TruncatedFCN`) by stages kept:
# conv1_1 .. conv3_3 (the pool3 net), conv1_1 .. conv4_3 (the pool4 net).
TRUNCATED_CONVS = {k: model.vgg_conv_names(k + 2) for k in model.TRUNCATED_NAMES}
# A `load` target: FCN-8s, or one of the truncated baselines.
Net = model.FCN8s | model.TruncatedFCN


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load` did.

    Attributes:
      path: the weight file.
      source: "onnx", "torch" or "caffe".
      loaded: layers of the net assigned from the file, in net order.
      kept: layers of the net left as they were (not in the file, or a layer of the file
        that means something else here: FCN-8s's score_fr for a `model.TruncatedFCN`).
      notes: conversions worth knowing (folds, reshapes, checks, the file's layers this net
        does not use).
    """

    path: str
    source: str
    loaded: tuple[str, ...]
    kept: tuple[str, ...]
    notes: tuple[str, ...]

    def __str__(self) -> str:
        lines = [
            f"{self.path} ({self.source}): loaded {len(self.loaded)} layers",
            f"  loaded: {', '.join(self.loaded)}",
            f"  kept as initialised: {', '.join(self.kept) or '-'}",
        ]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


@dataclasses.dataclass(frozen=True)
class LayerArrays:
    """One cwfcn layer's new parameters, in cwfcn's layout.

    Attributes:
      kernel: float32 HWIO `[kh, kw, Cin, Cout]`.
      bias: float32 `[Cout]`; None for the upscore layers (bare kernels).
      source: where in the file they come from, for error messages.
    """

    kernel: np.ndarray
    bias: np.ndarray | None
    source: str


# What an importer returns: the arrays of the layers the net takes (by cwfcn name), the
# file's layers that the net does not use, and notes for the report.
ImportResult = tuple[dict[str, LayerArrays], list[str], list[str]]


def net_layers(net: Net) -> tuple[str, ...]:
    """`net`'s layers with parameters, in net order (cwfcn's names are Caffe's).

    Args:
      net: an FCN8s or a TruncatedFCN.

    Returns:
      The layer names.
    """
    if isinstance(net, model.TruncatedFCN):
        return (*vgg_file_layers(net), "score_fr")
    return PARAM_LAYERS


def vgg_file_layers(net: Net) -> tuple[str, ...]:
    """The layers of `net` that a VGG16 / FCN-8s file fills.

    Args:
      net: an FCN8s or a TruncatedFCN.

    Returns:
      All of an FCN-8s's layers; of a TruncatedFCN, the convolutions it has (its score_fr
      reads a pool, FCN-8s's fc7).
    """
    if isinstance(net, model.TruncatedFCN):
        return TRUNCATED_CONVS[net.stages]
    return PARAM_LAYERS


def describe_net(net: Net) -> str:
    """`net` in words, for the report ("FCN-8s", "TruncatedFCN(stages=1), the pool3 net")."""
    if isinstance(net, model.TruncatedFCN):
        return f"TruncatedFCN(stages={net.stages}), the {net.name} net"
    return "FCN-8s"


def layer_variables(net: Net, name: str) -> tuple[nnx.Variable, nnx.Variable | None]:
    """The variables of one of `net`'s layers.

    Args:
      net: an FCN8s or a TruncatedFCN.
      name: a cwfcn layer name (e.g. "conv1_1", "upscore2").

    Returns:
      (kernel, bias); the bias is None for the upscore layers, which are bare kernels.
    """
    layer = getattr(net, name)
    if isinstance(layer, nnx.Variable):
        return layer, None
    return layer.kernel, layer.bias


def shape_error(
    path: Path, layer: str, what: str, expected: tuple, found: tuple, source: str
) -> ValueError:
    """The error for an array of the wrong shape.

    Args:
      path: the weight file.
      layer: the cwfcn layer.
      what: which array, with its layout ("kernel [kh, kw, Cin, Cout]", "bias", ...).
      expected: the shape `net` has.
      found: the file's shape.
      source: where in the file the array comes from.

    Returns:
      A ValueError naming the file, the layer and both shapes (for the caller to raise).
    """
    return ValueError(
        f"{path}: layer {layer} {what}: expected shape {tuple(expected)}, found "
        f"{tuple(found)} (from {source}); is the file for another net (number of classes, "
        "widths)?"
    )


def check_shapes(net: Net, arrays: Mapping[str, LayerArrays], path: Path) -> None:
    """Checks every array against `net`, before anything is assigned.

    Args:
      net: the net to fill.
      arrays: cwfcn layer name -> its new parameters.
      path: the weight file, for messages.

    Raises:
      ValueError: a kernel or bias of another shape than `net`'s, or a bias for a layer
        that has none.
    """
    for name, layer_arrays in arrays.items():
        kernel, bias = layer_variables(net, name)
        if layer_arrays.kernel.shape != kernel.shape:
            raise shape_error(
                path,
                name,
                "kernel [kh, kw, Cin, Cout]",
                kernel.shape,
                layer_arrays.kernel.shape,
                layer_arrays.source,
            )
        if layer_arrays.bias is not None:
            if bias is None:
                raise ValueError(
                    f"{path}: layer {name} has no bias in cwfcn ({layer_arrays.source})"
                )
            if layer_arrays.bias.shape != bias.shape:
                raise shape_error(
                    path, name, "bias", bias.shape, layer_arrays.bias.shape, layer_arrays.source
                )


def format_values(values: np.ndarray) -> str:
    """A short vector as "(v0, v1, ...)" with 3 decimals, for notes."""
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def oihw_to_hwio(weight: np.ndarray) -> np.ndarray:
    """`[Cout, Cin, kh, kw]` (Caffe, ONNX, torch) -> `[kh, kw, Cin, Cout]`, float32."""
    return np.ascontiguousarray(np.asarray(weight, np.float32).transpose(2, 3, 1, 0))


def fc_kernel(
    weight: np.ndarray, name: str, expected_hwio: tuple[int, ...], path: Path, source: str
) -> np.ndarray:
    """A fully connected weight `[Cout, Cin*kh*kw]` (or a conv `[Cout, Cin, kh, kw]`) -> HWIO.

    A Caffe InnerProduct and torch Linear flatten their input in (C, H, W) order, so the
    matrix reshapes to the equivalent `[Cout, Cin, kh, kw]` convolution (FCN's net surgery).

    Args:
      weight: the file's weight, 2-d or 4-d.
      name: the cwfcn layer (fc6 / fc7).
      expected_hwio: `net`'s kernel shape `(kh, kw, Cin, Cout)`.
      path: the weight file, for messages.
      source: where in the file the weight comes from, for messages.

    Returns:
      float32 `[kh, kw, Cin, Cout]`.

    Raises:
      ValueError: a matrix whose columns are not `Cin*kh*kw`, or a weight neither 2-d nor 4-d.
    """
    kh, kw, cin, cout = expected_hwio
    if weight.ndim == 2:
        if weight.shape[1] != kh * kw * cin:
            expected = (cout, cin * kh * kw)
            raise shape_error(
                path, name, "matrix [Cout, Cin*kh*kw]", expected, weight.shape, source
            )
        weight = weight.reshape(weight.shape[0], cin, kh, kw)
    elif weight.ndim != 4:
        raise shape_error(path, name, "weight", (cout, cin, kh, kw), weight.shape, source)
    return oihw_to_hwio(weight)


def fold_input_convention(
    kernel: np.ndarray,
    bias: np.ndarray,
    *,
    mean_bgr: Sequence[float],
    rgb: bool,
    scale: float,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Folds a source net's input convention into its first convolution.

    The source's first conv (kernel W, bias b) takes, per input channel j in the source's
    channel order,
        x_j = (scale * P[c(j)] - mean_j) / std_j,
    with P the BGR pixel in 0..255 and c(j) = 2 - j for an RGB source (j for BGR). cwfcn
    takes u_c = P_c - m_c (BGR, m = `mean_bgr`). With P_c = u_c + m_c,
        x_j = g_j * u[c(j)] + o_j,  g_j = scale / std_j,  o_j = (scale * m[c(j)] - mean_j) / std_j,
    so conv(x; W, b) = conv(u; W', b') with
        W'[:, :, c(j), :] = g_j * W[:, :, j, :],   b' = b + sum_{h, w, j} W[h, w, j, :] * o_j.

    This is exact wherever the kernel window lies inside the image. At zero padding it is
    not: cwfcn pads u with 0 (pixels equal to m), the source pads x with 0 (pixels equal
    to mean / scale), so outputs whose window reaches the padding differ. In FCN (conv1_1
    padded by 100) that is the padded margin and the image's 1-pixel border ring; the
    image interior is exact.

    Args:
      kernel: float `[kh, kw, 3, Cout]` (HWIO), input channels in the source's order.
      bias: float `[Cout]`.
      mean_bgr: cwfcn's mean, BGR, 0..255.
      rgb: whether the source's channels are RGB (else BGR).
      scale: the source's pixel scale (1/255 for 0..1 inputs, 1 for 0..255).
      mean: the source's mean, in its channel order and scaled units (after `scale`).
      std: the source's std, same order and units.

    Returns:
      float32 (kernel `[kh, kw, 3, Cout]` in BGR order, bias `[Cout]`) for cwfcn's input.
    """
    weight = np.asarray(kernel, np.float64)
    cwfcn_mean = np.asarray(mean_bgr, np.float64)
    mean_in_source_order = cwfcn_mean[::-1] if rgb else cwfcn_mean
    source_std = np.asarray(std, np.float64)
    gain = scale / source_std
    offset = (scale * mean_in_source_order - np.asarray(mean, np.float64)) / source_std
    new_bias = np.asarray(bias, np.float64) + np.einsum("hwjo,j->o", weight, offset)
    new_kernel = weight * gain[None, None, :, None]
    if rgb:
        new_kernel = new_kernel[:, :, ::-1]
    return new_kernel.astype(np.float32), new_bias.astype(np.float32)
