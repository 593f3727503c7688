"""Give a client's freed memory back to the machine after each round.

glibc keeps memory a process freed (a round's activations, gradients and
request buffers) for reuse, spread over one arena per thread that allocated.
Twenty clients each keeping their last round's peak add up; ``malloc_trim``
returns what is free to the kernel. Only on glibc; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def release() -> None:
    """Return freed heap memory to the kernel, where the C library can."""
    trim = _trim()
    if trim is not None:
        trim(0)
