"""Deterministic data partitions from a spec the server sends and clients expand.

The server never loads data: it hands each client ``{strategy, seed, index,
num_partitions, ...}`` and the client computes its own indices from the labels
it holds. Every client computes the same assignment, because it comes from a
numpy generator seeded by the job, so shares are disjoint without anyone
coordinating.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

Partitioner = Callable[[np.ndarray, int, np.random.Generator, Mapping], list[np.ndarray]]


def iid(labels: np.ndarray, n: int, rng: np.random.Generator, spec: Mapping) -> list[np.ndarray]:
    """Equal random shares."""
    return np.array_split(rng.permutation(len(labels)), n)


def dirichlet(labels: np.ndarray, n: int, rng: np.random.Generator, spec: Mapping) -> list[np.ndarray]:
    """Label skew: each class is split among clients in proportions drawn from Dir(alpha).

    Small alpha gives each client few classes. Draws are repeated (from the same
    generator) until every client has at least ``min_examples``, as is usual, so
    nobody is left with nothing to train on.
    """
    alpha = float(spec.get("alpha", 0.5))
    min_examples = int(spec.get("min_examples", 10))
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    for _ in range(1000):
        shares: list[list[np.ndarray]] = [[] for _ in range(n)]
        for idx in by_class:
            props = rng.dirichlet(np.full(n, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for client, part in enumerate(np.split(idx, cuts)):
                shares[client].append(part)
        parts = [np.sort(np.concatenate(s)) for s in shares]
        if min(len(p) for p in parts) >= min_examples:
            return [rng.permutation(p) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gives each of {n} clients {min_examples} examples")


def shards(labels: np.ndarray, n: int, rng: np.random.Generator, spec: Mapping) -> list[np.ndarray]:
    """The pathological split of McMahan et al.: sort by label, cut n*k shards, deal k to each client."""
    k = int(spec.get("shards", 2))
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    pieces = np.array_split(order, n * k)
    dealt = rng.permutation(n * k)
    return [rng.permutation(np.concatenate([pieces[s] for s in dealt[i * k:(i + 1) * k]])) for i in range(n)]


STRATEGIES: dict[str, Partitioner] = {"iid": iid, "dirichlet": dirichlet, "shards": shards}


def all_partitions(labels: np.ndarray, spec: Mapping) -> list[np.ndarray]:
    """Every client's share; they are disjoint and (for these strategies) cover the data set."""
    strategy = spec["strategy"]
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown partition strategy {strategy!r}")
    n = int(spec["num_partitions"])
    rng = np.random.default_rng([int(spec["seed"]), 7919])
    return STRATEGIES[strategy](np.asarray(labels), n, rng, spec)


def partition_indices(labels: np.ndarray, spec: Mapping) -> np.ndarray:
    """Indices of the training examples that belong to partition ``spec['index']``."""
    n, index = int(spec["num_partitions"]), int(spec["index"])
    if not 0 <= index < n:
        raise ValueError(f"partition index {index} outside 0..{n - 1}")
    return all_partitions(labels, spec)[index]


def train_eval_split(indices: np.ndarray, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a client's share into the part it trains on and the part it keeps for evaluation."""
    cut = int(round(len(indices) * train_fraction))
    return indices[:cut], indices[cut:]


def parse(text: str) -> dict:
    """``iid``, ``dirichlet:0.5`` or ``shards:2`` -> the job fields that describe it."""
    name, _, arg = text.strip().lower().partition(":")
    if name not in STRATEGIES:
        raise ValueError(f"partition must be one of {sorted(STRATEGIES)} (e.g. dirichlet:0.5, shards:2)")
    if not arg:
        return {"partition": name}
    if name == "dirichlet":
        return {"partition": name, "partition_alpha": float(arg)}
    if name == "shards":
        return {"partition": name, "shards_per_client": int(arg)}
    raise ValueError(f"partition {name} takes no argument")
