"""Uneven devices on one machine: a chosen fraction of the clients train several times slower.

``FL_SLOW_FRACTION`` (0..1) of a fleet's clients, picked reproducibly from
``FL_SLOW_SEED`` (default 0), take ``FL_SLOWDOWN`` (≥ 1) times as long to train:
after its real training a slow client waits ``(FL_SLOWDOWN - 1)`` times what
the training took, as a slower device would have, leaving the CPU to the others.
The launcher decides which clients are slow, so the count is exact:
``round(fraction x clients)``.
"""

from __future__ import annotations

import numpy as np

from clients.settings import ClientSettings


def slow_indices(count: int, fraction: float, seed: int) -> set[int]:
    """Which of ``count`` clients are slow: exactly ``round(fraction x count)``, the same for the same seed."""
    k = int(round(fraction * count))
    return {int(i) for i in np.random.default_rng(seed).choice(count, size=k, replace=False)} if k else set()


def factors(count: int, settings: ClientSettings) -> list[float]:
    """Each client's slowdown factor (1.0: full speed), from the process's settings."""
    slow = slow_indices(count, settings.slow_fraction, settings.slow_seed)
    return [settings.slowdown if i in slow else 1.0 for i in range(count)]
