"""How much privacy a DP job has spent: Google's ``dp-accounting`` (its RDP accountant), not ours.

A round picks ``m`` of the job's ``n`` clients without replacement, so each round
is a Gaussian mechanism sampled without replacement, and the neighbouring
relation is *replace one client's data*: one device's clipped change then moves
the sum by up to 2C, and the count of fitted changes (adaptive clipping) by up
to 1. The accountant is told the noise per unit of that sensitivity, for both
releases together (their Gaussian noise adds up as one vector's).

The library needs scipy, which would put the function's package over its 50 MB
target, so it is imported only when a DP job is created or closes a round; a
deployment built without it refuses DP jobs with a 400 that says how to add it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from flcore.errors import Invalid


class RoundCost(NamedTuple):
    """One round as the accountant sees it."""

    population: int  # the job's clients (n)
    picked: int  # clients picked that round (m)
    noise_multiplier: float  # z: noise std on the sum of changes / clip_norm
    count_stddev: float  # noise std on the count of fitted changes (0: fixed clipping, no count released)


MISSING = (
    "this deployment lacks what privacy settings need (the dp-accounting and cryptography packages): build "
    "the function's package with them (make package FL_PACKAGE_PRIVACY=1), or run such jobs on the local stack"
)


def _library():
    try:
        import dp_accounting
        from dp_accounting.rdp import RdpAccountant
    except ImportError:
        raise Invalid(MISSING) from None
    return dp_accounting, RdpAccountant


def require() -> None:
    """Refuse (400) where this deployment has no accountant."""
    _library()


def sensitivity_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """The noise per unit of sensitivity of one round's releases under replace-one: the sum's
    sensitivity is 2C (noise zC), the count's 1 (noise ``count_stddev``)."""
    if noise_multiplier <= 0:
        return 0.0
    inverse = (2.0 / noise_multiplier) ** 2 + (1.0 / count_stddev**2 if count_stddev > 0 else 0.0)
    return 1.0 / math.sqrt(inverse)


def epsilon(rounds: Sequence[RoundCost], delta: float) -> float:
    """Epsilon at ``delta`` after these rounds (inf when a round had no noise)."""
    if not rounds:
        return 0.0
    if any(r.noise_multiplier <= 0 for r in rounds):
        return math.inf
    dpa, accountant_class = _library()
    accountant = accountant_class(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    # consecutive equal rounds compose as one event (a job's rounds are usually all alike)
    groups: list[list] = []
    for r in rounds:
        if groups and groups[-1][0] == r:
            groups[-1][1] += 1
        else:
            groups.append([r, 1])
    for r, count in groups:
        z = sensitivity_multiplier(r.noise_multiplier, r.count_stddev)
        event = dpa.SampledWithoutReplacementDpEvent(r.population, r.picked, dpa.GaussianDpEvent(z))
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


def noise_for(target_epsilon: float, delta: float, round_cost: RoundCost, rounds: int) -> float:
    """The smallest noise multiplier that keeps ``rounds`` rounds like ``round_cost`` within the budget."""
    _library()

    def spent(z: float) -> float:
        return epsilon([round_cost._replace(noise_multiplier=z)] * rounds, delta)

    lo, hi = 0.01, 1.0
    while spent(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1000:
            raise Invalid(f"no noise up to 1000 x clip_norm keeps {rounds} rounds within epsilon {target_epsilon:g}")
    for _ in range(40):  # bisection to 0.1 % relative: epsilon falls as the noise grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spent(mid) > target_epsilon else (lo, mid)
        if hi - lo < 1e-3 * hi:
            break
    return round(hi, 4)
