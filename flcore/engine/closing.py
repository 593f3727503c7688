"""Closing a round: aggregate its updates exactly once, under a lease, and commit what comes next.

If the invocation that holds the lease dies, another takes over once the lease
expires (about 15 s, :mod:`flcore.engine.lease`); the model is written under
the lease's owner and only the owner's conditional commit advances the round,
so a round completes once whatever overlaps.
"""

from __future__ import annotations

import logging
import time

from pymongo.errors import PyMongoError

from flcore.domain.config import with_changes
from flcore.domain.job import Job
from flcore.engine import lifecycle, private, rules
from flcore.engine.history import history_entry
from flcore.engine.lease import Lease
from flcore.engine.pacing import RECENT_ROUNDS
from flcore.shared import clock, encodings
from flcore.shared import weights as wcodec
from flcore.storage.jobs import ending
from flcore.storage.store import Store

log = logging.getLogger(__name__)


def close_round(store: Store, job: Job, now: float) -> dict | None:
    """Aggregate the current round exactly once; the committed job document, or None if this
    invocation did not commit (the lease was held, nothing to fold, stopped or taken over meanwhile)."""
    lease = Lease(store, job.id, job.round)
    leased = lease.acquire(now)
    if leased is None:
        return None
    try:
        committed = _aggregate(store, Job.of(leased), lease, now)
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


def _aggregate(store: Store, leased: Job, lease: Lease, now: float) -> dict | None:
    """Combine the round's updates, store the model, run the rules, advance the job: the lease holder's work.

    Everything the round changes on the job (its model, history, rule firings,
    settings changes, next round or end) goes in one conditional update that
    also requires the job to be still running, so a job stopped meanwhile keeps
    no trace of this aggregation. A holder that lost its lease stops before it
    writes anything more.
    """
    job_id, rnd, owner, mode = leased.id, leased.round, lease.owner, leased.mode
    started = time.perf_counter()
    strategy = leased.config_at(rnd).build_strategy()  # the settings this round ran with
    base_round = leased.doc.get("model_round")
    base = store.model_doc(job_id, base_round, leased.model_owner(base_round))
    # the global model is read only by the rules that use it; an O(model) state is read when kept
    needed = (
        strategy.needs_current
        or mode.needs_current_model
        or encodings.needs_base(leased.config.update_encoding)
        or leased.config.dp is not None  # the function clips what exceeds the bound where it holds the base
    )
    current_blob = store.model_part(base, "weights") if needed else None
    current = wcodec.decode(current_blob) if current_blob is not None else None
    state_blob = store.model_part(base, "state")
    state = wcodec.decode(state_blob) if state_blob is not None else {}
    docs, updates, extra = mode.collect(store, leased, current, now)
    if not docs:  # FedBuff: the buffer is not full once updates a committed version had taken are set aside
        return None
    record = None
    if leased.config.dp is not None and leased.config.secure_aggregation is None:  # central DP: the noise here
        new_weights, new_state, record = private.aggregate(strategy, leased, current, updates, docs, state)
    else:
        new_weights, new_state = strategy.aggregate(current, updates, state, leased.config.num_clients)
        if leased.config.dp is not None:  # distributed DP: each device added its share of the noise
            record = private.distributed_record(leased, extra["secure"])
    if lease.lost:  # taken over while folding: the new holder writes this round
        return None
    shared = strategy.client_tensors(new_state) if strategy.shares_state else None
    store.put_model(
        job_id,
        rnd,
        owner,
        wcodec.encode(new_weights),
        wcodec.encode(new_state) if new_state else None,
        wcodec.encode(shared) if shared else None,
    )
    entry = {**history_entry(docs, leased.doc, now, time.perf_counter() - started), **extra, "model_owner": owner}
    if record is not None:
        entry["privacy"] = record
    best = rules.best_after(leased.doc.get("best"), entry)
    firing = rules.evaluate(
        leased.doc.get("rules", []), leased.doc.get("rules_fired", []), rules.round_context(entry, best), leased.config
    )
    if firing.records:
        entry["rules"] = firing.records
    committed = store.commit_round(job_id, rnd, owner, _commit_update(store, leased, entry, best, firing, now))
    if committed is not None:
        mode.committed(store, Job.of(committed))
        _drop_dead_uploads(store, Job.of(committed), now)
        if firing.starts:
            lifecycle.start_pending(store, job_id, firing.starts, clock.now())
        total = sum(int(d["num_examples"]) for d in docs) or 1
        credit = mode.missed(leased)
        credit.update(
            {d["client_id"]: {"rounds_trained": 1, "contribution": int(d["num_examples"]) / total} for d in docs}
        )
        lifecycle.credit_devices(store, credit)
    return committed


def _drop_dead_uploads(store: Store, job: Job, now: float) -> None:
    """Delete unfinished uploads that can no longer count: any once the job ended, a closed round's
    (sync), or one untouched for ``round_timeout_s`` (FedBuff: its slot has expired)."""
    try:
        if job.finished:
            store.blobs.drop_stale_uploads(job.id, float("inf"))
        else:
            store.blobs.drop_stale_uploads(job.id, now - job.config.round_timeout_s, job.mode.upload_round(job))
    except PyMongoError as exc:  # the round is committed; what is left is deleted next time
        log.warning("unfinished uploads of job %s not deleted: %s", job.id, exc)


def _commit_update(store: Store, leased: Job, entry: dict, best: dict | None, firing: rules.Firing, now: float) -> dict:
    """The one update that closes a round: what it produced and what comes next."""
    rnd = leased.round
    cfg = with_changes(leased.config, firing.changes) if firing.changes else leased.config
    fields: dict = {
        "model_round": rnd,
        "model_owner": entry["model_owner"],
        "attempt": 0,
        "best": best,
        "latest": {"round": rnd, **entry["metrics"]},
    }
    push: dict = {"history": entry, "recent_round_s": {"$each": [entry["seconds"]], "$slice": -RECENT_ROUNDS}}
    if firing.changes:
        push["changes"] = {"round": rnd + 1, "set": firing.changes, "at": now, "by": "rule"}
    if firing.fired:
        push["rules_fired"] = {"$each": firing.fired}
    if firing.starts:
        fields["starts_pending"] = firing.starts
    reached = cfg.target_accuracy > 0 and entry["metrics"].get("eval_accuracy", 0.0) >= cfg.target_accuracy
    spent = None
    if "privacy" in entry:
        fields["privacy"] = private.job_fields(leased, entry["privacy"])
        spent = private.budget_ends(leased, entry["privacy"], cfg.clients_per_round)
    if firing.stop:
        fields.update(ending("stopped", f"rule: {firing.stop}", clock.now()))
    elif rnd >= cfg.rounds or reached:
        fields.update(ending("done", "target accuracy reached" if reached else "all rounds done", clock.now()))
    elif spent:
        fields.update(ending("done", spent, clock.now()))
    else:
        fields.update(leased.mode.next_round(store, leased, entry, cfg, now))
    return {"$set": fields, "$push": push}
