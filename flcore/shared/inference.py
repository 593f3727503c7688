"""The models' forward pass in numpy, so the function can predict without torch.

Same preprocessing as the clients (pixels / 255, then the data set's per-channel
mean and standard deviation), same layers as the job's model
(:mod:`flcore.shared.modeldef`, built with torch by :class:`fllocal.models.LayerNet`).
"""

from __future__ import annotations

import numpy as np

from flcore.shared.datasets import NORMALISE
from flcore.shared.modeldef import ModelDef

Weights = dict[str, np.ndarray]


def preprocess(dataset: str, pixels: np.ndarray) -> np.ndarray:
    """Raw pixels (N x C x H x W, 0..255) as the network's float32 input."""
    mean, std = NORMALISE[dataset]
    x = pixels.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32).reshape(1, -1, 1, 1)) / np.asarray(std, np.float32).reshape(1, -1, 1, 1)


_WINDOW_BYTES = 1 << 20  # the unfolded windows of one slice of a batch, in one matrix product


def _conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Convolution (cross-correlation, as torch's Conv2d): N x C x H x W -> N x O x H' x W'.

    As one matrix product per slice of the batch over its unfolded windows: each slice's window
    matrix is about 1 MB, small enough to stay in the cache (3x faster than one einsum over the
    whole batch, and no window matrix of hundreds of MB for a large one).
    """
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, height, width = x.shape
    o, _, k, _ = weight.shape
    h2, w2 = (height - k) // stride + 1, (width - k) // stride + 1
    per = max(1, _WINDOW_BYTES // (h2 * w2 * c * k * k * 4))
    kernel = weight.reshape(o, c * k * k)
    channels_first = x.transpose(1, 0, 2, 3)  # C x N x H x W: one window offset is one block copy
    out = np.empty((n, o, h2, w2), np.float32)
    for start in range(0, n, per):
        m = min(per, n - start)
        cols = np.empty((c, k, k, m, h2, w2), np.float32)
        for i in range(k):
            for j in range(k):
                cols[:, i, j] = channels_first[
                    :, start : start + m, i : i + stride * (h2 - 1) + 1 : stride, j : j + stride * (w2 - 1) + 1 : stride
                ]
        out[start : start + m] = (kernel @ cols.reshape(c * k * k, -1)).reshape(o, m, h2, w2).transpose(1, 0, 2, 3)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def _pool(x: np.ndarray, layer: dict) -> np.ndarray:
    """Max or average pooling, as the maximum (or mean) of the k x k strided views of ``x``."""
    peak = layer["type"] == "maxpool2d"
    if layer["global"]:
        return (np.max if peak else np.mean)(x, axis=(2, 3), keepdims=True)
    k, s = layer["kernel"], layer["stride"]
    h2, w2 = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    out = None
    for i in range(k):
        for j in range(k):
            view = x[:, :, i : i + s * (h2 - 1) + 1 : s, j : j + s * (w2 - 1) + 1 : s]
            if out is None:
                out = view.copy()
            elif peak:
                np.maximum(out, view, out=out)
            else:
                out += view
    return out if peak else out / np.float32(k * k)


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


def log_probabilities(mdef: ModelDef, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Log-softmax of the logits, computed stably in float64 (what a cross-entropy is taken from)."""
    z = logits(mdef, weights, x).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def probabilities(mdef: ModelDef, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Softmax of the logits, computed stably in float64 (rows sum to 1)."""
    z = logits(mdef, weights, x).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
