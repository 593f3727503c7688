"""The round protocol's actions: one function each, a :class:`Request` in, a response dict out.

Checks come before writes, so an action that raises a :class:`flcore.errors.DomainError` has
changed nothing, except where its docstring says what it wrote (``submit``).
"""

from __future__ import annotations

from flcore.actions import secure as secure_action
from flcore.actions import transfer
from flcore.actions.request import MAX_ROUND, Request
from flcore.domain import filters, tokens
from flcore.domain.config import JobConfig
from flcore.domain.data import checked_stats
from flcore.domain.devices import parse_info
from flcore.domain.devices import view as device_view
from flcore.domain.job import Job
from flcore.domain.logs import KEEP_PER_CLIENT, parse_lines
from flcore.domain.metrics import metrics_of
from flcore.engine import enrolment, lifecycle, private, statistics
from flcore.errors import Conflict, Forbidden, Invalid, NotFound
from flcore.shared import clock
from flcore.shared.checks import is_int
from flcore.shared.datasets import TRAIN_CLASS_COUNTS
from flcore.shared.partition import train_examples
from flcore.storage.store import Store


def subscribe(req: Request) -> dict:
    """Join a job without a device identity (the named one, or the newest open job without criteria);
    a retry with the same ``idempotency_key`` gets the same place and a fresh token."""
    store = req.store
    key = tokens.idempotency_key(req.body.get("idempotency_key"))
    job_id = req.job_id(required=False)
    if job_id:
        job = Job.load(store, job_id)
    else:
        doc = store.newest_job(("waiting",), {"criteria": None}) or store.newest_job(("running",), {"criteria": None})
        if doc is None:
            raise NotFound("no job is waiting for clients")
        job = Job.of(doc)
    if job.doc.get("criteria"):
        raise Forbidden(f"job {job.id} takes only registered devices that meet its criteria (register, then join)")
    if job.config.task is not None:
        raise Forbidden(
            f"job {job.id} learns from the data set {job.config.dataset!r} that devices declare: "
            "register with FL_DATA_CONFIG set, then join"
        )
    return enrolment.enrol(store, job, key=key)


def partition(req: Request) -> dict:
    """The client's share of the training set, as a spec it expands itself."""
    client = req.client
    return Job.load(req.store, client["job_id"]).config.partition_spec(client["index"])


def poll(req: Request) -> dict:
    """What the client should do now; also moves the job forward if it is ready."""
    store = req.store
    client = req.client
    lines = parse_lines(req.body["log"]) if req.body.get("log") else []  # checked before anything is written
    now = clock.now()
    store.touch_client(client["_id"], now)
    if lines:
        store.add_log_lines(client["job_id"], client["_id"], client.get("device_id"), lines, KEEP_PER_CLIENT)
    if "info" in req.body and client.get("device_id"):
        req.store.update_device(client["device_id"], {"info": parse_info(req.body["info"]), "last_seen": now})
    job = lifecycle.advance(store, Job.load(store, client["job_id"]), now)
    reply = {"job_id": job.id, "round": job.round, "state": job.state}
    if job.finished or client.get("left"):
        ended = {"stopped_because": job.doc.get("stopped_because")} if job.finished else {"left": True}
        return {**reply, **ended, "action": "done", "retry_after": None}
    # "train" comes with what get_model would answer, so training costs the client no second call
    # (unless it is to start from an older version, which get_model serves)
    if job.state != "running":
        if statistics.needs_stats(job) and "data_stats" not in client and "schema" in job.doc:
            return {**reply, "action": "statistics", "retry_after": 0, **tabular_fields(job)}
        return {**reply, "action": "wait", "retry_after": job.mode.wait_hint(job, now)}
    step = job.mode.task(store, job, client["_id"], now)
    if step is not None:
        return {**reply, **step, "action": "secure", "retry_after": 0}
    base = job.mode.assign(store, job, client["_id"], now)
    if base is None:
        return {
            **reply,
            **job.mode.reply_fields(job, None),
            "action": "wait",
            "retry_after": job.mode.wait_hint(job, now),
        }
    latest = job.doc.get("model_round")
    model = model_reply(store, job, latest) if base == (latest or 0) else {}
    return {**model, **reply, **job.mode.reply_fields(job, base), "action": "train", "retry_after": 0}


def tabular_fields(job: Job) -> dict:
    """What a device needs to read its rows for a tabular job: the task, the schema, and (once made)
    the encoding."""
    task = job.config.task
    out = {
        "data": task.to_dict(),
        "schema": job.doc["schema"],
        "seed": job.config.seed,
        # devices keep serving the model they had until a retraining's new version is final
        "retraining": job.doc.get("retrain_from") is not None and not job.finished,
    }
    if "encoding" in job.doc:
        out["encoding"] = job.doc["encoding"]
    return out


def data_statistics(req: Request) -> dict:
    """A tabular client's statistics over its training rows, before round 1 (see
    :mod:`flcore.engine.statistics`); sent again, they replace the first ones until the encoding is made."""
    client = req.client
    job = Job.load(req.store, client["job_id"])
    if job.config.task is None or "schema" not in job.doc:
        raise Conflict(f"job {job.id} has no statistics step (it is not over a declared data set)")
    if not statistics.needs_stats(job):
        raise Conflict(f"job {job.id} has made its encoding already")
    declared = _declared_rows(req.store, job, client)
    stats = checked_stats(req.body.get("stats"), job.doc["schema"], declared)
    req.store.set_client_stats(client["_id"], stats)
    now = clock.now()
    req.store.touch_client(client["_id"], now)
    job = lifecycle.advance(req.store, Job.load(req.store, job.id), now)
    return {"accepted": True, "job_id": job.id, "state": job.state, "retry_after": 0.5}


def _declared_rows(store: Store, job: Job, client: dict) -> int:
    """The rows the client's device declares for the job's data set (0 if it came without a device)."""
    device = store.get_device(client["device_id"]) if client.get("device_id") else None
    held = (device or {}).get("info", {}).get("datasets", {}).get(job.config.dataset)
    return int(held.get("rows", 0)) if isinstance(held, dict) else 0


def heartbeat(req: Request) -> dict:
    """A picked client is alive while it trains (or waits for a trainer slot): it is not replaced as silent."""
    client = req.client
    req.store.touch_client(client["_id"], clock.now())
    return {"alive": True, "job_id": client["job_id"]}


def get_model(req: Request) -> dict:
    """The latest (or the given ``round``'s) global model, ``weights`` null before any exists.

    The stored safetensors bytes go out as they are, base64-encoded: no decode
    and re-encode per call; a model larger than one request is described under
    ``chunked`` instead and fetched with ``get_chunk`` (see :mod:`flcore.actions.transfer`).
    """
    wanted = req.body.get("round")
    job = req.visible_job(history=wanted is not None)
    model_round = job.doc.get("model_round")
    if wanted == 0 and model_round is None:  # the seeded initial model, which clients build themselves
        wanted = None
    if wanted is not None:
        if not is_int(wanted) or model_round is None or not 0 <= wanted <= model_round:
            raise NotFound(f"no model for round {wanted!r}; latest is {model_round}")
        model_round = wanted
    return model_reply(req.store, job, model_round)


def model_reply(store: Store, job: Job, model_round: int | None) -> dict:
    """What a client trains with: round ``model_round``'s model (inline, or described for chunks),
    the job's settings and this round's hyperparameters. ``job`` must hold the history when
    ``model_round`` is older than the latest model."""
    round_cfg = job.config_at(job.round)
    reply = {
        "job_id": job.id,
        "round": job.round,
        "model_round": model_round,
        "state": job.state,
        "weights": None,
        "config": job.config.to_dict(),
        "round_config": round_cfg.round_config(job.round, round_cfg.build_strategy()),
    }
    if job.config.task is not None:
        reply.update(tabular_fields(job))
    if job.config.dp is not None:  # the norm each device clips its change to this round
        reply["round_config"]["dp_clip_norm"] = private.current_clip(job.doc, job.config.dp_settings)
        if job.config.secure_aggregation is not None:  # and its share of the noise
            reply["round_config"].update(private.device_noise(job))
    if model_round is not None:
        transfer.model_parts(store, store.model_doc(job.id, model_round, job.model_owner(model_round)), reply)
    return reply


def _claim_limit(store: Store, job: Job, client: dict) -> int:
    """The most examples this client can have trained on: the size of its assigned share.

    Computed from the data set's public class counts, so a client cannot buy
    weight in the average by claiming more data than it was given. On a declared data set, the
    rows its statistics counted (what its device declared, if it joined after the encoding was made).
    """
    if job.config.task is not None:
        stats = client.get("data_stats")
        return stats["rows"] if stats else _declared_rows(store, job, client)
    return train_examples(TRAIN_CLASS_COUNTS[job.config.dataset], job.config.partition_spec(client["index"]))


def submit(req: Request) -> dict:
    """Accept a picked client's update for the open round, once.

    Writes before it may refuse: a FedBuff slot too stale to count is given back, and a chunked
    upload that fails its checks is deleted (see ``check_submit`` and ``checked_update``).
    """
    store = req.store
    client = req.client
    rnd = req.integer("round", 0, MAX_ROUND)
    job = Job.load(store, client["job_id"])
    limit = _claim_limit(store, job, client)
    n = req.body.get("num_examples")
    if not is_int(n) or not 0 < n <= limit:
        raise Invalid(
            f"num_examples must be an integer between 1 and {limit}, the training examples of this client's share"
        )
    metrics = metrics_of(req.body.get("metrics"))
    unclipped = req.body.get("dp_unclipped")
    central_dp = job.config.dp is not None and job.config.secure_aggregation is None  # else the bit is masked
    if central_dp and not isinstance(unclipped, bool):
        raise Invalid("a dp job's update says whether its change fitted under dp_clip_norm: dp_unclipped true or false")
    if store.has_update(job.id, rnd, client["_id"]):
        return {"accepted": False, "duplicate": True, "round": rnd}
    may_submit(store, job, client, rnd)
    if job.config.secure_aggregation is not None:
        secure_action.check_attempt(job, req.body)
    blob_id, size, digest = transfer.checked_update(store, job, client, rnd, req.body)
    now = clock.now()
    outcome = store.add_update(
        {
            "job_id": job.id,
            "round": rnd,
            "client_id": client["_id"],
            "blob": blob_id,
            "size": size,
            "sha256": digest,
            "num_examples": n,
            "metrics": metrics,
            "received_at": now,
            **({"dp_unclipped": unclipped} if central_dp else {}),
        }
    )
    if outcome == "copy":
        raise Conflict("this update is identical to one another client already submitted in this round")
    if outcome == "stored":
        job.mode.stored(store, job, client["_id"])
        store.touch_client(client["_id"], now)  # a client that just delivered is alive
        if client.get("device_id"):
            timed = (
                {"train_seconds_total": metrics["train_seconds"], "timed_updates": 1}
                if 0 <= metrics.get("train_seconds", -1) <= 86_400
                else {}
            )
            store.count_device_stats({client["device_id"]: {"updates_accepted": 1, **timed}})
    retry = job.mode.poll_after_submit(job, now)
    return {"accepted": outcome == "stored", "duplicate": outcome == "duplicate", "round": rnd, "retry_after": retry}


def may_submit(store: Store, job: Job, client: dict, rnd: int) -> None:
    """Refuse, with the reason, an update for ``rnd`` that could not count (the job's round mode says)."""
    job.mode.check_submit(store, job, client, rnd)


def upload_chunk(req: Request) -> dict:
    """One chunk of an update too large for one request (see :mod:`flcore.actions.transfer`)."""
    return transfer.upload_chunk(req, may_submit)


def aggregate(req: Request) -> dict:
    """Close every round that is ready (or just the named job's); safe to call any time."""
    client = req.caller.client
    job_id = client["job_id"] if client is not None else req.job_id(required=False)
    if job_id is None:
        return lifecycle.close_ready(req.store)
    return {"jobs": [lifecycle.moved(lifecycle.advance(req.store, Job.load(req.store, job_id)))]}  # 404 if unknown


def _submitted(store: Store, job: Job) -> int:
    """Updates waiting to count: this round's (sync), or those in the buffer (FedBuff)."""
    return job.mode.waiting_updates(store, job) if job.state == "running" else 0


def _model_summary(job: Job) -> dict:
    """What the job trains, in a line: its model's name (a preset, or custom), size and layers."""
    mdef = job.config.model_def
    return {"name": mdef.name, "parameters": mdef.parameters, "bytes": mdef.nbytes, "layers": len(mdef.layers)}


def privacy_view(doc: dict) -> dict:
    """A DP job's account for its operator: epsilon so far (None: not yet, or no noise), at which delta."""
    held = {k: v for k, v in (doc.get("privacy") or {}).items() if k != "costs"}
    dp = JobConfig.from_doc(doc["config"]).dp_settings
    return {"epsilon": None, "rounds": 0, "delta": dp.delta, "target_epsilon": dp.target_epsilon or None, **held}


MAX_DEVICES_SCANNED = 1000


def waiting_for(store: Store, job: Job) -> dict:
    """Why a waiting job has not started, for its operator: the places still open and, where it has
    criteria, how many registered devices meet each clause and all of them (which clause excludes the rest)."""
    cfg = job.config
    out: dict = {"clients": cfg.clients_to_start, "joined": store.count_clients(job.id, taking_part=True)}
    criteria = job.doc.get("criteria")
    if criteria:
        views = [device_view(d) for d in store.get_devices(None, limit=MAX_DEVICES_SCANNED)]
        out["devices"] = len(views)
        out["meet_all"] = sum(filters.matches(criteria, v) for v in views)
        out["clauses"] = [
            {"clause": {key: cond}, "meet": sum(filters.matches({key: cond}, v) for v in views)}
            for key, cond in criteria.items()
        ]
    return out


def status(req: Request) -> dict:
    """State, current round, settings (with their changes), rules and per-round history of a job."""
    job = req.visible_job(history=True)
    doc = job.doc
    return {
        "job_id": job.id,
        "name": doc.get("name"),
        "tags": doc.get("tags", []),
        "priority": doc.get("priority", 0),
        "state": job.state,
        "round": job.round,
        "rounds": job.config.rounds,
        "subscribed": req.store.count_clients(job.id),
        "picked": job.picked,
        "submitted": _submitted(req.store, job),
        "mode": job.config.mode,
        **job.mode.status(job),
        "model": _model_summary(job),
        "model_round": doc.get("model_round"),
        "created_at": doc["created_at"],
        "stopped_because": doc.get("stopped_because"),
        "opened_at": doc.get("opened_at"),
        "started_at": doc.get("started_at"),
        "finished_at": doc.get("finished_at"),
        "config": job.config.to_dict(),
        **({k: doc[k] for k in ("schema", "encoding") if k in doc} if job.config.task is not None else {}),
        "changes": doc.get("changes", []),
        "criteria": doc.get("criteria"),
        **({"waiting_for": waiting_for(req.store, job)} if req.caller.operator and job.state == "waiting" else {}),
        "rules": doc.get("rules", []),
        "rules_fired": doc.get("rules_fired", []),
        "best": doc.get("best"),
        **({"privacy": privacy_view(doc)} if job.config.dp is not None else {}),
        **({"secure_failures": doc.get("secure_failures", [])} if job.config.secure_aggregation else {}),
        "history": [
            {**h, "reported": doc["reported"][str(h["round"])]} if str(h["round"]) in doc.get("reported", {}) else h
            for h in doc.get("history", [])
        ],
    }
