"""Retraining when the devices' data changes: more rounds of a done tabular job, as a new model version.

A job whose data block says ``retrain_on_change: {rounds, min_interval_s, min_devices}``
watches the devices that took part in it. When at least ``min_devices`` of them
have reported their data set changed (rows added or removed, schema fingerprint
changed: ``update_device`` stamps ``changed_at``) since the job last finished, and
the previous retraining began at least ``min_interval_s`` ago, the job goes back
to ``waiting`` with ``rounds`` more rounds from its final model, recorded in
``retrains``. The transition expects the ending it saw, so concurrent reports
retrain it exactly once. Devices rejoin it through ``offers``.
"""

from __future__ import annotations

import logging

from flcore.domain.job import Job
from flcore.storage.store import Store

log = logging.getLogger(__name__)


def on_data_change(store: Store, device: dict, changed: list[str], now: float) -> list[str]:
    """Retrain the done jobs of this device over the data sets that changed, where enough changed; the
    ids of the jobs this report set retraining."""
    started = []
    for job_id in device.get("jobs", []):
        doc = store.get_job(job_id)
        if doc is None or doc["state"] != "done":
            continue
        job = Job.of(doc)
        task = job.config.task
        if task is None or task.retrain_on_change is None or task.name not in changed:
            continue
        if _due(store, job, task.retrain_on_change, now) and _retrain(store, job, task.retrain_on_change, now):
            started.append(job.id)
    return started


def _due(store: Store, job: Job, rule: dict, now: float) -> bool:
    if now - job.doc.get("retrained_at", float("-inf")) < rule["min_interval_s"]:
        return False
    members = store.job_device_ids(job.id)
    return store.count_changed_data(members, job.config.task.name, job.doc["finished_at"]) >= rule["min_devices"]


def _retrain(store: Store, job: Job, rule: dict, now: float) -> bool:
    last = job.round
    change = {"round": last + 1, "set": {"rounds": last + rule["rounds"]}, "at": now, "by": "retrain_on_change"}
    entry = {"at": now, "from_round": last, "rounds": rule["rounds"], "reason": "devices reported changed data"}
    done = store.retrain(job.id, job.doc["finished_at"], change, entry, now) is not None
    if done:
        log.info("job %s: retraining for %d rounds from round %d (data changed)", job.id, rule["rounds"], last)
    return done
