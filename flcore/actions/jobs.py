"""The operator's job control plane: create, start, stop, change and list jobs.

Every action here needs the operator token, and every change to a job is one
conditional update naming the state it expects, so it is safe against rounds
closing (and other operators) at the same moment.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

from flcore.actions.request import MAX_ROUND, Request
from flcore.domain import filters
from flcore.domain.config import DERIVED, SETTINGS, parse_changes, parse_config, strategy_settings
from flcore.domain.job import Job
from flcore.domain.metrics import metrics_of
from flcore.engine import rules
from flcore.errors import Conflict, DomainError, Invalid, NotFound
from flcore.shared import clock
from flcore.shared import weights as wcodec
from flcore.storage.jobs import STATES

# what create_job takes beside the job's settings
JOB_FIELDS = ("weights", "name", "tags", "criteria", "rules", "priority", "start", "public_predict")
CRITERIA_FIELDS = ("info.", "stats.", "labels.", "name")
MAX_TAGS = 20
MAX_PAGE = 100
UPDATE_TRIES = 10
UPDATE_WAIT_S = 0.2


def create_job(req: Request) -> dict:
    """A new job from its settings, name, tags, criteria, rules and priority; ``start: false`` keeps it ``created``."""
    body = req.body
    cfg = parse_config(body, extra=JOB_FIELDS)
    start, public = body.get("start", True), body.get("public_predict", False)
    if not isinstance(start, bool) or not isinstance(public, bool):
        raise Invalid("start and public_predict must be true or false")
    meta = {
        "name": rules.text(body["name"], "name", 100) if body.get("name") is not None else None,
        "tags": _tags(body.get("tags")),
        "priority": req.integer("priority", -1_000_000, 1_000_000, required=False) or 0,
        "criteria": filters.check(body["criteria"], CRITERIA_FIELDS, "criteria") if body.get("criteria") else None,
        "rules": rules.parse_rules(body.get("rules"), cfg),
        "public_predict": public,
    }
    checked = wcodec.parse_update(body["weights"], cfg.model_def) if body.get("weights") is not None else None
    job_id = "job-" + secrets.token_hex(6)
    now = clock.now()
    if checked is not None:
        req.store.put_model(job_id, 0, "init", checked.blob)  # written first: a job never exists without its model
    state = "waiting" if start else "created"
    req.store.create_job(
        {
            "_id": job_id,
            "created_at": now,
            "config": cfg.to_dict(),
            "state": state,
            "round": 0,
            "picked": [],
            "model_round": 0 if checked is not None else None,
            "model_owner": "init" if checked is not None else None,
            "history": [],
            "changes": [],
            "rules_fired": [],
            **meta,
            **({"opened_at": now} if start else {}),
        }
    )
    return {"job_id": job_id, "state": state, "config": cfg.to_dict()}


CLONED = ("name", "tags", "criteria", "rules", "priority", "public_predict")  # what a clone takes beside settings


def clone_job(req: Request) -> dict:
    """A new job from another's settings (with every change it made since) and its name, tags, criteria
    and rules; ``set`` overrides settings, ``name`` the name, ``start: false`` keeps it ``created``."""
    source = Job.load(req.store, req.job_id())
    overrides = req.body.get("set") or {}
    if not isinstance(overrides, dict):
        raise Invalid('set must be an object of settings to override, e.g. {"rounds": 20}')
    settings = source.config.to_dict()
    if settings.get("data"):  # what the statistics step derived is made again for the new job
        settings["data"] = {k: v for k, v in settings["data"].items() if k not in DERIVED}
    if (settings.get("dp") or {}).get("on_target") == "derive":  # noise derived again for the new rounds
        settings["dp"] = {k: v for k, v in settings["dp"].items() if k != "noise_multiplier"}
    body = {
        **settings,
        **{k: source.doc[k] for k in CLONED if source.doc.get(k) is not None},
        **overrides,
        **{k: req.body[k] for k in ("name", "start") if k in req.body},
    }
    made = create_job(replace(req, body=body))
    req.store.set_job_fields(made["job_id"], {"cloned_from": source.id})
    return {**made, "cloned_from": source.id}


def delete_job(req: Request) -> dict:
    """Delete a finished (done or stopped) job with its updates, clients and models; ``keep_model: true``
    keeps its final model and its document (archived), so it still answers ``get_model`` and ``predict``."""
    keep = req.body.get("keep_model", False)
    if not isinstance(keep, bool):
        raise Invalid("keep_model must be true or false")
    job = Job.load(req.store, req.job_id())
    if not job.finished:
        raise Conflict(f"job {job.id} is {job.state}: stop it first (only a done or stopped job can be deleted)")
    final = job.doc.get("model_round")
    kept = (final, job.model_owner(final)) if keep and final is not None else None
    store = req.store
    if not keep and not store.delete_job_doc(job.id):
        raise Conflict(f"job {job.id} changed while being deleted; try again")
    counts = {
        "updates": store.drop_job_updates(job.id),
        "clients": store.drop_job_clients(job.id),
        "models": store.drop_job_models(job.id, keep=kept),
    }
    store.drop_messages(job.id)
    store.blobs.drop_stale_uploads(job.id, float("inf"))
    if keep:
        store.archive_job(job.id, True, clock.now())
    return {"job_id": job.id, "deleted": counts, "kept_model_round": kept[0] if kept else None}


def archive_job(req: Request) -> dict:
    """Hide a finished job from the default job list (``archived: false`` shows it again)."""
    archived = req.body.get("archived", True)
    if not isinstance(archived, bool):
        raise Invalid("archived must be true or false")
    job = Job.load(req.store, req.job_id())
    if req.store.archive_job(job.id, archived, clock.now()) is None:
        raise Conflict(f"job {job.id} is {job.state}: only a done or stopped job can be archived")
    return {"job_id": job.id, "archived": archived}


def start_training(req: Request) -> dict:
    """The first action of this API, kept: ``create_job`` with the job started."""
    if "start" in req.body:
        raise Invalid("start_training always starts the job; use create_job with start: false")
    return create_job(req)


def _tags(raw: object) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TAGS:
        raise Invalid(f"tags must be a list of at most {MAX_TAGS} strings")
    return [rules.text(tag, "each tag", 40) for tag in raw]


def start_job(req: Request) -> dict:
    """``created`` -> ``waiting``: the job now takes devices."""
    job = Job.load(req.store, req.job_id())
    if req.store.open_job(job.id, clock.now()) is None:
        raise Conflict(f"job {job.id} is {job.state}; only a created job can be started")
    return {"job_id": job.id, "state": "waiting"}


def stop_job(req: Request) -> dict:
    """Any unfinished job -> ``stopped``, at once; an aggregation under way then cannot commit."""
    reason = rules.text(req.body.get("reason", "stopped by the operator"), "reason", rules.MAX_REASON)
    job = Job.load(req.store, req.job_id())
    stopped = req.store.stop_job(job.id, reason, clock.now())
    if stopped is None:
        raise Conflict(f"job {job.id} has already finished ({job.state})")
    return {"job_id": job.id, "state": "stopped", "round": stopped["round"], "stopped_because": reason}


def update_job(req: Request) -> dict:
    """Change a job's settings from its next round on (from round 1 if none has started)."""
    job_id = req.job_id()
    for _ in range(UPDATE_TRIES):
        job = Job.load(req.store, job_id)
        if job.finished:
            raise Conflict(f"job {job.id} has finished ({job.state}); nothing to change")
        changes = parse_changes(job.config, req.body.get("set"))
        from_round = job.round + 1 if job.state == "running" else 1
        if job.state == "running" and changes.get("rounds", job.round) < job.round:
            raise Invalid(
                f"job {job.id} is in round {job.round}: rounds must be at least {job.round} "
                f"(it ends after the round under way at {job.round})"
            )
        change = {"round": from_round, "set": changes, "at": clock.now(), "by": req.caller.name or "operator"}
        # The round and state as read, and no aggregation under way: the closing of a
        # round sets up the next one from the settings it read, so it must see this change.
        now = clock.now()
        moved = req.store.change_settings(job.id, job.state, job.round, change, now)
        if moved is not None:
            return {
                "job_id": job.id,
                "from_round": from_round,
                "set": changes,
                "config": Job.of(moved).config.to_dict(),
            }
        time.sleep(UPDATE_WAIT_S)
    raise Conflict(f"job {job_id} is closing a round; try again")


def report(req: Request) -> dict:
    """The operator's own measurements of a closed round (test-set accuracy), shown beside the clients'."""
    job = Job.load(req.store, req.job_id(), history=True)
    rnd = req.integer("round", 0, MAX_ROUND)
    if rnd not in {h["round"] for h in job.doc.get("history", [])}:
        raise NotFound(f"round {rnd} of job {job.id} has not closed")
    metrics = metrics_of(req.body.get("metrics"))
    if not metrics:
        raise Invalid('metrics must name at least one measurement, e.g. {"test_accuracy": 0.98}')
    req.store.record_report(job.id, rnd, metrics)
    return {"job_id": job.id, "round": rnd, "reported": metrics}


def list_jobs(req: Request) -> dict:
    """Jobs newest first, ``limit`` a page, ``next`` the cursor for the page after (null at the end)."""
    body = req.body
    query: dict = {}
    if body.get("state") is not None:
        if body["state"] not in STATES:
            raise Invalid(f"state must be one of {list(STATES)}")
        query["state"] = body["state"]
    if body.get("tag") is not None:
        query["tags"] = rules.text(body["tag"], "tag", 40)
    limit = req.integer("limit", 1, MAX_PAGE, required=False) or 20
    archived = body.get("archived", False)  # false: hide archived jobs; true: only those; "all": both
    if archived not in (True, False, "all"):
        raise Invalid('archived must be true, false or "all"')
    if archived != "all":
        query["archived_at"] = {"$exists": archived}
    if body.get("after") is not None:
        created, job_id = _cursor(body["after"])
        query["$or"] = [{"created_at": {"$lt": created}}, {"created_at": created, "_id": {"$lt": job_id}}]
    docs = req.store.list_jobs(query, limit + 1)
    page = docs[:limit]
    nxt = f"{page[-1]['created_at']!r}/{page[-1]['_id']}" if len(docs) > limit else None
    return {"jobs": [_summary(req, Job.of(doc)) for doc in page], "next": nxt}


def _cursor(raw: object) -> tuple[float, str]:
    try:
        created, job_id = str(raw).split("/", 1)
        return float(created), rules.text(job_id, "after", 64)
    except (ValueError, DomainError):
        raise Invalid("after must be the next value of a previous list_jobs answer") from None


def _summary(req: Request, job: Job) -> dict:
    doc = job.doc
    latest = doc.get("latest") or {}
    return {
        "job_id": job.id,
        "name": doc.get("name"),
        "tags": doc.get("tags", []),
        "state": job.state,
        "round": job.round,
        "rounds": job.config.rounds,
        "clients": req.store.count_clients(job.id),
        "num_clients": job.config.num_clients,
        "dataset": job.config.dataset,
        "strategy": job.config.strategy,
        "mode": job.config.mode,
        "eval_accuracy": latest.get("eval_accuracy"),
        "best": doc.get("best"),
        "priority": doc.get("priority", 0),
        "created_at": doc["created_at"],
        "finished_at": doc.get("finished_at"),
        "stopped_because": doc.get("stopped_because"),
        "archived": "archived_at" in doc,
        "cloned_from": doc.get("cloned_from"),
    }


def job_settings(req: Request) -> dict:
    """Every job setting with its type, default, range or choices, whether it can change, and its meaning."""
    return {
        "settings": [s.describe() for s in SETTINGS],
        "strategy_settings": [s.describe() for s in strategy_settings()],
    }
