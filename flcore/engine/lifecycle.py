"""A job's lifecycle without a server process: open, start, move forward, start what rules started.

Any invocation may move a job forward (a subscribe, a poll, the ``aggregate``
action, a scheduled event). Each move is one of the named transitions of
:mod:`flcore.storage.jobs`, a conditional update that names the state it
expects, so concurrent invocations cannot move a job twice. Where the round
modes differ, the job's :class:`flcore.domain.modes.RoundMode` decides.
"""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from flcore.domain.config import JobConfig
from flcore.domain.job import Job
from flcore.engine import statistics
from flcore.shared import clock
from flcore.storage.store import Store

log = logging.getLogger(__name__)


def round_fields(picked: list[str], rnd: int, cfg: JobConfig, now: float) -> dict:
    """What a job document holds about the round under way."""
    return {"round": rnd, "picked": picked, "round_started_at": now, "deadline": now + cfg.round_timeout_s}


def reloaded(store: Store, job: Job, doc: dict | None) -> Job:
    """The job after a transition: the new document, or a fresh read when another invocation won."""
    doc = doc or store.get_job(job.id)
    return Job.of(doc) if doc is not None else job


def maybe_start(store: Store, job: Job, now: float) -> Job:
    """Start round 1 once enough clients (``min_clients``, default all) have subscribed."""
    if job.state != "waiting":
        return job
    cfg = job.config
    # every poll of a waiting job comes here: the job's own counter of places handed out (never
    # fewer than the clients there are) spares counting them, a scan, until there may be enough
    if (
        job.doc.get("places_taken", cfg.num_clients) < cfg.clients_to_start
        or store.count_clients(job.id, taking_part=True) < cfg.clients_to_start
    ):
        return job
    if statistics.needs_stats(job):  # a tabular job: its encoding first, from the devices' statistics
        job = reloaded(store, job, statistics.fix_encoding(store, job, now))
        if job.state != "waiting" or statistics.needs_stats(job):
            return job
    picked = job.mode.first_picks(store, job)
    first = job.doc.get("retrain_from", 0) + 1  # a retraining goes on from the job's last round
    return reloaded(store, job, store.start_job(job.id, round_fields(picked, first, cfg, now), now))


def advance(store: Store, job: Job, now: float | None = None) -> Job:
    """Move a job as far as it can go right now; cheap when there is nothing to do."""
    now = clock.now() if now is None else now
    job = maybe_start(store, job, now)
    if job.state != "running":
        return job
    return job.mode.advance(store, job, now)


def close_ready(store: Store) -> dict:
    """Move every running job forward, and finish rule-started jobs a crash left unopened;
    what the scheduled event runs (and ``aggregate`` without a job)."""
    for doc in store.jobs_with_pending_starts():
        start_pending(store, doc["_id"], doc["starts_pending"], clock.now())
    jobs = []
    for jid in store.running_job_ids():
        doc = store.get_job(jid)
        if doc is not None:
            jobs.append(moved(advance(store, Job.of(doc))))
    return {"jobs": jobs}


def moved(job: Job) -> dict:
    """Where a job stands after a move, as ``aggregate`` answers it."""
    return {"job_id": job.id, "state": job.state, "round": job.round}


def start_pending(store: Store, job_id: str, starts: list[str], now: float) -> None:
    """Open the jobs a rule started, then clear the note; idempotent, so a retry after a crash is safe."""
    for other in starts:
        if store.open_job(other, now) is None:
            log.info("rule of job %s: job %s was not waiting to start", job_id, other)
    store.clear_pending_starts(job_id)


def credit_devices(store: Store, per_client: dict[str, dict[str, float]]) -> None:
    """Add to the statistics of the devices behind these clients; best effort, after a commit."""
    try:
        devices = store.device_ids_of(per_client)
        store.count_device_stats({devices[c]: inc for c, inc in per_client.items() if c in devices})
    except PyMongoError as exc:  # the round is committed; a lost count must not fail the request
        log.warning("device statistics not updated: %s", exc)
