"""Whom a round picks: seeded random choice, or fast clients (:mod:`flcore.engine.selection`),
among the live clients that meet the job's criteria."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flcore.domain import filters
from flcore.domain.config import JobConfig
from flcore.domain.devices import view
from flcore.engine import selection
from flcore.storage.store import Store

if TYPE_CHECKING:
    from flcore.domain.job import Job


def pick_clients(candidates: list[str], cfg: JobConfig, rnd: int, attempt: int = 0) -> list[str]:
    """Seeded random choice, so a job's schedule is reproducible from its seed."""
    k = min(cfg.clients_per_round, len(candidates))
    rng = np.random.default_rng([cfg.seed, rnd, attempt])
    chosen = rng.choice(len(candidates), size=k, replace=False)
    return [candidates[i] for i in sorted(chosen)]


def choose(
    store: Store,
    job: Job,
    candidates: list[str],
    cfg: JobConfig,
    rnd: int,
    attempt: int = 0,
    closing: dict | None = None,
) -> list[str]:
    """A round's picks by the job's ``selection``: seeded random, or fast (:mod:`flcore.engine.selection`).

    ``closing`` is the history entry of the round being committed with these
    picks, which the stored history does not hold yet.
    """
    if cfg.selection != "fast" or not candidates:
        return pick_clients(candidates, cfg, rnd, attempt)
    history = (store.get_job(job.id, history=True) or {}).get("history", []) + ([closing] if closing else [])
    return selection.pick_fast(store, job.id, candidates, cfg, rnd, history)


def live_clients(store: Store, job: Job, now: float) -> list[str]:
    """Eligible clients heard from (a poll or a submit) within ``client_timeout_s``; the rest have gone."""
    return eligible(store, job, store.client_docs(job.id, seen_since=now - job.config.client_timeout_s))


def candidates(store: Store, job: Job, now: float) -> list[str]:
    """Whom the next round may pick: the live eligible clients, or all eligible ones if none is live."""
    return live_clients(store, job, now) or eligible(store, job, store.client_docs(job.id))


def eligible(store: Store, job: Job, clients: list[dict]) -> list[str]:
    """The clients (not left) that meet the job's device criteria, as the devices stand now.

    Criteria may name statistics that change (deadlines missed), so they are
    checked at every pick, not only when a device joins; a device the operator
    disabled is not picked.
    """
    criteria = job.doc.get("criteria")
    device_ids = {c["device_id"] for c in clients if "device_id" in c}
    if not criteria and not device_ids:
        return [c["_id"] for c in clients]
    docs = store.get_devices(device_ids) if device_ids else []
    disabled = {d["_id"] for d in docs if d.get("disabled")}  # the operator stopped picking these
    if not criteria:
        return [c["_id"] for c in clients if c.get("device_id") not in disabled]
    devices = {d["_id"]: view(d) for d in docs if d["_id"] not in disabled}
    return [
        c["_id"]
        for c in clients
        if c.get("device_id") in devices and filters.matches(criteria, devices[c["device_id"]])
    ]
