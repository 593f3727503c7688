"""The models' forward pass in numpy, so the function can predict without torch.

Same preprocessing as the clients (pixels / 255, then the data set's per-channel
mean and standard deviation), same layers as :class:`fllocal.models.TwoLayerCNN`:
valid 5x5 convolutions, ReLU, 2x2 max pooling, two fully connected layers.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from flcore.specs import NORMALISE

Weights = dict[str, np.ndarray]


def preprocess(dataset: str, pixels: np.ndarray) -> np.ndarray:
    """Raw pixels (N x C x H x W, 0..255) as the network's float32 input."""
    mean, std = NORMALISE[dataset]
    x = pixels.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32).reshape(1, -1, 1, 1)) / np.asarray(std, np.float32).reshape(1, -1, 1, 1)


def _conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Valid convolution (cross-correlation, as torch's Conv2d): N x C x H x W -> N x O x H' x W'."""
    k = weight.shape[-1]
    windows = sliding_window_view(x, (k, k), axis=(2, 3))  # N x C x H' x W' x k x k
    out = np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)
    return out + bias.reshape(1, -1, 1, 1)


def _pool(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def logits(weights: Weights, x: np.ndarray) -> np.ndarray:
    """The network's outputs for a preprocessed batch."""
    x = _pool(np.maximum(_conv(x, weights["conv1.weight"], weights["conv1.bias"]), 0))
    x = _pool(np.maximum(_conv(x, weights["conv2.weight"], weights["conv2.bias"]), 0))
    x = np.maximum(x.reshape(len(x), -1) @ weights["fc1.weight"].T + weights["fc1.bias"], 0)
    return x @ weights["fc2.weight"].T + weights["fc2.bias"]


def probabilities(weights: Weights, x: np.ndarray) -> np.ndarray:
    """Softmax of the logits, computed stably in float64 (rows sum to 1)."""
    z = logits(weights, x).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
