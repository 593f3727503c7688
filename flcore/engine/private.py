"""A DP job's round (DP-FedAvg with fixed or adaptive clipping): the clipped changes' mean plus noise.

The devices clip their change to C before sending it (:mod:`flcore.shared.clipping`);
where the function holds the model the change was made to, it clips again
whatever exceeds C, so a device that did not clip gains no extra say. The changes
are averaged one vote per device (weighting by examples would let a device's say
exceed C), Gaussian noise of std z·C goes on their sum, and the result is what
the job's strategy folds, as if it were the round's only update: FedAvg keeps it,
the server optimisers step along it.

Each device also says whether its change fitted under C (``dp_unclipped``, kept
on its update): adaptive clipping moves C toward the job's quantile from the
count of those, noised (Andrew et al. 2021), and never from a device's norm.
"""

from __future__ import annotations

import math
import secrets

import numpy as np

from flcore.domain import accountant
from flcore.domain.accountant import RoundCost
from flcore.domain.job import Job
from flcore.domain.privacy import DpSettings
from flcore.shared import clipping
from flcore.shared.aggregation import Accumulator, InMemory, Updates
from flcore.shared.strategies import Strategy
from flcore.shared.weights import Weights


def current_clip(doc: dict, dp: DpSettings) -> float:
    """The clipping norm the job's next (or open) round uses."""
    return float((doc.get("privacy") or {}).get("clip_norm", dp.clip_norm))


def round_cost(job: Job, picked: int) -> RoundCost:
    """What one round with ``picked`` clients costs, for the accountant."""
    dp, cfg = job.config.dp_settings, job.config
    return RoundCost(cfg.num_clients, min(picked, cfg.num_clients), dp.noise_multiplier,
                     dp.clipped_count_stddev if dp.adaptive else 0.0)  # fmt: skip


def spent(doc: dict) -> list[RoundCost]:
    """The rounds a job has been charged for so far."""
    return [RoundCost(*c) for c in (doc.get("privacy") or {}).get("costs", [])]


def aggregate(
    strategy: Strategy, leased: Job, current: Weights | None, updates: Updates, docs: list[dict], state: Weights
) -> tuple[Weights, Weights, dict]:
    """The round's new model and strategy state, and its privacy record for the history."""
    dp = leased.config.dp_settings
    clip = current_clip(leased.doc, dp)
    rng = np.random.default_rng(secrets.randbits(128))  # noise nobody can replay
    acc = Accumulator()
    reclipped = 0
    for weights, _examples in updates:
        if current is not None:  # the function holds the base model: enforce the bound itself
            weights, norm = clipping.clip_change(weights, current, clip * (1 + clipping.TOLERANCE))
            reclipped += norm > clip * (1 + clipping.TOLERANCE)
        acc.add(weights, 1.0)
    k = acc.count
    stddev = dp.noise_multiplier * clip / k  # noise of std z·C on the sum is z·C/k on the mean
    mean = acc.result(k)
    noised = {
        name: (t + rng.normal(0.0, stddev, t.shape)).astype(np.float32) if stddev > 0 else t for name, t in mean.items()
    }
    new_weights, new_state = strategy.aggregate(current, InMemory([(noised, 1)]), state, leased.config.num_clients)
    record: dict = {"clip_norm": clip, "noise_stddev": round(stddev, 8), "clients": k, "reclipped": reclipped}
    next_clip = clip
    if dp.adaptive:
        fitted = sum(bool(d.get("dp_unclipped")) for d in docs) + rng.normal(0.0, dp.clipped_count_stddev)
        share = fitted / k
        next_clip = clip * math.exp(-dp.clip_learning_rate * (share - dp.target_quantile))
        record["fitted_share"] = round(float(share), 4)  # noised: this is what adaptive clipping may release
    costs = [*spent(leased.doc), round_cost(leased, len(leased.picked))]
    spent_now = accountant.epsilon(costs, dp.delta)
    record["epsilon"] = spent_now if math.isfinite(spent_now) else None  # None: no noise, no guarantee
    record["next_clip_norm"] = next_clip
    return new_weights, new_state, record


def device_noise(job: Job) -> dict:
    """Distributed DP (with secure aggregation): the noise each device adds, sized so that the sum of the
    fewest survivors the job allows carries the full noise (std z·C on the changes, the count's on the bit)."""
    dp = job.config.dp_settings
    fewest = max(2, job.config.min_updates_needed)
    clip = current_clip(job.doc, dp)
    return {
        "dp_noise_stddev": dp.noise_multiplier * clip / math.sqrt(fewest),
        "dp_count_stddev": (dp.clipped_count_stddev if dp.adaptive else 0.0) / math.sqrt(fewest),
    }


def distributed_record(leased: Job, secure: dict) -> dict:
    """The privacy record of a round whose noise the devices added under secure aggregation: the function
    saw only the noised sum, from which it moves the clipping norm as it would have."""
    dp = leased.config.dp_settings
    clip, k = current_clip(leased.doc, dp), int(secure["survivors"])
    record: dict = {"clip_norm": clip, "clients": k, "noise": "distributed", **device_noise(leased)}
    next_clip = clip
    if dp.adaptive:
        share = float(secure["unclipped_sum"]) / k
        next_clip = clip * math.exp(-dp.clip_learning_rate * (share - dp.target_quantile))
        record["fitted_share"] = round(share, 4)
    costs = [*spent(leased.doc), round_cost(leased, len(leased.picked))]
    spent_now = accountant.epsilon(costs, dp.delta)
    record["epsilon"] = spent_now if math.isfinite(spent_now) else None
    record["next_clip_norm"] = next_clip
    return record


def job_fields(leased: Job, record: dict) -> dict:
    """The job's running privacy account after a round with this record."""
    dp = leased.config.dp_settings
    costs = [*spent(leased.doc), round_cost(leased, len(leased.picked))]
    return {
        "epsilon": record["epsilon"],
        "delta": dp.delta,
        "target_epsilon": dp.target_epsilon or None,
        "rounds": len(costs),
        "clip_norm": record["next_clip_norm"],
        "costs": [list(c) for c in costs],
    }


def budget_ends(leased: Job, record: dict, picks_next: int) -> str | None:
    """Why the job must end now (another round would spend more than its target epsilon), or None."""
    dp = leased.config.dp_settings
    if not dp.target_epsilon:
        return None
    costs = [*spent(leased.doc), round_cost(leased, len(leased.picked)), round_cost(leased, picks_next)]
    following = accountant.epsilon(costs, dp.delta)
    if following <= dp.target_epsilon:
        return None
    now = record["epsilon"] or math.inf
    return (
        f"privacy budget: epsilon {now:.3g} spent; another round would reach {following:.3g}, "
        f"above the target {dp.target_epsilon:g}"
    )
