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


@dataclass(frozen=True)
class SecAggSettings:
    """The checked ``secure_aggregation`` block (SecAgg+), its defaults resolved for the job."""

    degree: int = 0  # neighbours each device shares its secrets with (0: about 2·log2 of the picked)
    threshold: int = 0  # shares that rebuild a secret (0: degree // 2 + 1)
    clip_range: float = 8.0  # values are clipped to [-clip_range, clip_range] before quantisation
    bits: int = 22  # quantisation levels: 2**bits (the sum of 2**(32 - bits) devices cannot wrap)
    stage_timeout_s: float = 30.0  # how long a stage after the keys waits for the slow
    max_attempts: int = 3  # fresh-key attempts per round before the job stops

    def to_dict(self) -> dict:
        return asdict(self)

    def threshold_for(self, neighbours: int) -> int:
        """The threshold of a device with this many neighbours (fewer than the degree when the round has
        few members): more than half of them, so no minority of neighbours holds a secret."""
        return max(1, min(self.threshold, neighbours // 2 + 1)) if neighbours < self.degree else self.threshold


SECAGG_RANGES: dict[str, tuple[float, float, type]] = {
    "degree": (0, 1000, int),
    "threshold": (0, 1000, int),
    "clip_range": (1.0, 1e6, float),  # at least 1: the weight (at most 1) goes through it too
    "bits": (8, 26, int),
    "stage_timeout_s": (1.0, 3600.0, float),
    "max_attempts": (1, 10, int),
}


SECAGG_DOCS = {
    "degree": "neighbours each device shares its secrets with (0: an even number near 2 log2 clients_per_round)",
    "threshold": "shares that rebuild a device's secrets, above half the degree (0: degree / 2 + 1)",
    "clip_range": "values are clipped to [-clip_range, clip_range] before quantisation",
    "bits": "quantisation levels are 2^bits; a round sums at most 2^(32 - bits) devices",
    "stage_timeout_s": "how long each stage after the keys waits for devices that are slow or gone",
    "max_attempts": "attempts with fresh keys per round before the job stops",
}


def parse_secure(raw: object, clients_per_round: int, min_updates: int) -> SecAggSettings:
    """The checked block with degree and threshold resolved for rounds of ``clients_per_round``; a 400
    naming the field otherwise."""
    from flcore.shared.secagg import channel
    from flcore.shared.secagg.masking import default_degree, max_members

    if not channel.AVAILABLE:
        raise ImportError("cryptography")
    if not isinstance(raw, Mapping):
        raise Invalid("secure_aggregation must be an object (an empty one takes the defaults)")
    unknown = sorted(set(raw) - set(SECAGG_RANGES))
    if unknown:
        raise Invalid(f"unknown secure_aggregation settings: {', '.join(map(repr, unknown[:10]))}; known: "
                      f"{', '.join(sorted(SECAGG_RANGES))}")  # fmt: skip
    values: dict = {}
    for name, (lo, hi, kind) in SECAGG_RANGES.items():
        if name in raw:
            v = raw[name]
            if not is_number(v) or not math.isfinite(v) or not lo <= v <= hi or (kind is int and v != int(v)):
                raise Invalid(f"secure_aggregation.{name} must be a {kind.__name__} between {lo:g} and {hi:g}")
            values[name] = kind(v)
    cfg = SecAggSettings(**values)
    if clients_per_round < 3:
        raise Invalid("secure_aggregation needs clients_per_round of at least 3: a sum of one or two reveals them")
    if min_updates < 2:
        raise Invalid("secure_aggregation needs min_updates of at least 2: a sum of one update is that update")
    if clients_per_round > max_members(cfg.bits):
        raise Invalid(f"secure_aggregation with bits {cfg.bits} sums at most {max_members(cfg.bits)} devices a "
                      f"round: lower clients_per_round or bits")  # fmt: skip
    degree = cfg.degree or default_degree(clients_per_round)
    degree += degree % 2  # the ring joins each device to as many on either side
    threshold = cfg.threshold or degree // 2 + 1
    if threshold > degree:
        raise Invalid(f"secure_aggregation.threshold {threshold} cannot exceed the degree {degree}")
    if threshold <= degree // 2:
        raise Invalid(f"secure_aggregation.threshold must be above half the degree ({degree // 2}), so that "
                      "no minority of a device's neighbours can rebuild its secrets")  # fmt: skip
    return SecAggSettings(**{**values, "degree": degree, "threshold": threshold})


def secure_of(stored: Mapping) -> SecAggSettings:
    return SecAggSettings(**stored)
