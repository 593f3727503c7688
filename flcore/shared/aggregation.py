"""Numpy primitives the strategies are built from; no torch, so the function stays small.

Updates arrive as a stream (:class:`Updates`): the linear rules fold them one at
a time into float64 running sums, so their memory is O(model) whatever the
number of updates; the median and trimmed mean need every update's value of a
coordinate at once and read the updates block by block instead, so theirs is
O(updates x block).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from flcore.shared.weights import Weights

Update = tuple[Weights, int]  # (client weights, number of training examples)

# Bytes of one block of the robust rules, over all updates together.
BLOCK_BYTES = 64 * 1024 * 1024


class Updates(Protocol):
    """A round's updates: iterated once, one at a time (a yielded update is valid until the next
    is asked for), or read by blocks of tensors for the rules that need all values at once."""

    def __iter__(self) -> Iterator[Update]: ...

    def __len__(self) -> int: ...

    def blocks(self, budget: int) -> Iterator[list[Weights]]: ...


class InMemory:
    """Updates already in memory (tests, and callers that hold them anyway)."""

    def __init__(self, updates: Sequence[Update]):
        self.updates = list(updates)

    def __iter__(self) -> Iterator[Update]:
        return iter(self.updates)

    def __len__(self) -> int:
        return len(self.updates)

    def blocks(self, budget: int) -> Iterator[list[Weights]]:
        yield [w for w, _ in self.updates]


def as_updates(updates: Updates | Sequence[Update]) -> Updates:
    return updates if hasattr(updates, "blocks") else InMemory(updates)  # type: ignore[arg-type]


class Accumulator:
    """Running float64 sums of weighted tensors: O(model) memory, and the order of arrival
    does not change the result beyond float64 rounding."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.weight = 0.0
        self.count = 0

    def add(self, tensors: Weights, weight: float = 1.0) -> None:
        for name, t in tensors.items():
            acc = self.sums.get(name)
            if acc is None:
                acc = self.sums[name] = np.zeros(t.shape, dtype=np.float64)
            acc += t.astype(np.float64) * weight if weight != 1.0 else t
        self.weight += weight
        self.count += 1

    def result(self, divide_by: float) -> Weights:
        """The sums divided by ``divide_by``, as float32 (the sums are released as it goes)."""
        out: Weights = {}
        for name in list(self.sums):
            out[name] = (self.sums.pop(name) / divide_by).astype(np.float32)
        return out


def weighted_mean(updates: Iterable[Update]) -> Weights:
    """Mean of client weights by example count (FedAvg's rule), folded one update at a time."""
    acc = Accumulator()
    for weights, n in updates:
        acc.add(weights, float(n))
    if acc.count == 0:
        raise ValueError("aggregation needs at least one update")
    if acc.weight <= 0:
        raise ValueError("aggregation needs a positive number of examples")
    return acc.result(acc.weight)


fedavg = weighted_mean  # the name the literature uses


def _blockwise(updates: Updates | Sequence[Update], rule) -> Weights:
    """``rule`` (a float64 stack of one tensor from every update -> its result) over every tensor."""
    updates = as_updates(updates)
    if len(updates) == 0:
        raise ValueError("aggregation needs at least one update")
    out: Weights = {}
    for block in updates.blocks(BLOCK_BYTES):
        for name in block[0]:
            out[name] = rule(np.stack([w[name] for w in block]).astype(np.float64)).astype(np.float32)
    return out


def coordinate_median(updates: Updates | Sequence[Update]) -> Weights:
    return _blockwise(updates, lambda s: np.median(s, axis=0))


def trimmed_mean(updates: Updates | Sequence[Update], fraction: float) -> Weights:
    """Drop ``floor(fraction * n)`` values at each end of every coordinate, average the rest."""

    def rule(stack: np.ndarray) -> np.ndarray:
        n = len(stack)
        cut = int(np.floor(fraction * n))
        if 2 * cut >= n:
            cut = (n - 1) // 2
        return np.sort(stack, axis=0)[cut : n - cut].mean(axis=0)

    return _blockwise(updates, rule)
