"""The round lifecycle without a server process: start, pick, close, aggregate.

Any invocation may move a job forward (a subscribe, a poll, the ``aggregate``
action, a scheduled event). Each move is a conditional update that names the
state it expects, so concurrent invocations cannot move a job twice.
"""

from __future__ import annotations

import logging
import secrets
import time

import numpy as np

from flcore import strategies
from flcore import weights as wcodec
from flcore.config import JobConfig, config_from_doc
from flcore.store import Store

log = logging.getLogger(__name__)

# How long one invocation may hold the right to aggregate a round.
LEASE_S = 60.0


def pick_clients(candidates: list[str], cfg: JobConfig, rnd: int, attempt: int = 0) -> list[str]:
    """Seeded random choice, so a job's schedule is reproducible from its seed."""
    k = min(cfg.clients_per_round, len(candidates))
    rng = np.random.default_rng([cfg.seed, rnd, attempt])
    chosen = rng.choice(len(candidates), size=k, replace=False)
    return [candidates[i] for i in sorted(chosen)]


def live_clients(store: Store, job: dict, cfg: JobConfig, now: float) -> list[str]:
    """Clients heard from (a poll or a submit) within ``client_timeout_s``; the rest have gone."""
    return store.client_ids(job["_id"], seen_since=now - cfg.client_timeout_s)


def round_fields(picked: list[str], rnd: int, cfg: JobConfig, now: float) -> dict:
    return {"round": rnd, "picked": picked, "round_started_at": now, "deadline": now + cfg.round_timeout_s}


def maybe_start(store: Store, job: dict, now: float) -> dict:
    """Start round 1 once enough clients (``min_clients``, default all) have subscribed."""
    if job["state"] != "waiting":
        return job
    cfg = config_from_doc(job["config"])
    clients = store.client_ids(job["_id"])
    if len(clients) < cfg.clients_to_start:
        return job
    picked = pick_clients(clients, cfg, 1)
    moved = store.transition(
        job["_id"], {"state": "waiting"},
        {"$set": {"state": "running", "started_at": now, **round_fields(picked, 1, cfg, now)}},
    )
    return moved or store.get_job(job["_id"]) or job


def ready_to_close(store: Store, job: dict, now: float) -> tuple[bool, list[str]]:
    """Whether the current round can be aggregated, and who submitted to it."""
    submitted = store.submitted_clients(job["_id"], job["round"])
    cfg = config_from_doc(job["config"])
    picked = set(job["picked"])
    arrived = [c for c in submitted if c in picked]
    if len(arrived) >= len(picked):
        return True, arrived
    return now >= job["deadline"] and len(arrived) >= cfg.min_updates_needed, arrived


def advance(store: Store, job: dict, now: float | None = None) -> dict:
    """Move a job as far as it can go right now; cheap when there is nothing to do."""
    now = time.time() if now is None else now
    job = maybe_start(store, job, now)
    if job["state"] != "running":
        return job
    ready, arrived = ready_to_close(store, job, now)
    if ready:
        return close_round(store, job, now) or store.get_job(job["_id"]) or job
    if now >= job["deadline"]:
        return repick(store, job, arrived, now) or job
    return job


def repick(store: Store, job: dict, arrived: list[str], now: float) -> dict | None:
    """A round that missed its deadline with too few updates gets fresh clients and time."""
    cfg = config_from_doc(job["config"])
    attempt = int(job.get("attempt", 0)) + 1
    others = [c for c in live_clients(store, job, cfg, now) if c not in arrived]
    fresh = pick_clients(others, cfg, job["round"], attempt) if others else []
    picked = arrived + fresh[: max(0, cfg.clients_per_round - len(arrived))]
    log.info("job %s round %s missed its deadline; re-picked %d clients", job["_id"], job["round"], len(picked))
    return store.transition(
        job["_id"], {"state": "running", "round": job["round"], "deadline": job["deadline"]},
        {"$set": {"picked": picked, "deadline": now + cfg.round_timeout_s, "attempt": attempt}},
    )


def close_round(store: Store, job: dict, now: float) -> dict | None:
    """Aggregate the current round exactly once, under a lease with an expiry.

    If this invocation dies after taking the lease, another takes over once the
    lease expires; the model write is idempotent and only the lease holder can
    advance the round, so the round completes once.
    """
    rnd = job["round"]
    owner = secrets.token_hex(8)
    leased = store.transition(
        job["_id"],
        {"state": "running", "round": rnd, "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]},
        {"$set": {"lease_owner": owner, "lease_until": now + LEASE_S}},
    )
    if leased is None:
        return None
    try:
        return _aggregate(store, leased, owner, now)
    except BaseException:
        # Give the round back at once, so a retry need not wait for the lease to expire.
        # If the database is down this fails too, and the lease simply expires.
        try:
            store.transition(job["_id"], {"round": rnd, "lease_owner": owner},
                             {"$unset": {"lease_owner": "", "lease_until": ""}})
        except Exception:
            log.warning("could not release the lease of job %s round %s", job["_id"], rnd)
        raise


def _aggregate(store: Store, leased: dict, owner: str, now: float) -> dict | None:
    """FedAvg the round's updates, store the model, advance the job: the lease holder's work."""
    job_id, rnd = leased["_id"], leased["round"]
    cfg = config_from_doc(leased["config"])
    picked = set(leased["picked"])
    docs = [d for d in store.load_updates(job_id, rnd) if d["client_id"] in picked]
    started = time.perf_counter()
    blob, state_blob = store.get_model_and_state(job_id, leased.get("model_round"))
    current = wcodec.decode(blob) if blob is not None else None
    state = wcodec.decode(state_blob) if state_blob is not None else {}
    updates = [(wcodec.decode(d["weights"]), int(d["num_examples"])) for d in docs]
    new_weights, new_state = strategies.get(cfg).aggregate(current, updates, state)
    store.put_model(job_id, rnd, wcodec.encode(new_weights), wcodec.encode(new_state) if new_state else None)
    entry = history_entry(docs, leased, now, time.perf_counter() - started)
    fields: dict = {"model_round": rnd, "attempt": 0}
    reached = cfg.target_accuracy > 0 and entry["metrics"].get("eval_accuracy", 0.0) >= cfg.target_accuracy
    if rnd >= cfg.rounds or reached:
        fields.update({"state": "done", "finished_at": time.time(), "picked": [],
                       "stopped_because": "target accuracy reached" if reached else "all rounds done"})
    else:
        candidates = live_clients(store, leased, cfg, now) or store.client_ids(job_id)
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
