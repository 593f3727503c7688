"""A job's ``dp`` block: client-level differential privacy (DP-FedAvg), checked when the job is created.

Each picked device clips the change it made to the model it received to L2 norm
``clip_norm`` (C); the function averages the clipped changes without weighting
them by examples (one device, one bounded vote) and adds Gaussian noise of
standard deviation ``noise_multiplier`` x C to their sum. With ``target_quantile``
set, C follows the share of devices whose change fitted under it (adaptive
clipping, Andrew et al. 2021), from a count that is itself noised. The privacy
spent is counted by :mod:`flcore.engine.accountant` after every round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from flcore.errors import Invalid
from flcore.shared.checks import is_number

ON_TARGET = ("stop", "derive")


@dataclass(frozen=True)
class DpSettings:
    """The checked ``dp`` block, with its defaults resolved for the job it belongs to."""

    noise_multiplier: float = 1.0  # noise std on the sum of clipped changes, in units of clip_norm
    clip_norm: float = 1.0  # C: the largest L2 norm a device's change may have (the first C, when adaptive)
    target_quantile: float = 0.0  # adaptive clipping: the share of changes C should fit (0: C stays fixed)
    clip_learning_rate: float = 0.2  # adaptive clipping: C <- C * exp(-rate * (fitted share - quantile))
    clipped_count_stddev: float = 0.0  # adaptive clipping: noise on the count of fitted changes
    delta: float = 0.0  # the delta that epsilon is stated at
    target_epsilon: float = 0.0  # 0: no budget
    on_target: str = "stop"  # stop: end the job before a round would exceed the budget; derive: pick z for it

    @property
    def adaptive(self) -> bool:
        return self.target_quantile > 0

    def to_dict(self) -> dict:
        return asdict(self)


# name -> (low, high, what it is), for the 400s and docs/settings.md
RANGES: dict[str, tuple[float, float, str]] = {
    "noise_multiplier": (0.0, 1000.0, "noise std on the sum of clipped changes, in units of clip_norm"),
    "clip_norm": (1e-6, 1e6, "the largest L2 norm a device's change may have (the first one, when adaptive)"),
    "target_quantile": (0.0, 0.99, "adaptive clipping: the share of changes the norm should fit (0: fixed)"),
    "clip_learning_rate": (0.0, 10.0, "adaptive clipping: how fast the norm follows the quantile"),
    "clipped_count_stddev": (0.0, 1e6, "adaptive clipping: noise on the count of fitted changes "
                             "(0: clients_per_round / 20)"),
    "delta": (0.0, 0.1, "the delta epsilon is stated at (0: 1 / num_clients)"),
    "target_epsilon": (0.0, 1e6, "the privacy budget (0: none)"),
}  # fmt: skip


def _number(name: str, raw: object) -> float:
    lo, hi, _ = RANGES[name]
    if not is_number(raw) or not math.isfinite(raw) or not lo <= raw <= hi:
        raise Invalid(f"dp.{name} must be a number between {lo:g} and {hi:g}")
    return float(raw)


def parse(raw: object, num_clients: int, clients_per_round: int) -> tuple[DpSettings, bool]:
    """The checked block with ``delta`` and the count noise resolved for this job, and whether
    the noise is still to be derived from the budget (``on_target: derive``); a 400 naming the
    field otherwise."""
    if not isinstance(raw, Mapping):
        raise Invalid("dp must be an object: noise_multiplier, clip_norm, target_epsilon, ...")
    unknown = sorted(set(raw) - set(RANGES) - {"on_target"})
    if unknown:
        raise Invalid(f"unknown dp settings: {', '.join(map(repr, unknown[:10]))}; known: "
                      f"{', '.join(sorted([*RANGES, 'on_target']))}")  # fmt: skip
    values = {name: _number(name, raw[name]) for name in RANGES if name in raw}
    on_target = raw.get("on_target", "stop")
    if on_target not in ON_TARGET:
        raise Invalid(f"dp.on_target must be one of {list(ON_TARGET)}")
    derive = on_target == "derive"
    if derive and not values.get("target_epsilon"):
        raise Invalid("dp.on_target derive picks the noise for dp.target_epsilon: set target_epsilon")
    if values.get("delta", 0.0) == 0.0:
        values["delta"] = 1.0 / num_clients
    if values.get("target_quantile", 0.0) > 0 and values.get("clipped_count_stddev", 0.0) == 0.0:
        values["clipped_count_stddev"] = clients_per_round / 20
    if values.get("delta", 0.0) >= 1.0:
        raise Invalid("dp.delta must be below 1")
    return DpSettings(**values, on_target=on_target), derive


def of(stored: Mapping) -> DpSettings:
    """The settings as stored with a job (already checked and resolved)."""
    return DpSettings(**stored)
