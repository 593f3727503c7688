"""When clients should ask again: often enough to hear of their round quickly, seldom enough that
a large fleet's polls stay within the job's ``max_poll_rate``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flcore.domain.job import Job

# How soon a waiting client should ask again near a round's end (and when no round
# history says when that is): about a second, so a picked client hears of its round
# quickly; earlier in a round it is told to come back about when the round should end.
POLL_INTERVAL_S = 1.0
# rounds whose durations say how long the next one should take
RECENT_ROUNDS = 5


def poll_interval(job: Job, shortest: float = POLL_INTERVAL_S) -> float:
    """How often a waiting client asks: ``shortest``, or slower for a fleet so large that its polls
    would exceed the job's ``max_poll_rate`` (1,000 clients at 100 a second: every 10 s). Never
    longer than half of ``client_timeout_s``, so a waiting client is never taken for gone."""
    cfg = job.config
    return round(min(max(shortest, cfg.num_clients / cfg.max_poll_rate), cfg.client_timeout_s / 2), 2)


def until_round_end(job: Job, now: float, shortest: float = POLL_INTERVAL_S) -> float:
    """Seconds a waiting client of a round-paced job should sleep: until one poll interval before
    the round should end, going by the median of the job's recent rounds, or one interval without
    history or once that time has come.

    Clients not picked then ask about twice a round instead of every interval, and a client the
    next round picks still hears of it within about one interval (``poll_interval``).
    """
    interval = poll_interval(job, shortest)
    recent = job.doc.get("recent_round_s") or []
    if job.state != "running" or not recent:
        return interval
    expected_end = job.doc["round_started_at"] + float(np.median(recent))
    return round(min(max(interval, expected_end - interval - now), job.config.client_timeout_s / 2), 2)
