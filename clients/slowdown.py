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

from fllocal import env


class SlowdownError(ValueError):
    """A slowdown setting that cannot be used."""


def settings() -> tuple[float, float, int]:
    """(fraction, factor, seed) from the environment, or a :class:`SlowdownError` naming the bad one."""
    try:
        fraction = env.get_float("FL_SLOW_FRACTION", 0.0)
        factor = env.get_float("FL_SLOWDOWN", 1.0)
        seed = env.get_int("FL_SLOW_SEED", 0)
    except ValueError as exc:
        raise SlowdownError(f"FL_SLOW_FRACTION, FL_SLOWDOWN and FL_SLOW_SEED must be numbers ({exc})") from None
    if not 0.0 <= fraction <= 1.0:
        raise SlowdownError(f"FL_SLOW_FRACTION must be between 0 and 1, not {fraction}")
    if not factor >= 1.0:
        raise SlowdownError(f"FL_SLOWDOWN must be at least 1 (how many times slower), not {factor}")
    return fraction, factor, seed


def slow_indices(count: int, fraction: float, seed: int) -> set[int]:
    """Which of ``count`` clients are slow: exactly ``round(fraction x count)``, the same for the same seed."""
    k = int(round(fraction * count))
    return {int(i) for i in np.random.default_rng(seed).choice(count, size=k, replace=False)} if k else set()


def factors(count: int) -> list[float]:
    """Each client's slowdown factor (1.0: full speed), from the environment."""
    fraction, factor, seed = settings()
    slow = slow_indices(count, fraction, seed)
    return [factor if i in slow else 1.0 for i in range(count)]
