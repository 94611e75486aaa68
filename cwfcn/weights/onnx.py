"""The ONNX VGG16 importer: the 13 convolutions of a VGG16 graph into cwfcn's layers.

conv1_1 .. conv5_3 are taken from the graph's Conv nodes in order; the graph has no
fc6/fc7. Its input convention is the caller's choice (`ONNX_INPUTS`): "caffe" loads the
convolutions as they are, "rgb01" folds RGB / 255 inputs into conv1_1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cwfcn.weights import common

# The input conventions an ONNX graph's convolutions may have (`import_layers`).
ONNX_INPUTS = ("caffe", "rgb01")
# The ops that may stand between the graph's input and conv1_1 (layout only).
_LAYOUT_OPS = ("Transpose", "Identity", "Cast")


def _graph_constants(graph: Any) -> dict[str, Any]:
    """The constant tensors of an ONNX graph.

    Args:
      graph: an `onnx.GraphProto`.

    Returns:
      name -> TensorProto of the graph's initializers and Constant nodes.
    """
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = attr.t
    return constants


def _describe_input_chain(graph: Any, first_conv: Any, path: Path) -> str:
    """Checks that conv1_1 sees the graph input directly (a layout Transpose at most).

    Args:
      graph: an `onnx.GraphProto`.
      first_conv: its first Conv node (conv1_1).
      path: the file, for messages.

    Returns:
      A note describing the input and what lies between it and conv1_1.

    Raises:
      ValueError: any other op (a mean subtraction, a scaling) precedes conv1_1: such
        preprocessing inside the graph is not folded by this importer.
    """
    producers = {out: node for node in graph.node for out in node.output}
    inputs = {graph_input.name: graph_input for graph_input in graph.input}
    name, ops = first_conv.input[0], []
    while name in producers:
        node = producers[name]
        if node.op_type not in _LAYOUT_OPS:
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


def import_layers(
    path: Path, net: common.Net, onnx_input: str, mean_bgr: np.ndarray
) -> common.ImportResult:
    """conv1_1 .. conv5_3 from the 13 Conv nodes of an ONNX VGG16, in graph order.

    The weight and bias of each Conv node are followed through its inputs (initializers
    or Constant nodes), so initializer names do not matter.

    Args:
      path: the .onnx file.
      net: the net to fill (its layers decide what is taken).
      onnx_input: the convolutions' input convention, one of `ONNX_INPUTS`.
      mean_bgr: float64 `[3]`, the mean `net`'s inputs have subtracted (BGR, 0..255);
        used by "rgb01".

    Returns:
      (arrays of the convolutions `net` has, the other convolutions (not used), notes).

    Raises:
      ValueError: an unreadable file, not 13 Conv nodes, a grouped or strided Conv,
        computed weights, or in-graph preprocessing before conv1_1.
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
    if len(convs) != len(common.VGG_CONVS):
        raise ValueError(
            f"{path}: has {len(convs)} Conv nodes; a VGG16 trunk has "
            f"{len(common.VGG_CONVS)} (conv1_1 .. conv5_3)"
        )
    constants = _graph_constants(graph)
    arrays: dict[str, common.LayerArrays] = {}
    for name, node in zip(common.VGG_CONVS, convs, strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("group", 1) != 1 or any(s != 1 for s in attrs.get("strides", [1])):
            raise ValueError(
                f"{path}: Conv node {node.name!r} ({name}) is grouped or "
                f"strided ({attrs}); not a VGG16 convolution"
            )
        has_bias = len(node.input) > 2 and node.input[2]
        if node.input[1] not in constants or (has_bias and node.input[2] not in constants):
            raise ValueError(
                f"{path}: Conv node {node.name!r} ({name}) has computed, not constant, weights"
            )
        weight = numpy_helper.to_array(constants[node.input[1]])
        if weight.ndim != 4:
            raise ValueError(
                f"{path}: Conv node {node.name!r} ({name}) weight has shape "
                f"{weight.shape}, not [Cout, Cin, kh, kw]"
            )
        bias = (
            numpy_helper.to_array(constants[node.input[2]])
            if has_bias
            else np.zeros(weight.shape[0])
        )
        arrays[name] = common.LayerArrays(
            common.oihw_to_hwio(weight),
            np.asarray(bias, np.float32).reshape(-1),
            f"ONNX Conv {node.name!r} weight {tuple(weight.shape)}",
        )
    notes = [_describe_input_chain(graph, convs[0], path)]
    if onnx_input == "rgb01":
        conv1 = arrays["conv1_1"]
        kernel, bias = common.fold_input_convention(
            conv1.kernel, conv1.bias, mean_bgr=mean_bgr, rgb=True, scale=1 / 255
        )
        arrays["conv1_1"] = common.LayerArrays(kernel, bias, conv1.source)
        notes.append(
            "conv1_1 folded from the graph's RGB 0..1 input to BGR 0..255 minus "
            f"mean_bgr={common.format_values(mean_bgr)}: input channels flipped, kernel "
            "/255, bias + W.(mean/255)"
        )
    else:
        notes.append(
            "conv1_1 .. conv5_3 unchanged: taken as Caffe-convention weights "
            "(BGR, 0..255 minus a mean), as the Keras port of Caffe's VGG16"
        )
    wanted = common.vgg_file_layers(net)
    if "fc6" in wanted:
        notes.append("fc6/fc7 are not in the ONNX file")
    unused = [n for n in arrays if n not in wanted]
    return {n: a for n, a in arrays.items() if n in wanted}, unused, notes
