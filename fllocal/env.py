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
    value = get(name)
    return int(value) if value.strip() else default


def get_float(name: str, default: float) -> float:
    value = get(name)
    return float(value) if value.strip() else default
