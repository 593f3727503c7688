"""Deterministic data partitions from a spec the server sends and clients expand.

The server never loads data: it hands each client ``{strategy, seed, index,
num_partitions}`` and the client computes its own indices, which are the same on
every machine because they come from a seeded numpy generator.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

STRATEGIES = ("iid",)


def partition_indices(num_examples: int, spec: Mapping) -> np.ndarray:
    """Indices of the training examples that belong to partition ``spec['index']``.

    Partitions are disjoint and together cover the data set.
    """
    strategy = spec["strategy"]
    if strategy != "iid":
        raise ValueError(f"unknown partition strategy {strategy!r}")
    n_parts, index = int(spec["num_partitions"]), int(spec["index"])
    if not 0 <= index < n_parts:
        raise ValueError(f"partition index {index} outside 0..{n_parts - 1}")
    order = np.random.default_rng(int(spec["seed"])).permutation(num_examples)
    return np.array_split(order, n_parts)[index]


def train_eval_split(indices: np.ndarray, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a client's share into the part it trains on and the part it keeps for evaluation."""
    cut = int(round(len(indices) * train_fraction))
    return indices[:cut], indices[cut:]
