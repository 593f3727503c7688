"""Client state on disk, written so that a crash mid-write leaves the old file whole."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside ``path`` and rename over it: readers see the old bytes or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # per file: two state files never share one
    tmp.write_bytes(data)
    os.replace(tmp, path)
