"""Torch models built from a job's layer list (:mod:`flcore.shared.modeldef`); client and CLI side only.

The function never imports this: it knows each model's tensors from the layer
list alone, and a test checks that the ``state_dict`` built here matches
:attr:`ModelDef.spec` exactly for every preset.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flcore.shared import modeldef
from flcore.shared.modeldef import ModelDef


class Residual(nn.Module):
    """ResNet's basic block: conv3x3-bn-relu-conv3x3-bn plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _layer(layer: dict, shape: tuple[int, ...]) -> tuple[nn.Module, tuple[int, ...]]:
    """One layer as a torch module, and the shape after it (checked already by modeldef)."""
    kind = layer["type"]
    if kind == "linear":
        return nn.Linear(shape[0], layer["out"], bias=layer["bias"]), (layer["out"],)
    if kind == "relu":
        return nn.ReLU(), shape
    if kind == "dropout":
        return nn.Dropout(layer["p"]), shape
    if kind == "flatten":
        return nn.Flatten(), (int(np.prod(shape)),)
    c, h, w = shape
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(c), shape
    if kind.endswith("pool2d"):
        if layer["global"]:
            return nn.AdaptiveMaxPool2d(1) if kind == "maxpool2d" else nn.AdaptiveAvgPool2d(1), (c, 1, 1)
        k, s = layer["kernel"], layer["stride"]
        pool = nn.MaxPool2d(k, s) if kind == "maxpool2d" else nn.AvgPool2d(k, s)
        return pool, (c, (h - k) // s + 1, (w - k) // s + 1)
    if kind == "conv2d":
        k, s, p = layer["kernel"], layer["stride"], layer["padding"]
        conv = nn.Conv2d(c, layer["out"], k, s, p, bias=layer["bias"])
        return conv, (layer["out"], (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    s = layer["stride"]  # residual
    return Residual(c, layer["out"], s), (layer["out"], (h - 1) // s + 1, (w - 1) // s + 1)


class LayerNet(nn.Module):
    """The layers in order, each registered under its name (so tensors are named as the spec names them)."""

    def __init__(self, mdef: ModelDef):
        super().__init__()
        shape: tuple[int, ...] = mdef.input_shape
        for layer in mdef.layers:
            module, shape = _layer(layer, shape)
            self.add_module(layer["name"], module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


def build(model: object, dataset: str = "mnist", seed: int | None = None) -> LayerNet:
    """A fresh model (a preset name, a layer list or a :class:`ModelDef`); with a seed, the same
    initial weights on every machine."""
    mdef = model if isinstance(model, ModelDef) else modeldef.resolve(model, dataset)
    if seed is None:
        return LayerNet(mdef)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LayerNet(mdef)


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's float tensors (weights and batchnorm statistics); integer buffers stay local."""
    return {
        k: v.detach().cpu().numpy().astype(np.float32, copy=True)
        for k, v in model.state_dict().items()
        if v.is_floating_point()
    }


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Load float tensors; every one the model has must be given (integer buffers keep their values)."""
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.items()}, strict=False
    )
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
