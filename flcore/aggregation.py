"""Aggregation strategies: numpy only, so the function stays free of torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flcore.weights import Weights


def fedavg(updates: Sequence[tuple[Weights, int]]) -> Weights:
    """Weighted FedAvg (McMahan et al. 2017): mean of client weights by example count.

    Sums in float64 so the order in which updates arrive does not change the result.
    """
    if not updates:
        raise ValueError("fedavg needs at least one update")
    total = float(sum(n for _, n in updates))
    if total <= 0:
        raise ValueError("fedavg needs a positive number of examples")
    names = list(updates[0][0])
    out: Weights = {}
    for name in names:
        acc = np.zeros(updates[0][0][name].shape, dtype=np.float64)
        for weights, n in updates:
            acc += weights[name].astype(np.float64) * (n / total)
        out[name] = acc.astype(np.float32)
    return out
