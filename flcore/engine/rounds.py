"""The round lifecycle without a server process: start, pick, close, aggregate.

Any invocation may move a job forward (a subscribe, a poll, the ``aggregate``
action, a scheduled event). Each move is a conditional update that names the
state it expects, so concurrent invocations cannot move a job twice.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from pymongo.errors import PyMongoError

from flcore.engine import fedbuff as buffered
from flcore.domain import filters
from flcore.engine import rules
from flcore.engine import selection
from flcore.shared import weights as wcodec
from flcore.shared.aggregation import Updates
from flcore.domain.config import JobConfig, with_changes
from flcore.domain.devices import view
from flcore.domain.job import Job
from flcore.engine.lease import Lease
from flcore.storage.store import Store
from flcore.storage.stored_updates import StoredUpdates

log = logging.getLogger(__name__)


def pick_clients(candidates: list[str], cfg: JobConfig, rnd: int, attempt: int = 0) -> list[str]:
    """Seeded random choice, so a job's schedule is reproducible from its seed."""
    k = min(cfg.clients_per_round, len(candidates))
    rng = np.random.default_rng([cfg.seed, rnd, attempt])
    chosen = rng.choice(len(candidates), size=k, replace=False)
    return [candidates[i] for i in sorted(chosen)]


def choose(store: Store, job: Job, candidates: list[str], cfg: JobConfig, rnd: int, attempt: int = 0,
           closing: dict | None = None) -> list[str]:
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
    checked at every pick, not only when a device joins.
    """
    criteria = job.doc.get("criteria")
    if not criteria:
        return [c["_id"] for c in clients]
    devices = {d["_id"]: view(d) for d in store.get_devices({c["device_id"] for c in clients if "device_id" in c})}
    return [c["_id"] for c in clients
            if c.get("device_id") in devices and filters.matches(criteria, devices[c["device_id"]])]


# rounds whose durations say how long the next one should take
RECENT_ROUNDS = 5


def poll_interval(job: Job, shortest: float) -> float:
    """How often a waiting client asks: ``shortest``, or slower for a fleet so large that its polls
    would exceed the job's ``max_poll_rate`` (1,000 clients at 100 a second: every 10 s). Never
    longer than half of ``client_timeout_s``, so a waiting client is never taken for gone."""
    cfg = job.config
    return round(min(max(shortest, cfg.num_clients / cfg.max_poll_rate), cfg.client_timeout_s / 2), 2)


def wait_hint(job: Job, now: float, shortest: float) -> float:
    """Seconds a waiting client should sleep: until one poll interval before the round should end,
    going by the median of the job's recent rounds, or one interval without history or once that
    time has come.

    Clients not picked then ask about twice a round instead of every interval, and a client the
    next round picks still hears of it within about one interval (``poll_interval``).
    """
    interval = poll_interval(job, shortest)
    recent = job.doc.get("recent_round_s") or []
    if job.state != "running" or not recent or job.config.mode != "sync":
        return interval
    expected_end = job.doc["round_started_at"] + float(np.median(recent))
    return round(min(max(interval, expected_end - interval - now), job.config.client_timeout_s / 2), 2)


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
    # every poll of a waiting job comes here: the job's own counter of places handed out (never
    # fewer than the clients there are) spares counting them, a scan, until there may be enough
    if job.doc.get("places_taken", cfg.num_clients) < cfg.clients_to_start \
            or store.count_clients(job.id, taking_part=True) < cfg.clients_to_start:
        return job
    picked = choose(store, job, eligible(store, job, store.client_docs(job.id)), cfg, 1) if cfg.mode == "sync" else []
    moved = store.transition(
        job.id, {"state": "waiting"},
        {"$set": {"state": "running", "started_at": now, **round_fields(picked, 1, cfg, now)}},
    )
    return _reloaded(store, job, moved)


def ready_to_close(store: Store, job: Job, now: float) -> tuple[bool, list[str]]:
    """Whether the current round can be aggregated, and who submitted to it."""
    picked = set(job.picked)
    arrived = [c for c in store.submitted_clients(job.id, job.round) if c in picked]
    if picked and len(arrived) >= len(picked):
        return True, arrived
    return now >= job.doc["deadline"] and len(arrived) >= max(1, job.config.min_updates_needed), arrived


def advance(store: Store, job: Job, now: float | None = None) -> Job:
    """Move a job as far as it can go right now; cheap when there is nothing to do."""
    now = time.time() if now is None else now
    job = maybe_start(store, job, now)
    if job.state != "running":
        return job
    if job.config.mode == "async":
        return _advance_async(store, job, now)
    ready, arrived = ready_to_close(store, job, now)
    if ready:
        return _reloaded(store, job, close_round(store, job, now))
    if now >= job.doc["deadline"]:
        moved = repick(store, job, arrived, now)
        return Job.of(moved) if moved else job
    return job


def _advance_async(store: Store, job: Job, now: float, most: int = 8) -> Job:
    """Give back expired slots, then close versions while full buffers wait (a burst may fill several)."""
    buffered.expire_slots(store, job, now)
    for _ in range(most):
        if job.state != "running" or not buffered.ready(store, job, now):
            break
        closed = close_round(store, job, now)
        if closed is None:  # another invocation holds the lease: it will carry on
            break
        job = Job.of(closed)
    return job


def repick(store: Store, job: Job, arrived: list[str], now: float) -> dict | None:
    """A round that missed its deadline with too few updates gets fresh clients and time."""
    cfg = job.config
    attempt = int(job.doc.get("attempt", 0)) + 1
    others = [c for c in live_clients(store, job, now) if c not in arrived]
    fresh = choose(store, job, others, cfg, job.round, attempt) if others else []
    picked = arrived + fresh[: max(0, cfg.clients_per_round - len(arrived))]
    log.info("job %s round %s missed its deadline; re-picked %d clients", job.id, job.round, len(picked))
    moved = store.transition(
        job.id, {"state": "running", "round": job.round, "deadline": job.doc["deadline"]},
        {"$set": {"picked": picked, "deadline": now + cfg.round_timeout_s, "attempt": attempt}},
    )
    if moved is not None:
        _count(store, {c: {"deadlines_missed": 1} for c in job.picked if c not in arrived})
    return moved


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
    return store.transition(job.id, {"state": "running", "round": job.round, "picked": job.picked},
                            {"$set": {"picked": picked}})


def _count(store: Store, per_client: dict[str, dict[str, float]]) -> None:
    """Add to the statistics of the devices behind these clients; best effort, after a commit."""
    try:
        devices = store.device_ids_of(per_client)
        store.count_device_stats({devices[c]: inc for c, inc in per_client.items() if c in devices})
    except PyMongoError as exc:  # the round is committed; a lost count must not fail the request
        log.warning("device statistics not updated: %s", exc)


def open_job(store: Store, job_id: str, now: float) -> dict | None:
    """``created`` -> ``waiting`` (open for devices); None if the job was not ``created``."""
    return store.transition(job_id, {"state": "created"}, {"$set": {"state": "waiting", "opened_at": now}})


def start_pending(store: Store, job_id: str, starts: list[str], now: float) -> None:
    """Open the jobs a rule started, then clear the note; idempotent, so a retry after a crash is safe."""
    for other in starts:
        if open_job(store, other, now) is None:
            log.info("rule of job %s: job %s was not waiting to start", job_id, other)
    store.clear_pending_starts(job_id)


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
    if committed is not None:
        lease.stop()
        store.drop_uncommitted_models(job.id, job.round, lease.owner)
    else:  # nothing to fold after all, stopped meanwhile, or another aggregator won: nobody reads this model
        lease.release()
        store.drop_model(job.id, job.round, lease.owner)
    return committed


def _aggregate(store: Store, leased: Job, owner: str, now: float) -> dict | None:
    """Combine the round's updates, store the model, run the rules, advance the job: the lease holder's work.

    Everything the round changes on the job (its model, history, rule firings,
    settings changes, next round or end) goes in one conditional update that
    also requires the job to be still running, so a job stopped meanwhile keeps
    no trace of this aggregation.
    """
    job_id, rnd = leased.id, leased.round
    started = time.perf_counter()
    strategy = leased.config_at(rnd).build_strategy()  # the settings this round ran with
    base_round = leased.doc.get("model_round")
    base = store.model_doc(job_id, base_round, leased.model_owner(base_round))
    # the global model is read only by the rules that use it; an O(model) state is read when kept
    needed = strategy.needs_current or leased.config.mode == "async"
    current_blob = store.model_part(base, "weights") if needed else None
    current = wcodec.decode(current_blob) if current_blob is not None else None
    state_blob = store.model_part(base, "state")
    state = wcodec.decode(state_blob) if state_blob is not None else {}
    docs, updates, extra = _round_updates(store, leased, current, now)
    if not docs:  # async: the buffer is not full once updates a committed version had taken are set aside
        return None
    new_weights, new_state = strategy.aggregate(current, updates, state, leased.config.num_clients)
    shared = strategy.client_tensors(new_state) if strategy.shares_state else None
    store.put_model(job_id, rnd, owner, wcodec.encode(new_weights), wcodec.encode(new_state) if new_state else None,
                    wcodec.encode(shared) if shared else None)
    entry = {**history_entry(docs, leased.doc, now, time.perf_counter() - started), **extra, "model_owner": owner}
    best = rules.best_after(leased.doc.get("best"), entry)
    firing = rules.evaluate(leased.doc.get("rules", []), leased.doc.get("rules_fired", []),
                            rules.round_context(entry, best), leased.config)
    if firing.records:
        entry["rules"] = firing.records
    update = _commit_update(store, leased, entry, best, firing, owner, now)
    committed = store.transition(job_id, {"state": "running", "round": rnd, "lease_owner": owner}, update)
    if committed is not None:
        if leased.config.mode == "async":
            buffered.finish_marking(store, Job.of(committed))
        _drop_dead_uploads(store, Job.of(committed), now)
        if firing.starts:
            start_pending(store, job_id, firing.starts, time.time())
        total = sum(int(d["num_examples"]) for d in docs) or 1
        # in sync mode a picked client that sent nothing missed the deadline; async has no deadline to miss
        credit = {c: {"deadlines_missed": 1} for c in leased.picked} if leased.config.mode == "sync" else {}
        credit.update({d["client_id"]: {"rounds_trained": 1, "contribution": int(d["num_examples"]) / total}
                       for d in docs})
        _count(store, credit)
    return committed


def _drop_dead_uploads(store: Store, job: Job, now: float) -> None:
    """Delete unfinished uploads that can no longer count: any once the job ended, a closed round's
    (sync), or one untouched for ``round_timeout_s`` (async: its slot has expired)."""
    try:
        if job.finished:
            store.blobs.drop_stale_uploads(job.id, float("inf"))
        else:
            store.blobs.drop_stale_uploads(job.id, now - job.config.round_timeout_s,
                                           job.round if job.config.mode == "sync" else None)
    except PyMongoError as exc:  # the round is committed; what is left is deleted next time
        log.warning("unfinished uploads of job %s not deleted: %s", job.id, exc)


def _round_updates(store: Store, leased: Job, current, now: float) -> tuple[list[dict], Updates, dict]:
    """The updates this aggregation folds: the picked clients' for the round (sync), or the buffer (async).

    Returns the update documents, the stream of ``(weights, examples)`` the
    strategy folds (read from the database one at a time as it folds them),
    and extra fields for the history entry.
    """
    if leased.config.mode == "async":
        docs, updates, info = buffered.collect(store, leased, current, now)
        return docs, updates, {**info, "picked": len(leased.picked)}
    picked = set(leased.picked)
    docs = [d for d in store.load_updates(leased.id, leased.round) if d["client_id"] in picked]
    return docs, StoredUpdates(store, docs), {}


def _commit_update(store: Store, leased: Job, entry: dict, best: dict | None, firing: rules.Firing,
                   owner: str, now: float) -> dict:
    """The one update that closes a round: what it produced and what comes next."""
    rnd = leased.round
    cfg = with_changes(leased.config, firing.changes) if firing.changes else leased.config
    fields: dict = {"model_round": rnd, "model_owner": owner, "attempt": 0, "best": best,
                    "latest": {"round": rnd, **entry["metrics"]}}
    push: dict = {"history": entry, "recent_round_s": {"$each": [entry["seconds"]], "$slice": -RECENT_ROUNDS}}
    if firing.changes:
        push["changes"] = {"round": rnd + 1, "set": firing.changes, "at": now, "by": "rule"}
    if firing.fired:
        push["rules_fired"] = {"$each": firing.fired}
    if firing.starts:
        fields["starts_pending"] = firing.starts
    reached = cfg.target_accuracy > 0 and entry["metrics"].get("eval_accuracy", 0.0) >= cfg.target_accuracy
    ending = {"finished_at": time.time(), "picked": [], "in_flight": {}}
    if firing.stop:
        fields.update(ending, state="stopped", stopped_because=f"rule: {firing.stop}")
    elif rnd >= cfg.rounds or reached:
        fields.update(ending, state="done",
                      stopped_because="target accuracy reached" if reached else "all rounds done")
    elif cfg.mode == "async":  # who trains now keeps training: only the version moves on
        fields.update(buffered.commit_fields(entry["taken"], rnd + 1, time.time(), cfg.round_timeout_s))
    else:
        picked = choose(store, leased, candidates(store, leased, now), cfg, rnd + 1, closing=entry)
        fields.update(round_fields(picked, rnd + 1, cfg, time.time()))
    return {"$set": fields, "$push": push, "$unset": {"lease_owner": "", "lease_until": ""}}


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
