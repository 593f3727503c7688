"""Giving a participant a place in a job: what ``subscribe`` and a device's ``join`` share."""

from __future__ import annotations

import secrets

from flcore.domain import tokens
from flcore.domain.job import Job
from flcore.engine import lifecycle
from flcore.errors import Conflict
from flcore.shared import clock
from flcore.storage.store import Store


def enrol(store: Store, job: Job, device_id: str | None = None, key: str | None = None) -> dict:
    """Give a participant a client identity in ``job``: what ``subscribe`` and ``join`` answer.

    ``key`` (a hashed idempotency key) makes a retry of the same subscribe get the place the first
    try took, with a fresh token, whatever the job's state now.
    """
    cfg = job.config
    held = store.client_by_key(job.id, key) if key else None
    if held is not None:
        return reissue(store, job, held, clock.now())
    if not job.takes_clients:
        raise Conflict(f"job {job.id} is {job.state} and takes no new clients")
    client_id = "c-" + secrets.token_hex(6)
    token, token_hash = tokens.new_token(client_id)
    now = clock.now()
    doc = {"_id": client_id, "job_id": job.id, "token_hash": token_hash, "created_at": now, "last_seen": now}
    if device_id is not None:
        doc["device_id"] = device_id
    if key is not None:
        doc["idempotency_key"] = key
    client = store.add_client(doc, capacity=cfg.num_clients)
    if client is None:
        raise Conflict(f"job {job.id} already has its {cfg.num_clients} clients")
    # the device's concurrent join took its place first: a fresh token opens that place
    reply = identity(job, client, token) if client["_id"] == client_id else reissue(store, job, client, now)
    # the job as it is now: any joiner may be the last to insert, whatever slot it took
    lifecycle.maybe_start(store, Job.load(store, job.id), now)
    return reply


def reissue(store: Store, job: Job, client: dict, now: float) -> dict:
    """A fresh token for an existing client (the old one stops working), as ``identity`` answers it."""
    token, token_hash = tokens.new_token(client["_id"])
    store.set_client_token(client["_id"], token_hash, now)
    return identity(job, client, token)


def identity(job: Job, client: dict, token: str) -> dict:
    """What subscribe and join answer: who the client is in the job, and the job's settings."""
    return {
        "job_id": job.id,
        "client_id": client["_id"],
        "token": token,
        "index": client["index"],
        "config": job.config.to_dict(),
    }
