"""Deterministic data partitions from a spec the server sends and clients expand.

The server never loads data: it hands each client ``{scheme, seed, index,
num_partitions, ...}`` and the client computes its own indices from the labels
it holds. Every client computes the same assignment, because it comes from a
numpy generator seeded by the job, so shares are disjoint without anyone
coordinating.

The server can still compute how large each share is, from the data set's
class counts (public metadata) alone: a generator's permutation of n items
draws the same numbers whatever the items are, so :func:`share_sizes` replays
the same draws on counts. That bounds what a client may claim to have trained on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import numpy as np

Partitioner = Callable[[np.ndarray, int, np.random.Generator, Mapping], list[np.ndarray]]


def iid(labels: np.ndarray, n: int, rng: np.random.Generator, spec: Mapping) -> list[np.ndarray]:
    """Equal random shares."""
    return np.array_split(rng.permutation(len(labels)), n)


def _dirichlet_cuts(
    counts: list[int], n: int, rng: np.random.Generator, spec: Mapping
) -> tuple[list[np.ndarray], list[int]]:
    """Per class, where its (shuffled) examples are cut among the n clients; and each client's total.

    Small alpha gives each client few classes. Draws are repeated (from the same
    generator) until every client has at least ``min_examples``, as is usual, so
    nobody is left with nothing to train on.
    """
    alpha = float(spec.get("alpha", 0.5))
    min_examples = int(spec.get("min_examples", 10))
    for _ in range(1000):
        cuts = [(np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * c).astype(int) for c in counts]
        sizes = sum(np.diff(np.concatenate(([0], cut, [c]))) for cut, c in zip(cuts, counts))
        if min(sizes) >= min_examples:
            return cuts, [int(x) for x in sizes]
    raise ValueError(f"no Dirichlet({alpha}) split gives each of {n} clients {min_examples} examples")


def dirichlet(labels: np.ndarray, n: int, rng: np.random.Generator, spec: Mapping) -> list[np.ndarray]:
    """Label skew: each class is split among clients in proportions drawn from Dir(alpha)."""
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    cuts, _ = _dirichlet_cuts([len(idx) for idx in by_class], n, rng, spec)
    shares = [[] for _ in range(n)]
    for idx, cut in zip(by_class, cuts):
        for client, part in enumerate(np.split(idx, cut)):
            shares[client].append(part)
    return [rng.permutation(np.sort(np.concatenate(s))) for s in shares]


def _dirichlet_sizes(counts: list[int], n: int, rng: np.random.Generator, spec: Mapping) -> list[int]:
    for c in counts:
        rng.permutation(c)  # the draws dirichlet() makes shuffling each class
    return _dirichlet_cuts(counts, n, rng, spec)[1]


def shards(labels: np.ndarray, n: int, rng: np.random.Generator, spec: Mapping) -> list[np.ndarray]:
    """The pathological split of McMahan et al.: sort by label, cut n*k shards, deal k to each client."""
    k = int(spec.get("shards", 2))
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    pieces = np.array_split(order, n * k)
    dealt = rng.permutation(n * k)
    return [rng.permutation(np.concatenate([pieces[s] for s in dealt[i * k : (i + 1) * k]])) for i in range(n)]


def _shards_sizes(counts: list[int], n: int, rng: np.random.Generator, spec: Mapping) -> list[int]:
    k = int(spec.get("shards", 2))
    total = sum(counts)
    rng.permutation(total)  # the draw shards() sorts by label
    pieces = [len(p) for p in np.array_split(np.arange(total), n * k)]
    dealt = rng.permutation(n * k)
    return [sum(pieces[s] for s in dealt[i * k : (i + 1) * k]) for i in range(n)]


def _iid_sizes(counts: list[int], n: int, rng: np.random.Generator, spec: Mapping) -> list[int]:
    return [len(p) for p in np.array_split(np.arange(sum(counts)), n)]


SCHEMES: dict[str, Partitioner] = {"iid": iid, "dirichlet": dirichlet, "shards": shards}
_SIZES = {"iid": _iid_sizes, "dirichlet": _dirichlet_sizes, "shards": _shards_sizes}


def _rng(spec: Mapping) -> np.random.Generator:
    return np.random.default_rng([int(spec["seed"]), 7919])


def all_partitions(labels: np.ndarray, spec: Mapping) -> list[np.ndarray]:
    """Every client's share; they are disjoint and (for these schemes) cover the data set."""
    scheme = spec["scheme"]
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}")
    return SCHEMES[scheme](np.asarray(labels), int(spec["num_partitions"]), _rng(spec), spec)


def share_sizes(class_counts: list[int], spec: Mapping) -> list[int]:
    """How many examples each share holds, from the data set's class counts alone."""
    key = (
        spec["scheme"],
        int(spec["seed"]),
        int(spec["num_partitions"]),
        float(spec.get("alpha", 0.5)),
        int(spec.get("shards", 2)),
        int(spec.get("min_examples", 10)),
    )
    return list(_share_sizes(tuple(class_counts), key))


@functools.lru_cache(maxsize=64)
def _share_sizes(class_counts: tuple[int, ...], key: tuple) -> tuple[int, ...]:
    """Cached per job: a warm function computes a job's share sizes once, not on every submit."""
    scheme, seed, n, alpha, shards, min_examples = key
    spec = {"seed": seed, "alpha": alpha, "shards": shards, "min_examples": min_examples}
    return tuple(_SIZES[scheme](list(class_counts), n, _rng(spec), spec))


def train_examples(class_counts: list[int], spec: Mapping) -> int:
    """How many examples partition ``spec['index']`` trains on: the most it may claim."""
    size = share_sizes(class_counts, spec)[int(spec["index"])]
    train = _train_cut(size, float(spec["train_fraction"]))
    cap = int(spec.get("max_train_examples") or 0)
    return min(train, cap) if cap else train


def partition_indices(labels: np.ndarray, spec: Mapping) -> np.ndarray:
    """Indices of the training examples that belong to partition ``spec['index']``."""
    n, index = int(spec["num_partitions"]), int(spec["index"])
    if not 0 <= index < n:
        raise ValueError(f"partition index {index} outside 0..{n - 1}")
    return all_partitions(labels, spec)[index]


def train_eval_split(indices: np.ndarray, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a client's share into the part it trains on and the part it keeps for evaluation."""
    cut = _train_cut(len(indices), train_fraction)
    return indices[:cut], indices[cut:]


def _train_cut(size: int, train_fraction: float) -> int:
    return int(round(size * train_fraction))


def parse(text: str) -> dict:
    """``iid``, ``dirichlet:0.5`` or ``shards:2`` -> the job fields that describe it."""
    name, _, arg = text.strip().lower().partition(":")
    if name not in SCHEMES:
        raise ValueError(f"partition must be one of {sorted(SCHEMES)} (e.g. dirichlet:0.5, shards:2)")
    if not arg:
        return {"partition": name}
    try:
        if name == "dirichlet":
            return {"partition": name, "partition_alpha": float(arg)}
        if name == "shards":
            return {"partition": name, "shards_per_client": int(arg)}
    except ValueError:
        raise ValueError(f"partition {text!r}: {arg!r} is not a number") from None
    raise ValueError(f"partition {name} takes no argument")
