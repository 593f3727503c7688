"""Settings from the environment, with a ``.env`` file (python-dotenv) filling gaps."""

from __future__ import annotations

import os

from dotenv import find_dotenv, load_dotenv

_loaded = False


def load() -> None:
    """Read ``.env`` once; variables already in the environment win."""
    global _loaded
    if not _loaded:
        load_dotenv(find_dotenv(usecwd=True), override=False)
        _loaded = True


def get(name: str, default: str = "") -> str:
    load()
    return os.environ.get(name, default)


def get_int(name: str, default: int) -> int:
    """``name`` as an integer, ``default`` when unset; a ValueError naming the setting otherwise."""
    return _number(name, default, int, "a whole number")


def get_float(name: str, default: float) -> float:
    return _number(name, default, float, "a number")


def _number(name: str, default, kind: type, what: str):
    value = get(name).strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not {what}") from None
