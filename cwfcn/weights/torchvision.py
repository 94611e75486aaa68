"""The torchvision VGG16 importer: a `.pth` / `.pt` state_dict into cwfcn's layers.

The file is read without torch (`unpickle.read_torch_state_dict`). torchvision's VGG16
takes RGB in 0..1 normalised by the ImageNet mean and std; that convention is folded into
conv1_1 (`common.fold_input_convention`) so that the net computes the same features on
cwfcn's input (BGR, 0..255, minus the data set's mean).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cwfcn.weights import common
from cwfcn.weights.unpickle import read_torch_state_dict

# Indices of the convolutions in torchvision's `vgg16().features` (ReLUs and pools between).
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# torchvision's ImageNet normalisation: RGB in 0..1, then (x - mean) / std.
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
# torchvision's `vgg16().classifier` Linear layers that are FCN's fc6 / fc7.
TORCHVISION_FCS = {"fc6": "classifier.0", "fc7": "classifier.3"}


def import_layers(path: Path, net: common.Net, mean_bgr: np.ndarray) -> common.ImportResult:
    """torchvision VGG16 keys -> cwfcn layers; conv1_1 folded to cwfcn's input convention.

    Args:
      path: the .pth / .pt file.
      net: the net to fill (its layers and shapes decide what is taken).
      mean_bgr: float64 `[3]`, the mean `net`'s inputs have subtracted (BGR, 0..255).

    Returns:
      (arrays of the layers `net` has, the file's other layers (not used), notes).

    Raises:
      ValueError: an unreadable file, not a torchvision VGG16 state_dict, or a weight of
        the wrong rank (conv1_1 without 3 input channels).
    """
    state_dict = read_torch_state_dict(path)
    keys_in_file = {
        name: f"features.{index}"
        for name, index in zip(common.VGG_CONVS, TORCHVISION_CONV_INDICES, strict=True)
    }
    if any(f"{key}.weight" in state_dict for key in TORCHVISION_FCS.values()):
        keys_in_file.update(TORCHVISION_FCS)
    wanted = common.vgg_file_layers(net)
    keys = {name: key for name, key in keys_in_file.items() if name in wanted}
    unused = [f"{name} ({key})" for name, key in keys_in_file.items() if name not in wanted]
    if "classifier.6.weight" in state_dict:
        unused.append("fc8 (classifier.6)")
    missing = [
        f"{key}.{param}"
        for key in keys.values()
        for param in ("weight", "bias")
        if f"{key}.{param}" not in state_dict
    ]
    if missing:
        raise ValueError(
            f"{path}: not a torchvision VGG16 state_dict: missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}; it has {sorted(state_dict)[:6]} ..."
        )
    arrays: dict[str, common.LayerArrays] = {}
    for name, key in keys.items():
        weight, bias = state_dict[f"{key}.weight"], state_dict[f"{key}.bias"]
        source = f"{key}.weight {tuple(weight.shape)}"
        if name in common.FCS:
            expected = common.layer_variables(net, name)[0].shape
            kernel = common.fc_kernel(weight, name, expected, path, source)
        elif weight.ndim == 4:
            kernel = common.oihw_to_hwio(weight)
        else:
            raise common.shape_error(
                path, name, "weight [Cout, Cin, kh, kw]", (), weight.shape, source
            )
        arrays[name] = common.LayerArrays(kernel, np.asarray(bias, np.float32), source)
    conv1 = arrays["conv1_1"]
    if conv1.kernel.shape[2] != 3:
        raise common.shape_error(
            path,
            "conv1_1",
            "kernel [kh, kw, Cin, Cout]",
            (*conv1.kernel.shape[:2], 3, *conv1.kernel.shape[3:]),
            conv1.kernel.shape,
            conv1.source,
        )
    kernel, bias = common.fold_input_convention(
        conv1.kernel,
        conv1.bias,
        mean_bgr=mean_bgr,
        rgb=True,
        scale=1 / 255,
        mean=TORCHVISION_MEAN_RGB,
        std=TORCHVISION_STD_RGB,
    )
    arrays["conv1_1"] = common.LayerArrays(kernel, bias, conv1.source)
    notes = [
        "conv1_1 folded from torchvision's RGB 0..1 (x - mean) / std input to BGR 0..255 "
        f"minus mean_bgr={common.format_values(mean_bgr)}: input channels flipped, kernel / "
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
