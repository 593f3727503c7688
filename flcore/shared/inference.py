"""The models' forward pass in numpy, so the function can predict without torch.

Same preprocessing as the clients (pixels / 255, then the data set's per-channel
mean and standard deviation), same layers as the job's model
(:mod:`flcore.shared.modeldef`, built with torch by :class:`fllocal.models.LayerNet`).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from flcore.shared.datasets import NORMALISE
from flcore.shared.modeldef import ModelDef

Weights = dict[str, np.ndarray]


def preprocess(dataset: str, pixels: np.ndarray) -> np.ndarray:
    """Raw pixels (N x C x H x W, 0..255) as the network's float32 input."""
    mean, std = NORMALISE[dataset]
    x = pixels.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32).reshape(1, -1, 1, 1)) / np.asarray(std, np.float32).reshape(1, -1, 1, 1)


def _conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Convolution (cross-correlation, as torch's Conv2d): N x C x H x W -> N x O x H' x W'."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = weight.shape[-1]
    windows = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N x C x H' x W' x k x k
    out = np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def _pool(x: np.ndarray, layer: dict) -> np.ndarray:
    reduce = np.max if layer["type"] == "maxpool2d" else np.mean
    if layer["global"]:
        return reduce(x, axis=(2, 3), keepdims=True)
    k, s = layer["kernel"], layer["stride"]
    return reduce(sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s], axis=(4, 5))


def _batchnorm(x: np.ndarray, w: Weights, prefix: str) -> np.ndarray:
    """Batch normalisation as in evaluation: the running statistics, torch's eps."""
    scale = w[f"{prefix}.weight"] / np.sqrt(w[f"{prefix}.running_var"] + np.float32(1e-5))
    shift = w[f"{prefix}.bias"] - w[f"{prefix}.running_mean"] * scale
    return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def _residual(x: np.ndarray, w: Weights, name: str, stride: int) -> np.ndarray:
    out = np.maximum(_batchnorm(_conv(x, w[f"{name}.conv1.weight"], None, stride, 1), w, f"{name}.bn1"), 0)
    out = _batchnorm(_conv(out, w[f"{name}.conv2.weight"], None, 1, 1), w, f"{name}.bn2")
    if f"{name}.shortcut.0.weight" in w:
        x = _batchnorm(_conv(x, w[f"{name}.shortcut.0.weight"], None, stride, 0), w, f"{name}.shortcut.1")
    return np.maximum(out + x, 0)


def _layer(layer: dict, w: Weights, x: np.ndarray) -> np.ndarray:
    kind, name = layer["type"], layer["name"]
    if kind == "conv2d":
        return _conv(x, w[f"{name}.weight"], w.get(f"{name}.bias"), layer["stride"], layer["padding"])
    if kind == "linear":
        out = x @ w[f"{name}.weight"].T
        return out + w[f"{name}.bias"] if f"{name}.bias" in w else out
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "flatten":
        return x.reshape(len(x), -1)
    if kind == "dropout":  # evaluation: nothing dropped
        return x
    if kind == "batchnorm2d":
        return _batchnorm(x, w, name)
    if kind.endswith("pool2d"):
        return _pool(x, layer)
    return _residual(x, w, name, layer["stride"])


def logits(mdef: ModelDef, weights: Weights, x: np.ndarray) -> np.ndarray:
    """The network's outputs for a preprocessed batch, layer by layer as the job's model lists them."""
    for layer in mdef.layers:
        x = _layer(layer, weights, x)
    return x


def probabilities(mdef: ModelDef, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Softmax of the logits, computed stably in float64 (rows sum to 1)."""
    z = logits(mdef, weights, x).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
