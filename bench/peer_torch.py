"""The PyTorch peer of cwfcn's training step: the same Caffe FCN-8s, optimiser and loss.

`bench/train.py --peer` times it against `train_lib.train_step` in one run, and checks
first that one step of each, from the same weights and batch (no dropout), gives the same
loss and the same updated parameters. torch is not a dependency of cwfcn: this module
imports it, and `bench/train.py` says how to install it when it is absent.

The net is the Caffe one (as `model.FCN8s`): conv1_1 padded by 100, 2x2/2 max-pools in
ceil mode, fc6 a 7x7 valid convolution, dropout after fc6 and fc7, the skips' 1x1 score
layers cropped at 5 (pool4) and 9 (pool3), the learnable 2x deconvolutions fixed
(lr_mult 0), upscore8 a fixed bilinear grouped deconvolution cropped at 31. The step is
`torch.optim.SGD(momentum, weight_decay)` on the mean cross-entropy over labelled
pixels: the update of optax's chain(add_decayed_weights, sgd(momentum)).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from flax import nnx
from torch import nn
from torch.nn import functional

from cwfcn import model, train_lib

IGNORE = 255  # the labels' "unlabelled" value


def _conv(kernel: np.ndarray, bias: np.ndarray, padding) -> nn.Conv2d:
    """An `nn.Conv2d` holding an HWIO kernel (as OIHW) and its bias."""
    kh, kw, cin, cout = kernel.shape
    conv = nn.Conv2d(cin, cout, (kh, kw), padding=padding)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(np.asarray(kernel).transpose(3, 2, 0, 1)))
        conv.bias.copy_(torch.tensor(np.asarray(bias)))
    return conv


class FCN8s(nn.Module):
    """FCN-8s in torch (NCHW), with the weights of a `model.FCN8s`."""

    def __init__(self, net: model.FCN8s, dropout_rate: float):
        super().__init__()
        _, state = nnx.split(net)
        params = nnx.to_pure_dict(state)
        convs = {}
        for name in model.vgg_conv_names(5):
            convs[name] = _conv(params[name]["kernel"], params[name]["bias"],
                                model.CAFFE_PAD if name == "conv1_1" else 1)
        for name in ("fc6", "fc7", "score_fr", "score_pool4", "score_pool3"):
            convs[name] = _conv(params[name]["kernel"], params[name]["bias"], 0)
        self.convs = nn.ModuleDict(convs)
        self.dropout = nn.Dropout(dropout_rate)
        # Caffe's deconv weights [Cin, Cout, k, k] are cwfcn's [k, k, Cin, Cout] transposed.
        for name in train_lib.UPSAMPLING_PARAMS:  # fixed, as FCN's lr_mult 0
            weight = torch.tensor(np.asarray(params[name]).transpose(2, 3, 0, 1))
            setattr(self, name, nn.Parameter(weight.contiguous(), requires_grad=False))
        classes = net.num_classes
        taps = np.outer(model.bilinear_kernel(16), model.bilinear_kernel(16))
        self.register_buffer("upscore8", torch.tensor(  # grouped: one kernel per class
            np.broadcast_to(taps, (classes, 1, 16, 16))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` preprocessed frames -> scores `[N, C, H, W]`."""
        height, width = x.shape[2:]
        c, skips = self.convs, {}
        for block, n in enumerate(model.VGG_BLOCK_SIZES, 1):
            for i in range(1, n + 1):
                x = torch.relu(c[f"conv{block}_{i}"](x))
            x = functional.max_pool2d(x, 2, 2, ceil_mode=True)
            skips[block] = x
        x = self.dropout(torch.relu(c["fc6"](x)))
        x = self.dropout(torch.relu(c["fc7"](x)))
        up = functional.conv_transpose2d(c["score_fr"](x), self.upscore2, stride=2)
        up = up + _crop(c["score_pool4"](skips[4]), model.POOL4_CROP, up.shape[2:])
        up = functional.conv_transpose2d(up, self.upscore_pool4, stride=2)
        up = up + _crop(c["score_pool3"](skips[3]), model.POOL3_CROP, up.shape[2:])
        up = functional.conv_transpose2d(up, self.upscore8, stride=8, groups=up.shape[1])
        return _crop(up, model.UPSCORE8_CROP, (height, width))

    def params(self) -> dict[str, dict[str, np.ndarray]]:
        """The trained parameters in cwfcn's layout: name -> {"kernel" HWIO, "bias"}."""
        return {name: {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                       "bias": conv.bias.detach().numpy()}
                for name, conv in self.convs.items()}


def _crop(x: torch.Tensor, offset: int, hw) -> torch.Tensor:
    return x[:, :, offset : offset + hw[0], offset : offset + hw[1]]


def make_step(net: model.FCN8s, config, images: np.ndarray, labels: np.ndarray, *,
              compiled: bool = False) -> tuple[Callable[[], float], FCN8s]:
    """One training step of the torch peer, as a call: forward, loss, backward, SGD.

    Args:
      net: the cwfcn net whose weights the peer starts from.
      config: its config (`model.dropout_rate`, `optim`: learning rate, momentum, decay).
      images: float32 `[N, H, W, 3]`, preprocessed.
      labels: int `[N, H, W]`, 255 = unlabelled.
      compiled: the net under `torch.compile` (inductor), else eager.

    Returns:
      (step: `() -> loss`, the peer module, whose params the steps update).
    """
    if config.optim.name != "sgd":
        raise ValueError(f"the torch peer runs SGD, as the default config; got "
                         f"{config.optim.name!r}")
    peer = FCN8s(net, config.model.dropout_rate).train()
    forward = torch.compile(peer) if compiled else peer
    x = torch.tensor(np.asarray(images).transpose(0, 3, 1, 2)).contiguous()
    y = torch.tensor(np.asarray(labels), dtype=torch.int64)
    optim = config.optim
    sgd = torch.optim.SGD([p for p in peer.parameters() if p.requires_grad],
                          lr=optim.learning_rate, momentum=optim.momentum,
                          weight_decay=optim.weight_decay)

    def step() -> float:
        sgd.zero_grad(set_to_none=True)
        loss = functional.cross_entropy(forward(x), y, ignore_index=IGNORE)
        loss.backward()
        sgd.step()
        return loss.item()

    return step, peer
