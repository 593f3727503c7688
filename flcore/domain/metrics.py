"""Metrics as clients and the operator report them: a few named finite numbers, nothing else."""

from __future__ import annotations

import math

from flcore.errors import Invalid
from flcore.shared.checks import is_number

# a classifier's per-class counts (flcore.shared.tabular.MAX_CLASSES_FOR_F1 classes, three each) and the rest
MAX_METRICS = 128


def metrics_of(raw: object) -> dict[str, float]:
    """A body's ``metrics``: at most MAX_METRICS named finite numbers, or a 400."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_METRICS:
        raise Invalid(f"metrics must be an object of at most {MAX_METRICS} numbers")
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64 or "." in key or key.startswith("$"):
            raise Invalid("metric names must be short plain strings")
        if not is_number(value) or not math.isfinite(value):
            raise Invalid(f"metric {key!r} must be a finite number")
        out[key] = float(value)
    return out
