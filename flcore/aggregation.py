"""Numpy primitives the strategies are built from; no torch, so the function stays small."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flcore.weights import Weights


def weighted_mean(updates: Sequence[tuple[Weights, int]]) -> Weights:
    """Mean of client weights by example count (FedAvg's rule).

    Sums in float64 so the order in which updates arrive does not change the result.
    """
    if not updates:
        raise ValueError("aggregation needs at least one update")
    total = float(sum(n for _, n in updates))
    if total <= 0:
        raise ValueError("aggregation needs a positive number of examples")
    out: Weights = {}
    for name in updates[0][0]:
        acc = np.zeros(updates[0][0][name].shape, dtype=np.float64)
        for weights, n in updates:
            acc += weights[name].astype(np.float64) * (n / total)
        out[name] = acc.astype(np.float32)
    return out


fedavg = weighted_mean  # the name the literature uses


def _stack(all_weights: Sequence[Weights], name: str) -> np.ndarray:
    return np.stack([w[name] for w in all_weights]).astype(np.float64)


def coordinate_median(all_weights: Sequence[Weights]) -> Weights:
    if not all_weights:
        raise ValueError("aggregation needs at least one update")
    return {k: np.median(_stack(all_weights, k), axis=0).astype(np.float32) for k in all_weights[0]}


def trimmed_mean(all_weights: Sequence[Weights], fraction: float) -> Weights:
    """Drop ``floor(fraction * n)`` values at each end of every coordinate, average the rest."""
    if not all_weights:
        raise ValueError("aggregation needs at least one update")
    n = len(all_weights)
    cut = int(np.floor(fraction * n))
    if 2 * cut >= n:
        cut = (n - 1) // 2
    out: Weights = {}
    for k in all_weights[0]:
        s = np.sort(_stack(all_weights, k), axis=0)
        out[k] = s[cut:n - cut].mean(axis=0).astype(np.float32)
    return out
