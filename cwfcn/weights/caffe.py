"""The Caffe importer: a .caffemodel's layers into an FCN-8s or a truncated baseline.

`read_caffemodel` parses the file with the minimal schema of `caffe_schema` (V2 `layer`
and V1 `layers` alike). `import_layers` matches its layers to cwfcn's by name, with the
aliases of the published FCN-8s models (`CAFFE_ALIASES`): a Caffe FCN-8s (also the
"at-once" models, whose scale_pool4 / scale_pool3 are folded into score_pool4 /
score_pool3), a VGG16 classifier, or a truncated baseline (clockwork-fcn's voc-fcn-pool3 /
voc-fcn-pool4). A layer with weights that is none of these is an error: no weights are
dropped silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cwfcn import model
from cwfcn.data import files
from cwfcn.weights import common
from cwfcn.weights.common import FCS, HEAD, TRUNCATED_CONVS, VGG_CONVS

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
    """A BlobProto -> float32 array (its `shape`, else its legacy 4-d dims, else 1-d).

    Args:
      blob: a `caffe_schema` BlobProto.
      where: the file, layer and blob, for messages.

    Returns:
      float32, shaped.

    Raises:
      ValueError: the values do not fill the shape (truncated or corrupt).
    """
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = None
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
    if shape is None:
        return values
    if int(np.prod(shape)) != values.size:
        raise ValueError(f"{where}: {values.size} values for shape {shape} (truncated or corrupt)")
    return values.reshape(shape)


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

    from cwfcn.weights import caffe_schema  # protobuf, only when a .caffemodel is read

    path = Path(path)
    files.require_file(path, "weight file")
    try:
        net_proto = caffe_schema.messages().NetParameter.FromString(path.read_bytes())
    except DecodeError as e:
        raise ValueError(
            f"{path}: not a Caffe NetParameter ({e}); truncated or corrupt file?"
        ) from e
    layers: dict[str, CaffeLayer] = {}
    v1_names = {number: name for name, number in caffe_schema.V1_LAYER_TYPES.items() if number}
    entries = [(layer, layer.type) for layer in net_proto.layer] + [
        (layer, caffe_schema.V1_TO_V2_TYPE.get(layer.type) or v1_names.get(layer.type, ""))
        for layer in net_proto.layers
    ]
    for layer, layer_type in entries:
        if not len(layer.blobs):
            continue
        if layer.name in layers:
            raise ValueError(f"{path}: two layers with weights named {layer.name!r}")
        blobs = tuple(
            _blob_array(blob, f"{path}: layer {layer.name!r} blob {index}")
            for index, blob in enumerate(layer.blobs)
        )
        layers[layer.name] = CaffeLayer(layer.name, layer_type, blobs)
    if not layers:
        raise ValueError(f"{path}: no layer with weights (empty, truncated or not a .caffemodel)")
    return layers


def _layers_by_role(layers: Mapping[str, CaffeLayer], path: Path) -> dict[str, CaffeLayer]:
    """The file's layers with weights, by the cwfcn name each stands for (`CAFFE_KNOWN`,
    aliases resolved), in file order.

    Args:
      layers: the file's layers with weights (`read_caffemodel`).
      path: the file, for messages.

    Returns:
      cwfcn name -> the file's layer.

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


def _squeeze_leading(blob: np.ndarray, ndim: int) -> np.ndarray:
    """Drops leading 1-dims (legacy 4-d blobs: bias (1, 1, 1, N), matrix (1, 1, O, I)).

    Args:
      blob: a layer's blob.
      ndim: the rank to reduce it to, at most.

    Returns:
      `blob` with its leading size-1 dims dropped while its rank exceeds `ndim`.
    """
    while blob.ndim > ndim and blob.shape[0] == 1:
        blob = blob[0]
    return blob


def _bias_or_zeros(layer: CaffeLayer, cout: int) -> np.ndarray:
    """The layer's bias `[Cout]`, zeros for a layer without one (bias_term: false)."""
    if len(layer.blobs) < 2:
        return np.zeros(cout, np.float32)
    return _squeeze_leading(layer.blobs[1], 1)


def _check_layer_type(layer: CaffeLayer, name: str, allowed: tuple[str, ...], path: Path) -> None:
    """Checks that the layer that fills cwfcn's `name` has one of the `allowed` types.

    A layer whose type the file does not say passes.

    Raises:
      ValueError: another type.
    """
    if layer.type and layer.type not in allowed:
        raise ValueError(
            f"{path}: layer {layer.name!r} (cwfcn {name}) is a {layer.type}, "
            f"expected {' or '.join(allowed)}"
        )


def _dense_deconv_kernel(layer: CaffeLayer, channels: int, path: Path) -> np.ndarray:
    """A Deconvolution weight `[Cin, Cout/group, k, k]` -> dense HWIO `[k, k, Cin, Cout]`.

    A grouped per-channel kernel `[C, 1, k, k]` (group = C) becomes the diagonal dense one.

    Args:
      layer: the Deconvolution layer.
      channels: C, the net's number of classes.
      path: the file, for messages.

    Returns:
      float32 `[k, k, Cin, Cout]`.

    Raises:
      ValueError: a non-zero bias, or a weight that is not 4-d.
    """
    weight = layer.blobs[0]
    if len(layer.blobs) > 1 and np.any(_squeeze_leading(layer.blobs[1], 1)):
        raise ValueError(
            f"{path}: Deconvolution {layer.name!r} has a non-zero bias; cwfcn's "
            "upsamplers have none"
        )
    if weight.ndim != 4:
        raise ValueError(
            f"{path}: Deconvolution {layer.name!r} weight has shape {weight.shape}, "
            "not [Cin, Cout, k, k]"
        )
    if weight.shape[1] == 1 and weight.shape[0] == channels:
        dense = np.zeros((weight.shape[2], weight.shape[3], channels, channels), np.float32)
        diagonal = np.arange(channels)
        dense[:, :, diagonal, diagonal] = weight[:, 0].transpose(1, 2, 0)
        return dense
    return np.ascontiguousarray(weight.transpose(2, 3, 0, 1))


def _layer_arrays(layer: CaffeLayer, name: str, net: common.Net, path: Path) -> common.LayerArrays:
    """One Caffe layer -> the new parameters of `net`'s layer `name`, in cwfcn's layout.

    Args:
      layer: the file's layer.
      name: the cwfcn layer it fills.
      net: the net to fill.
      path: the file, for messages.

    Returns:
      The layer's arrays (shapes checked later, by `common.check_shapes`).

    Raises:
      ValueError: a layer of another type, or a weight of the wrong rank.
    """
    source = f"Caffe layer {layer.name!r} weight {layer.blobs[0].shape}"
    if name in ("upscore2", "upscore_pool4"):
        _check_layer_type(layer, name, ("Deconvolution",), path)
        kernel = _dense_deconv_kernel(layer, net.num_classes, path)
        return common.LayerArrays(kernel, None, source + " as [Cin, Cout, k, k]")
    expected = common.layer_variables(net, name)[0].shape
    if name in FCS:
        _check_layer_type(layer, name, ("Convolution", "InnerProduct"), path)
        weight = _squeeze_leading(layer.blobs[0], 2)
        kernel = common.fc_kernel(weight, name, expected, path, source)
    else:
        _check_layer_type(layer, name, ("Convolution",), path)
        weight = layer.blobs[0]
        if weight.ndim != 4:
            raise common.shape_error(
                path, name, "weight [Cout, Cin, kh, kw]", expected, weight.shape, source
            )
        kernel = common.oihw_to_hwio(weight)
    return common.LayerArrays(kernel, _bias_or_zeros(layer, kernel.shape[3]), source)


def _check_fixed_upscore(
    layer: CaffeLayer, name: str, factor: int, channels: int, path: Path
) -> str:
    """A fixed upsampler of the file must be the one `model.upsample_crop` computes.

    That is FCN-8s's upscore8 (factor 8) and a truncated net's upscore (factor 8 / 16):
    a per-class bilinear Deconvolution of kernel k = 2 * factor, dense `[C, C, k, k]` with
    the bilinear taps on the diagonal or grouped `[C, 1, k, k]`, with no non-zero bias.

    Args:
      layer: the file's upsampler.
      name: its cwfcn name (upscore8, upscore).
      factor: the upsampling factor.
      channels: C, the net's number of classes.
      path: the file, for messages.

    Returns:
      A note for the report.

    Raises:
      ValueError: another shape (class count, kernel size), or another (learned) kernel.
    """
    size = 2 * factor
    _check_layer_type(layer, name, ("Deconvolution",), path)
    shape = layer.blobs[0].shape
    if shape not in ((channels, channels, size, size), (channels, 1, size, size)):
        raise common.shape_error(
            path,
            name,
            f"weight [C, C, {size}, {size}] or grouped [C, 1, {size}, {size}]",
            (channels, channels, size, size),
            shape,
            f"Caffe layer {layer.name!r}",
        )
    expected = model.bilinear_deconv_init(size, channels)
    try:
        dense = _dense_deconv_kernel(layer, channels, path)
        is_bilinear = np.allclose(dense, expected, rtol=0, atol=1e-5)
    except ValueError:  # a non-zero bias
        is_bilinear = False
    if not is_bilinear:
        taps = np.round(model.bilinear_kernel(size), 4).tolist()
        raise ValueError(
            f"{path}: {layer.name!r} ({name}, weight {shape}) is not the per-class bilinear "
            f"x{factor} kernel ({size}x{size} taps {taps} on the diagonal, no bias): cwfcn's "
            f"{name} is fixed (model.upsample_crop), so this model cannot be loaded"
        )
    return f"{name} ({layer.name!r}) checked: the fixed bilinear x{factor} kernel cwfcn assumes"


def _fold_scale(
    scale: CaffeLayer, score: common.LayerArrays, name: str, path: Path
) -> tuple[common.LayerArrays, str]:
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

    Raises:
      ValueError: not a Scale layer, more than two blobs, or a vector of another length
        than the score layer's input channels.
    """
    _check_layer_type(scale, scale.name, ("Scale",), path)
    cin = score.kernel.shape[2]
    if len(scale.blobs) > 2:
        raise ValueError(
            f"{path}: Scale {scale.name!r} has {len(scale.blobs)} blobs; expected a scale "
            "[c] and at most a bias [c]"
        )
    vectors = []
    for what, blob in zip(("scale", "bias"), scale.blobs, strict=False):
        vector = _squeeze_leading(blob, 1)
        if vector.shape != (cin,):
            raise common.shape_error(
                path,
                scale.name,
                f"{what} [c] (one per channel of {name}'s input)",
                (cin,),
                blob.shape,
                f"Caffe Scale layer {scale.name!r}",
            )
        vectors.append(vector.astype(np.float64))
    scales = vectors[0]
    shifts = vectors[1] if len(vectors) > 1 else np.zeros(cin)
    weight = score.kernel.astype(np.float64)
    kernel = weight * scales[None, None, :, None]
    bias = score.bias.astype(np.float64) + np.einsum("hwio,i->o", weight, shifts)
    note = (
        f"{scale.name} (Scale, {scales.min():.3g} .. {scales.max():.3g} per channel"
        f"{', with a bias' if len(vectors) > 1 else ''}) folded into {name}: kernel input "
        "channels x scale, bias + W.c"
    )
    folded = common.LayerArrays(
        kernel.astype(np.float32),
        bias.astype(np.float32),
        f"{score.source} with Scale {scale.name!r} folded",
    )
    return folded, note


def import_layers(path: Path, net: common.Net) -> common.ImportResult:
    """A .caffemodel's layers -> `net`'s layers, by name (`CAFFE_KNOWN`): the file of a
    truncated baseline (it has `upscore`), or of an FCN-8s or a VGG16 classifier.

    Args:
      path: the .caffemodel file.
      net: the net to fill (its kind and shapes decide what is taken).

    Returns:
      (arrays of the layers `net` takes, the file's layers that `net` does not use, notes).

    Raises:
      ValueError: an unreadable file, an unknown or missing layer, a file for the other
        kind of net, or a fixed upsampler that is not bilinear.
    """
    roles = _layers_by_role(read_caffemodel(path), path)
    if CAFFE_TRUNCATED_UPSCORE in roles:
        arrays, unused, notes = _import_truncated(roles, net, path)
    else:
        arrays, unused, notes = _import_fcn8s(roles, net, path)
    renamed = [f"{layer.name}->{role}" for role, layer in roles.items() if layer.name != role]
    if renamed:
        notes.append(f"aliases used: {', '.join(renamed)}")
    return arrays, unused, notes


def _import_truncated(
    roles: Mapping[str, CaffeLayer], net: common.Net, path: Path
) -> common.ImportResult:
    """A truncated baseline's file (clockwork-fcn nets/net-pool3.py, net-pool4.py) into the
    TruncatedFCN of its depth: convolutions and score_fr; upscore checked, as it is fixed.

    Args:
      roles: the file's layers by cwfcn name (`_layers_by_role`).
      net: the net to fill.
      path: the file, for messages.

    Returns:
      (arrays of all of `net`'s layers, no unused layers, a note on upscore).

    Raises:
      ValueError: layers a truncated net does not have, or lacks; `net` not the
        TruncatedFCN of the file's depth; shapes that do not match `net`.
    """
    depth = 2 if any(n in roles for n in model.vgg_conv_names(4)[7:]) else 1  # has conv4_x
    name, factor = model.TRUNCATED_NAMES[depth], model.TRUNCATED_UPSCORE[depth][0]
    expected = (*TRUNCATED_CONVS[depth], "score_fr", CAFFE_TRUNCATED_UPSCORE)
    extra = [roles[role].name for role in roles if role not in expected]
    if extra:
        raise ValueError(
            f"{path}: has {CAFFE_TRUNCATED_UPSCORE!r} (the upsampler of the truncated "
            f"pool3/pool4 nets) and also {extra}, which those nets do not have: neither a "
            "truncated net's nor an FCN-8s's file"
        )
    missing = [role for role in expected if role not in roles]
    if missing:
        raise ValueError(
            f"{path}: the file of a truncated {name} net (it has "
            f"{CAFFE_TRUNCATED_UPSCORE!r}) without {missing}"
        )
    upscore = roles[CAFFE_TRUNCATED_UPSCORE]
    what = (
        f"the {name} baseline's file (clockwork-fcn nets/net-{name}.py: conv1_1 .. "
        f"{TRUNCATED_CONVS[depth][-1]}, score_fr on {name}, upscore weight "
        f"{upscore.blobs[0].shape})"
    )
    if not isinstance(net, model.TruncatedFCN):
        raise ValueError(
            f"{path}: is {what}, not an FCN-8s (no fc6/fc7, no FCN-8s head): load it into "
            f"model.TruncatedFCN(stages={depth}, ...)"
        )
    if net.stages != depth:
        classes, size = net.num_classes, 2 * model.TRUNCATED_UPSCORE[net.stages][0]
        raise ValueError(
            f"{path}: is {what}; TruncatedFCN(stages={net.stages}), the {net.name} net, has "
            f"conv1_1 .. {TRUNCATED_CONVS[net.stages][-1]} and layer upscore of shape "
            f"{(classes, classes, size, size)}: load it into "
            f"model.TruncatedFCN(stages={depth}, ...)"
        )
    arrays = {n: _layer_arrays(roles[n], n, net, path) for n in common.net_layers(net)}
    # Before upscore, so that a class mismatch reads as one.
    common.check_shapes(net, arrays, path)
    note = _check_fixed_upscore(upscore, CAFFE_TRUNCATED_UPSCORE, factor, net.num_classes, path)
    return arrays, [], [note]


def _import_fcn8s(
    roles: Mapping[str, CaffeLayer], net: common.Net, path: Path
) -> common.ImportResult:
    """An FCN-8s's or a VGG16 classifier's file: all of it into an FCN8s (Scale layers
    folded, upscore8 checked), its convolutions into a TruncatedFCN.

    Args:
      roles: the file's layers by cwfcn name (`_layers_by_role`).
      net: the net to fill.
      path: the file, for messages.

    Returns:
      (arrays of the layers `net` takes, the file's layers `net` does not use, notes).

    Raises:
      ValueError: a missing convolution, part of fc6/fc7 or of the head, a Scale without
        its score layer, shapes that do not match `net`, a non-bilinear upscore8.
    """
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
    wanted = common.vgg_file_layers(net)
    arrays = {n: _layer_arrays(roles[n], n, net, path) for n in wanted if n in roles}
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
    # Before upscore8, so that a class mismatch reads as one.
    common.check_shapes(net, arrays, path)
    if "score_pool4" in wanted:  # an FCN8s (a TruncatedFCN takes the convolutions only)
        if not present_head:
            notes.append("no FCN head (score_*, upscore*) in the file: a VGG16 classifier?")
        elif "upscore8" in roles:
            upscore8 = roles["upscore8"]
            notes.append(_check_fixed_upscore(upscore8, "upscore8", 8, net.num_classes, path))
            used.add("upscore8")
        else:
            notes.append("no upscore8 layer in the file (cwfcn's is fixed bilinear)")
    unused = [layer.name for role, layer in roles.items() if role not in used]
    return arrays, unused, notes
