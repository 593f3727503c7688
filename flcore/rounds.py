"""The round lifecycle without a server process: start, pick, close, aggregate.

Any invocation may move a job forward (a subscribe, a poll, the ``aggregate``
action, a scheduled event). Each move is a conditional update that names the
state it expects, so concurrent invocations cannot move a job twice.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from flcore import weights as wcodec
from flcore.config import JobConfig
from flcore.jobs import Job
from flcore.lease import Lease
from flcore.store import Store

log = logging.getLogger(__name__)


def pick_clients(candidates: list[str], cfg: JobConfig, rnd: int, attempt: int = 0) -> list[str]:
    """Seeded random choice, so a job's schedule is reproducible from its seed."""
    k = min(cfg.clients_per_round, len(candidates))
    rng = np.random.default_rng([cfg.seed, rnd, attempt])
    chosen = rng.choice(len(candidates), size=k, replace=False)
    return [candidates[i] for i in sorted(chosen)]


def live_clients(store: Store, job: Job, now: float) -> list[str]:
    """Clients heard from (a poll or a submit) within ``client_timeout_s``; the rest have gone."""
    return store.client_ids(job.id, seen_since=now - job.config.client_timeout_s)


def round_fields(picked: list[str], rnd: int, cfg: JobConfig, now: float) -> dict:
    return {"round": rnd, "picked": picked, "round_started_at": now, "deadline": now + cfg.round_timeout_s}


def _reloaded(store: Store, job: Job, doc: dict | None) -> Job:
    """The job after a transition: the new document, or a fresh read when another invocation won."""
    doc = doc or store.get_job(job.id)
    return Job.of(doc) if doc is not None else job


def maybe_start(store: Store, job: Job, now: float) -> Job:
    """Start round 1 once enough clients (``min_clients``, default all) have subscribed."""
    if job.state != "waiting":
        return job
    cfg = job.config
    clients = store.client_ids(job.id)
    if len(clients) < cfg.clients_to_start:
        return job
    picked = pick_clients(clients, cfg, 1)
    moved = store.transition(
        job.id, {"state": "waiting"},
        {"$set": {"state": "running", "started_at": now, **round_fields(picked, 1, cfg, now)}},
    )
    return _reloaded(store, job, moved)


def ready_to_close(store: Store, job: Job, now: float) -> tuple[bool, list[str]]:
    """Whether the current round can be aggregated, and who submitted to it."""
    picked = set(job.picked)
    arrived = [c for c in store.submitted_clients(job.id, job.round) if c in picked]
    if len(arrived) >= len(picked):
        return True, arrived
    return now >= job.doc["deadline"] and len(arrived) >= job.config.min_updates_needed, arrived


def advance(store: Store, job: Job, now: float | None = None) -> Job:
    """Move a job as far as it can go right now; cheap when there is nothing to do."""
    now = time.time() if now is None else now
    job = maybe_start(store, job, now)
    if job.state != "running":
        return job
    ready, arrived = ready_to_close(store, job, now)
    if ready:
        return _reloaded(store, job, close_round(store, job, now))
    if now >= job.doc["deadline"]:
        moved = repick(store, job, arrived, now)
        return Job.of(moved) if moved else job
    return job


def repick(store: Store, job: Job, arrived: list[str], now: float) -> dict | None:
    """A round that missed its deadline with too few updates gets fresh clients and time."""
    cfg = job.config
    attempt = int(job.doc.get("attempt", 0)) + 1
    others = [c for c in live_clients(store, job, now) if c not in arrived]
    fresh = pick_clients(others, cfg, job.round, attempt) if others else []
    picked = arrived + fresh[: max(0, cfg.clients_per_round - len(arrived))]
    log.info("job %s round %s missed its deadline; re-picked %d clients", job.id, job.round, len(picked))
    return store.transition(
        job.id, {"state": "running", "round": job.round, "deadline": job.doc["deadline"]},
        {"$set": {"picked": picked, "deadline": now + cfg.round_timeout_s, "attempt": attempt}},
    )


def close_round(store: Store, job: Job, now: float) -> dict | None:
    """Aggregate the current round exactly once, under a renewed lease.

    If this invocation dies after taking the lease, another takes over once the
    lease expires (about 15 s); the model is written under the lease's owner and
    only the owner's conditional commit advances the round, so the round
    completes once whatever overlaps.
    """
    lease = Lease(store, job.id, job.round)
    leased = lease.acquire(now)
    if leased is None:
        return None
    try:
        committed = _aggregate(store, Job.of(leased), lease.owner, now)
    except BaseException:
        lease.release()
        raise
    lease.stop()
    if committed is not None:
        store.drop_uncommitted_models(job.id, job.round, lease.owner)
    return committed


def _aggregate(store: Store, leased: Job, owner: str, now: float) -> dict | None:
    """Combine the round's updates, store the model, advance the job: the lease holder's work."""
    job_id, rnd, cfg = leased.id, leased.round, leased.config
    picked = set(leased.picked)
    docs = [d for d in store.load_updates(job_id, rnd) if d["client_id"] in picked]
    started = time.perf_counter()
    base_round = leased.doc.get("model_round")
    blob, state_blob = store.get_model_and_state(job_id, base_round, leased.model_owner(base_round))
    current = wcodec.decode(blob) if blob is not None else None
    state = wcodec.decode(state_blob) if state_blob is not None else {}
    updates = [(wcodec.decode(d["weights"]), int(d["num_examples"])) for d in docs]
    new_weights, new_state = leased.strategy.aggregate(current, updates, state, cfg.num_clients)
    store.put_model(job_id, rnd, owner, wcodec.encode(new_weights), wcodec.encode(new_state) if new_state else None)
    entry = {**history_entry(docs, leased.doc, now, time.perf_counter() - started), "model_owner": owner}
    fields: dict = {"model_round": rnd, "model_owner": owner, "attempt": 0}
    reached = cfg.target_accuracy > 0 and entry["metrics"].get("eval_accuracy", 0.0) >= cfg.target_accuracy
    if rnd >= cfg.rounds or reached:
        fields.update({"state": "done", "finished_at": time.time(), "picked": [],
                       "stopped_because": "target accuracy reached" if reached else "all rounds done"})
    else:
        candidates = live_clients(store, leased, now) or store.client_ids(job_id)
        fields.update(round_fields(pick_clients(candidates, cfg, rnd + 1), rnd + 1, cfg, time.time()))
    return store.transition(
        job_id, {"round": rnd, "lease_owner": owner},
        {"$set": fields, "$push": {"history": entry}, "$unset": {"lease_owner": "", "lease_until": ""}},
    )


def _weight(doc: dict, key: str) -> float:
    metrics = doc.get("metrics") or {}
    if key.startswith("eval_") and key != "eval_examples" and "eval_examples" in metrics:
        return float(metrics["eval_examples"])
    return float(doc["num_examples"])


def history_entry(docs: list[dict], job: dict, now: float, agg_s: float) -> dict:
    """What status shows for a closed round: who, how much data, what they reported."""
    examples = sum(int(d["num_examples"]) for d in docs)
    metrics: dict[str, float] = {}
    keys = {k for d in docs for k in (d.get("metrics") or {})}
    for key in sorted(keys):
        # evaluation metrics weigh by the examples evaluated, the rest by those trained on
        pairs = [(float(d["metrics"][key]), _weight(d, key)) for d in docs if key in (d.get("metrics") or {})]
        weight = sum(n for _, n in pairs)
        if weight:
            metrics[key] = sum(v * n for v, n in pairs) / weight
    return {
        "round": job["round"],
        "clients": len(docs),
        "picked": len(job["picked"]),
        "client_ids": sorted(d["client_id"] for d in docs),
        "examples": examples,
        "metrics": metrics,
        "seconds": round(now - job["round_started_at"], 3),
        "aggregation_seconds": round(agg_s, 4),
        "closed": "complete" if len(docs) >= len(job["picked"]) else "deadline",
        "closed_at": now,
    }
