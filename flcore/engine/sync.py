"""Synchronous rounds: each round picks clients, waits for their updates (or its deadline), closes.

A round closes when every picked client has sent its update, or at its
deadline with at least ``min_updates``; a round past its deadline with fewer
is re-picked with fresh clients and time. A picked client that leaves is
replaced at once, so the round does not wait for its deadline.
"""

from __future__ import annotations

import logging

from flcore.domain.config import JobConfig
from flcore.domain.job import Job
from flcore.engine import lifecycle, pacing
from flcore.engine.closing import close_round
from flcore.engine.picking import candidates, choose, eligible, live_clients, pick_clients
from flcore.errors import Conflict
from flcore.shared import clock, encodings
from flcore.shared.weights import Weights
from flcore.storage.store import Store
from flcore.storage.stored_updates import StoredUpdates

log = logging.getLogger(__name__)


class SyncRounds:
    """Rounds with a barrier: the default mode."""

    needs_current_model = False

    def first_picks(self, store: Store, job: Job) -> list[str]:
        first = job.doc.get("retrain_from", 0) + 1  # a retraining picks for the round it goes on from
        return choose(store, job, eligible(store, job, store.client_docs(job.id)), job.config, first)

    def advance(self, store: Store, job: Job, now: float) -> Job:
        """Close the round if it is ready, replace picked clients gone silent, or re-pick it past its deadline."""
        ready, arrived = ready_to_close(store, job, now)
        if ready:
            return lifecycle.reloaded(store, job, close_round(store, job, now))
        job = replace_silent(store, job, arrived, now)
        if now >= job.doc["deadline"]:
            moved = repick(store, job, arrived, now)
            return Job.of(moved) if moved else job
        return job

    def assign(self, store: Store, job: Job, client_id: str, now: float) -> int | None:
        """A picked client that has not sent its update trains on the newest model."""
        if client_id in job.picked and not store.has_update(job.id, job.round, client_id):
            return job.doc.get("model_round") or 0
        return None

    def task(self, store: Store, job: Job, client_id: str, now: float) -> dict | None:
        return None

    def reply_fields(self, job: Job, base: int | None) -> dict:
        return {}

    def wait_hint(self, job: Job, now: float) -> float:
        return pacing.until_round_end(job, now)

    def check_submit(self, store: Store, job: Job, client: dict, rnd: int) -> None:
        """Only a picked client's update for the open round counts."""
        if job.state != "running" or rnd != job.round or client.get("left"):
            raise Conflict(f"round {rnd} is not open (job is {job.state}, round {job.round})")
        if client["_id"] not in job.picked:
            raise Conflict(f"client {client['_id']} was not picked for round {rnd}")

    def stored(self, store: Store, job: Job, client_id: str) -> None:
        pass  # it keeps its pick until the round closes

    def poll_after_submit(self, job: Job, now: float) -> float:
        return pacing.until_round_end(job, now)

    def leave(self, store: Store, job: Job, client_id: str, now: float) -> None:
        replace_picked(store, job, client_id, now)

    def waiting_updates(self, store: Store, job: Job) -> int:
        return len(store.submitted_clients(job.id, job.round))

    def status(self, job: Job) -> dict:
        return {}

    def collect(
        self, store: Store, leased: Job, current: Weights | None, now: float
    ) -> tuple[list[dict], StoredUpdates, dict]:
        """The picked clients' updates for the round, read one at a time as the strategy folds them (as
        float32 weights: an encoded update is restored as it is read; the robust rules widen float16
        themselves, block by block)."""
        picked = set(leased.picked)
        docs = [d for d in store.load_updates(leased.id, leased.round) if d["client_id"] in picked]
        lossy = encodings.lossy(leased.config.update_encoding) and not leased.strategy.blockwise
        restore = (lambda doc, tensors: encodings.restore(tensors, current)) if lossy else None
        return docs, StoredUpdates(store, docs, restore), {}

    def missed(self, leased: Job) -> dict[str, dict[str, float]]:
        """A picked client that sent nothing missed the deadline (those that did are credited after)."""
        return {c: {"deadlines_missed": 1} for c in leased.picked}

    def next_round(self, store: Store, leased: Job, entry: dict, cfg: JobConfig, now: float) -> dict:
        """The next round's picks and deadline."""
        picked = choose(store, leased, candidates(store, leased, now), cfg, leased.round + 1, closing=entry)
        return lifecycle.round_fields(picked, leased.round + 1, cfg, clock.now())

    def committed(self, store: Store, job: Job) -> None:
        pass

    def upload_round(self, job: Job) -> int | None:
        return job.round  # uploads for a closed round can no longer count


def ready_to_close(store: Store, job: Job, now: float) -> tuple[bool, list[str]]:
    """Whether the current round can be aggregated, and who submitted to it."""
    picked = set(job.picked)
    arrived = [c for c in store.submitted_clients(job.id, job.round) if c in picked]
    if picked and len(arrived) >= len(picked):
        return True, arrived
    return now >= job.doc["deadline"] and len(arrived) >= max(1, job.config.min_updates_needed), arrived


def repick(store: Store, job: Job, arrived: list[str], now: float) -> dict | None:
    """A round that missed its deadline with too few updates gets fresh clients and time."""
    cfg = job.config
    attempt = int(job.doc.get("attempt", 0)) + 1
    others = [c for c in live_clients(store, job, now) if c not in arrived]
    fresh = choose(store, job, others, cfg, job.round, attempt) if others else []
    picked = arrived + fresh[: max(0, cfg.clients_per_round - len(arrived))]
    log.info("job %s round %s missed its deadline; re-picked %d clients", job.id, job.round, len(picked))
    moved = store.repick(job.id, job.round, job.doc["deadline"], picked, now + cfg.round_timeout_s, attempt)
    if moved is not None:
        lifecycle.credit_devices(store, {c: {"deadlines_missed": 1} for c in job.picked if c not in arrived})
    return moved


def replace_silent(store: Store, job: Job, arrived: list[str], now: float) -> Job:
    """Replace each picked client not heard from within ``client_timeout_s`` that has sent nothing,
    as one that left is, so the round does not wait for its deadline.

    A picked client polls when told to train and sends heartbeats while it trains or waits for a
    trainer slot, so only a client that crashed or lost the function goes this long unheard.
    """
    waiting_on = [c for c in job.picked if c not in arrived]
    if not waiting_on or now < job.doc["round_started_at"]:
        return job
    cutoff = now - job.config.client_timeout_s
    silent = [c for c, seen in store.last_seen_of(waiting_on).items() if seen < cutoff]
    for gone in silent:
        moved = replace_picked(store, job, gone, now)
        if moved is None:  # the round moved on, or another invocation replaced it first
            return lifecycle.reloaded(store, job, None)
        log.info("job %s round %s: picked client %s went silent; replaced", job.id, job.round, gone)
        lifecycle.credit_devices(store, {gone: {"deadlines_missed": 1}})
        job = Job.of(moved)
    return job


def replace_picked(store: Store, job: Job, gone: str, now: float) -> dict | None:
    """Swap a picked client that left for a live one not picked; one conditional update.

    If the round moved on meanwhile there is nothing to replace (the client is
    never picked again anyway); with nobody to swap in, the round closes with
    the others (or re-picks at its deadline).
    """
    spare = [c for c in live_clients(store, job, now) if c not in job.picked and c != gone]
    # seeded apart from the round's re-picks (attempt 1, 2, ...), so a replacement is reproducible too
    fresh = pick_clients(spare, job.config, job.round, int(job.doc.get("attempt", 0)) + 100)[:1] if spare else []
    picked = [c for c in job.picked if c != gone] + fresh
    return store.replace_pick(job.id, job.round, job.picked, picked)
