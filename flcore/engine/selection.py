"""Straggler-aware picking for synchronous rounds (``selection: "fast"``).

A round waits for its slowest picked client, so picking fast, reliable clients
shortens every round; picking only those would starve the others, whose data
the model then never sees. The rule:

1. **Fairness first.** A client whose update has not counted for more than
   ``K = ceil(num_clients / clients_per_round) + 1`` rounds (one full turn of
   the fleet, plus one) is overdue and picked before anyone else, the longest
   waiting first. So no live client waits more than K rounds plus one more turn
   of the fleet (the overdue queue ahead of it), and most wait far less.
2. **Then speed and reliability.** The rest are ranked by their device's
   ``mean_train_seconds`` times ``1 + 2 x missed``, where ``missed`` is the share
   of its picks that missed their deadline (``deadlines_missed / (rounds_trained
   + deadlines_missed)``). A client with no measurement yet (a device that never
   trained, or a client without a device) gets the median of the known scores,
   so it is tried rather than ignored or always preferred.
3. Ties are broken by the job's seeded generator, so a schedule is reproducible.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from flcore.domain.config import JobConfig
from flcore.domain.devices import view
from flcore.storage.store import Store


def overdue_after(cfg: JobConfig) -> int:
    return math.ceil(cfg.num_clients / cfg.clients_per_round) + 1


def last_counted(history: list[dict]) -> dict[str, int]:
    """client id -> the last round its update was aggregated in."""
    out: dict[str, int] = {}
    for entry in history:
        for client in entry.get("client_ids", []):
            out[client] = max(out.get(client, 0), entry["round"])
    return out


def score(stats: dict | None) -> float | None:
    """Expected seconds to deliver, inflated by the share of missed deadlines; None when unmeasured."""
    if not stats or not stats.get("mean_train_seconds"):
        return None
    picked = stats["rounds_trained"] + stats["deadlines_missed"]
    missed = stats["deadlines_missed"] / picked if picked else 0.0
    return stats["mean_train_seconds"] * (1.0 + 2.0 * missed)


def pick_fast(
    store: Store, job_id: str, candidates: list[str], cfg: JobConfig, rnd: int, history: list[dict]
) -> list[str]:
    """``clients_per_round`` of ``candidates`` by the rule above, in partition order."""
    k = min(cfg.clients_per_round, len(candidates))
    device_of = store.device_ids_of(candidates)
    stats = {d["_id"]: view(d)["stats"] for d in store.get_devices(set(device_of.values()))}
    scores = {c: score(stats.get(device_of.get(c, ""))) for c in candidates}
    known = [s for s in scores.values() if s is not None]
    fill = statistics.median(known) if known else 0.0
    last = last_counted(history)
    limit = overdue_after(cfg)
    tiebreak = dict(zip(candidates, np.random.default_rng([cfg.seed, rnd]).permutation(len(candidates))))

    def key(c: str) -> tuple:
        waited = rnd - last.get(c, 0)
        overdue = waited > limit
        return (
            0 if overdue else 1,
            -waited if overdue else 0,
            scores[c] if scores[c] is not None else fill,
            tiebreak[c],
        )

    chosen = set(sorted(candidates, key=key)[:k])
    return [c for c in candidates if c in chosen]
