"""The wall clock the core reads: one function, so that tests move time instead of sleeping."""

from __future__ import annotations

import time


def now() -> float:
    """Seconds since the epoch, as ``time.time()``; tests replace this function (see tests/conftest.py)."""
    return time.time()
