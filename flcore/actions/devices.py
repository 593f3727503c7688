"""The device registry: register, describe, find jobs, join, leave; and the operator's view of it."""

from __future__ import annotations

import secrets

from flcore.actions.request import Request
from flcore.domain import data, filters, tokens
from flcore.domain.devices import holds_dataset, new_stats, parse_info, parse_labels, parse_name, view
from flcore.domain.job import Job
from flcore.engine.enrolment import enrol, reissue
from flcore.engine.retraining import on_data_change
from flcore.engine.rules import MAX_REASON, text
from flcore.errors import Conflict, Forbidden, Invalid, NotFound
from flcore.shared import clock
from flcore.storage.store import Store

MAX_OFFERS = 20
MAX_DEVICES = 1000


def register(req: Request) -> dict:
    """A new device identity: ``{"device_id", "token"}`` (the edge checks ``FL_ENROL_TOKEN`` when one is set);
    a retry with the same ``idempotency_key`` gets the same device and a fresh token."""
    key = tokens.idempotency_key(req.body.get("idempotency_key"))
    info = parse_info(req.body.get("info", {}))
    now = clock.now()
    held = req.store.device_by_key(key) if key else None
    if held is not None:
        return _reissue_device(req.store, held["_id"], now)
    device_id = "d-" + secrets.token_hex(6)
    token, token_hash = tokens.new_token(device_id)
    stored = req.store.add_device(
        {
            "_id": device_id,
            "token_hash": token_hash,
            "info": info,
            "stats": new_stats(),
            "registered_at": now,
            "last_seen": now,
            "jobs": [],
            "left_jobs": [],
            **({"idempotency_key": key} if key else {}),
        }
    )
    if stored["_id"] != device_id:  # a concurrent retry with the same key made it first
        return _reissue_device(req.store, stored["_id"], now)
    return {"device_id": device_id, "token": token}


def _reissue_device(store: Store, device_id: str, now: float) -> dict:
    """A fresh token for a device a retried register made before (the old one stops working)."""
    token, token_hash = tokens.new_token(device_id)
    store.set_device_token(device_id, token_hash, now)
    return {"device_id": device_id, "token": token}


def update_device(req: Request) -> dict:
    """Replace what a device reports about itself; a declared data set whose rows or schema changed is
    stamped ``changed_at``, and may set a done job retraining (``retrain_on_change``)."""
    device = req.device
    info = parse_info(req.body.get("info"))
    now = clock.now()
    changed = stamp_changes(device.get("info", {}), info, now)
    req.store.update_device(device["_id"], {"info": info, "last_seen": now})
    retraining = on_data_change(req.store, device, changed, now) if changed else []
    return {"device_id": device["_id"], "info": info, "changed": changed, "retraining": retraining}


def stamp_changes(old: dict, new: dict, now: float) -> list[str]:
    """The declared data sets of ``new`` whose rows or fingerprint differ from ``old``'s, stamped with
    ``changed_at`` (the function's time, not the device's); the others keep their stamp."""
    changed = []
    for name, entry in new.get("datasets", {}).items():
        before = old.get("datasets", {}).get(name)
        if not isinstance(entry, dict):
            continue
        entry.pop("changed_at", None)
        if isinstance(before, dict) and (before.get("rows"), before.get("fingerprint")) != (
            entry["rows"],
            entry.get("fingerprint"),
        ):
            entry["changed_at"] = now
            changed.append(name)
        elif isinstance(before, dict) and "changed_at" in before:
            entry["changed_at"] = before["changed_at"]
    return changed


def refusal(device: dict, job: Job) -> str | None:
    """Why this device may not join this job, or None if it may."""
    if device.get("disabled"):
        return "this device is disabled by the operator"
    if job.id in device.get("left_jobs", []):
        return f"this device left job {job.id}"
    task = job.config.task
    if task is not None:
        why = data.schema_refusal(task, job.doc.get("schema"), device.get("info", {}))
        if why is not None:
            return why
    elif not holds_dataset(device.get("info", {}), job.config.dataset):
        return f"this device does not report the data set {job.config.dataset!r} in info.datasets"
    criteria = job.doc.get("criteria")
    if criteria and not filters.matches(criteria, view(device)):
        return f"this device does not meet the criteria of job {job.id}"
    return None


def offers(req: Request) -> dict:
    """The jobs this device may join now, best first (priority, then age)."""
    device = req.device
    req.store.update_device(device["_id"], {"last_seen": clock.now()})
    out = []
    for doc in req.store.open_jobs(limit=200):
        job = Job.of(doc)
        if refusal(device, job) is None and _may_take_part(req.store, job, device):
            out.append(
                {
                    "job_id": job.id,
                    "name": doc.get("name"),
                    "tags": doc.get("tags", []),
                    "priority": doc.get("priority", 0),
                    "state": job.state,
                    "dataset": job.config.dataset,
                    "created_at": doc["created_at"],
                }
            )
            if len(out) >= MAX_OFFERS:
                break
    return {"jobs": out}


def _may_take_part(store: Store, job: Job, device: dict) -> bool:
    """A job with room for a newcomer, or one this device took part in that is retraining (its place is kept)."""
    if job.id in device.get("jobs", []):
        return job.doc.get("retrain_from") is not None
    return _has_room(store, job)


def _has_room(store: Store, job: Job) -> bool:
    return job.takes_clients and store.count_clients(job.id) < job.config.num_clients


def join(req: Request) -> dict:
    """Take part in a job as this device: a client identity, as ``subscribe`` gives; 403 if it does not fit."""
    device = req.device
    job = _with_schema(req.store, Job.load(req.store, req.job_id()), device)
    why = refusal(device, job)
    if why is not None:
        raise Forbidden(why)
    if job.id in device.get("jobs", []):
        return _rejoin(req.store, job, device)
    reply = enrol(req.store, job, device_id=device["_id"])
    req.store.update_device(device["_id"], {"last_seen": clock.now()}, push={"jobs": job.id})
    req.store.count_device_stats({device["_id"]: {"jobs_joined": 1}})
    return reply


def _with_schema(store: Store, job: Job, device: dict) -> Job:
    """A tabular job whose first device this is: the schema its declared columns give, fixed once
    (a concurrent first join may win; then the job as it set it)."""
    task = job.config.task
    if task is None or "schema" in job.doc or refusal(device, job) is not None:
        return job
    described = data.declared(device.get("info", {}), task.name)
    doc = store.fix_schema(job.id, data.schema_for(task, described)) or store.get_job(job.id)
    return Job.of(doc)


def _rejoin(store: Store, job: Job, device: dict) -> dict:
    """The same place in a job the device joined before, with a fresh token.

    A join whose answer was lost (a dropped connection) is retried by the device;
    it must get its own slot back, not a second one nor a refusal. Only the
    device can ask, so handing it a new token for its own client is safe; the old
    token stops working.
    """
    client = store.device_client(job.id, device["_id"])
    if client is None:  # the join is being recorded right now by a concurrent request
        raise Conflict(f"this device is joining job {job.id}; try again")
    return reissue(store, job, client, clock.now())


def leave(req: Request) -> dict:
    """A client reports it cannot take part (training failed, data missing): never picked again.

    If it was picked for the open round, a live client that was not takes its
    place in the same update, so the round does not wait for its deadline.
    """
    client = req.client
    if req.job_id(required=False) not in (None, client["job_id"]):
        raise Forbidden("a client can only leave its own job")
    reason = text(req.body.get("reason", "left"), "reason", MAX_REASON)
    now = clock.now()
    if not req.store.mark_left(client["_id"], reason, now):
        return {"left": True, "already": True}
    if client.get("device_id"):
        failure = {"job_id": client["job_id"], "reason": reason, "at": now}
        req.store.update_device(
            client["device_id"], {"last_seen": now, "last_failure": failure}, push={"left_jobs": client["job_id"]}
        )
        req.store.count_device_stats({client["device_id"]: {"failures_reported": 1}})
    job = Job.load(req.store, client["job_id"])
    if job.state == "running" and client["_id"] in job.picked:
        job.mode.leave(req.store, job, client["_id"], now)
    return {"left": True, "already": False}


def disable_device(req: Request) -> dict:
    """Stop offering jobs to a device and picking it (it keeps its identity and places); ``enable_device``
    undoes it."""
    return _set_disabled(req, True)


def enable_device(req: Request) -> dict:
    """Offer jobs to a disabled device again, and pick it again."""
    return _set_disabled(req, False)


def _set_disabled(req: Request, disabled: bool) -> dict:
    device = _named_device(req)
    req.store.update_device(device["_id"], {"disabled": disabled})
    return {"device_id": device["_id"], "disabled": disabled}


def label_device(req: Request) -> dict:
    """An operator's name and labels for a device, beside what it reports itself: ``labels`` replaces the
    operator's labels (criteria read them as ``labels.<key>``), ``name`` (null clears it) shows in lists."""
    device = _named_device(req)
    fields: dict = {}
    if "name" in req.body:
        fields["name"] = parse_name(req.body["name"])
    if "labels" in req.body:
        fields["labels"] = parse_labels(req.body["labels"], "labels")
    if not fields:
        raise Invalid("label_device sets name and/or labels")
    req.store.update_device(device["_id"], fields)
    return view({**device, **fields})


def revoke_device(req: Request) -> dict:
    """A device's token and its clients' tokens stop working at once (it must register again as a new
    device); its places in jobs are left, so rounds do not wait for it."""
    device = _named_device(req)
    now = clock.now()
    req.store.set_device_token(device["_id"], "", now)
    req.store.update_device(device["_id"], {"disabled": True, "revoked_at": now})
    left = req.store.revoke_device_clients(device["_id"], "the operator revoked this device", now)
    return {"device_id": device["_id"], "revoked": True, "clients_left": left}


def _named_device(req: Request) -> dict:
    device_id = req.body.get("device_id")
    if not isinstance(device_id, str) or not device_id.startswith("d-") or len(device_id) > 40:
        raise Invalid("device_id must name a device (d-...)")
    device = req.store.get_device(device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    return device


def devices(req: Request) -> dict:
    """Every device (or those that joined ``job_id``) with its info and statistics; with ``job_id``, also
    each one's figures in that job (``in_job``), where its totals are over all its jobs."""
    job_id = req.job_id(required=False)
    in_job = None
    if job_id is not None:
        in_job = _in_job(req.store, Job.load(req.store, job_id, history=True))
    docs = req.store.get_devices(None if in_job is None else set(in_job), limit=MAX_DEVICES)
    seen = req.store.last_seen_as_clients(d["_id"] for d in docs)
    out = [view({**d, "last_seen": max(d.get("last_seen") or 0.0, seen.get(d["_id"], 0.0))}) for d in docs]
    if in_job is not None:
        for d in out:
            d["in_job"] = in_job.get(d["device_id"])
    return {"devices": out}


def _in_job(store: Store, job: Job) -> dict[str, dict]:
    """Per device, its figures in one job: its client, the rounds its update counted in, whether it
    left (and why), and when it was last heard from there. Its keys are the job's devices."""
    counted: dict[str, int] = {}
    for entry in job.doc.get("history", []):
        for client_id in entry.get("client_ids", []):
            counted[client_id] = counted.get(client_id, 0) + 1
    out = {}
    for client in store.job_clients(job.id):
        if client.get("device_id"):
            out[client["device_id"]] = {
                "client_id": client["_id"],
                "rounds_counted": counted.get(client["_id"], 0),
                "left": client.get("left_reason") if client.get("left") else None,
                "last_seen": client.get("last_seen"),
            }
    return out
