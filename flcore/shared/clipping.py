"""Bounding one device's say in the average: clip the change it made to the model it received.

Devices clip before they send (DP's bound on their own data must not depend on
the function); the function clips again whatever exceeds the bound when it holds
the model the change was made to. Numpy only: clients and the function share it.
Tensors that are not floating point (counters) are not part of the change.
"""

from __future__ import annotations

import math

import numpy as np

Weights = dict[str, np.ndarray]

TOLERANCE = 1e-4  # float32 rounding: a change clipped by a device may measure this much over C


def change_norm(weights: Weights, base: Weights) -> float:
    """The L2 norm of ``weights - base`` over all floating-point tensors together."""
    total = 0.0
    for name, w in weights.items():
        if np.issubdtype(w.dtype, np.floating):
            d = w.astype(np.float64) - base[name]
            total += float(np.dot(d.ravel(), d.ravel()))
    return math.sqrt(total)


def clip_change(weights: Weights, base: Weights, clip_norm: float) -> tuple[Weights, float]:
    """``base`` plus the change scaled to L2 norm at most ``clip_norm``, and the change's norm before."""
    norm = change_norm(weights, base)
    if norm <= clip_norm:
        return weights, norm
    factor = clip_norm / norm
    out: Weights = {}
    for name, w in weights.items():
        if np.issubdtype(w.dtype, np.floating):
            out[name] = (base[name] + (w.astype(np.float64) - base[name]) * factor).astype(w.dtype)
        else:
            out[name] = w
    return out, norm
