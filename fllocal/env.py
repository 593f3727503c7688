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
    return number(name, get(name), int, default)


def get_float(name: str, default: float) -> float:
    return number(name, get(name), float, default)


def number(name: str, raw: str, kind: type, default):
    """The setting ``name``'s text ``raw`` as a ``kind``, ``default`` when empty; a ValueError naming it."""
    value = raw.strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not {'a whole number' if kind is int else 'a number'}") from None
