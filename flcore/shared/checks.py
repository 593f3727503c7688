"""The type tests every check of a request or job field shares (JSON's true is not a number here)."""

from __future__ import annotations


def is_int(value: object) -> bool:
    """A JSON integer: an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A JSON number: an ``int`` or ``float`` that is not a ``bool`` (finite or not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
