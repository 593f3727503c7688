"""One function per action: request body and headers in, response dict out.

Checks come before writes, so an action that raises :class:`ApiError` has
changed nothing.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping

from flcore import auth, rounds, strategies
from flcore import weights as wcodec
from flcore.config import config_from_doc, parse_config
from flcore.errors import ApiError
from flcore.store import Store

# How soon a waiting client should ask again: about a second, so clients hear
# of a new round quickly without flooding the function.
POLL_INTERVAL_S = 1.0
MAX_EXAMPLES = 100_000_000

Action = Callable[[Store, dict, Mapping[str, str]], dict]


def _job_id(body: dict, required: bool = True) -> str | None:
    job_id = body.get("job_id")
    if job_id is None and not required:
        return None
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 64:
        raise ApiError(400, "job_id must be a string")
    return job_id


def _get_job(store: Store, job_id: str, history: bool = False) -> dict:
    job = store.get_job(job_id, history=history)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}")
    return job


def _client(store: Store, headers: Mapping[str, str]) -> dict:
    """The client a request's bearer token proves it is."""
    token = auth.bearer(headers)
    if token is None:
        raise ApiError(401, "missing client token (Authorization: Bearer <token from subscribe>)")
    client_id, secret = auth.split_client_token(token)
    client = store.get_client(client_id)
    if client is None or not auth.verify_secret(secret, client["token_hash"]):
        raise ApiError(401, "invalid client token")
    return client


def _caller(store: Store, headers: Mapping[str, str]) -> dict | None:
    """The client making the request, or None for the operator; refuses anyone else."""
    token = auth.bearer(headers)
    if token is not None and auth.admin_token() and auth.is_admin(headers):
        return None
    if token is not None and "." in token:
        return _client(store, headers)
    auth.require_admin(headers)
    return None


def _visible_job(store: Store, body: dict, headers: Mapping[str, str]) -> str:
    """The job a request may see: the client's own, or any job (default: newest) for the operator."""
    client = _caller(store, headers)
    job_id = _job_id(body, required=False)
    if client is not None:
        if job_id not in (None, client["job_id"]):
            raise ApiError(403, "a client can only see its own job")
        return client["job_id"]
    if job_id is None:
        newest = store.newest_job(("running", "waiting", "done"))
        if newest is None:
            raise ApiError(404, "no jobs yet")
        job_id = newest["_id"]
    return job_id


def start_training(store: Store, body: dict, headers: Mapping[str, str]) -> dict:
    """Create a job (operator only); optional initial ``weights`` become round 0's model."""
    auth.require_admin(headers)
    cfg = parse_config(body)
    blob = None
    if body.get("weights") is not None:
        blob, _ = wcodec.parse_update(body["weights"], cfg.model)
    job_id = "job-" + secrets.token_hex(6)
    now = time.time()
    if blob is not None:
        store.put_model(job_id, 0, blob)  # written first: a job never exists without its model
    store.create_job({
        "_id": job_id, "created_at": now, "config": cfg.to_dict(), "state": "waiting",
        "round": 0, "picked": [], "model_round": 0 if blob is not None else None, "history": [],
    })
    return {"job_id": job_id, "config": cfg.to_dict()}


def subscribe(store: Store, body: dict, headers: Mapping[str, str]) -> dict:
    """Join a job (the named one, or the newest still waiting for clients)."""
    job_id = _job_id(body, required=False)
    job = _get_job(store, job_id) if job_id else (store.newest_job(("waiting",)) or store.newest_job(("running",)))
    if job is None:
        raise ApiError(404, "no job is waiting for clients")
    cfg = config_from_doc(job["config"])
    if job["state"] == "done" or (job["state"] == "running" and cfg.clients_to_start >= cfg.num_clients):
        raise ApiError(409, f"job {job['_id']} is {job['state']} and takes no new clients")
    client_id = "c-" + secrets.token_hex(6)
    token, token_hash = auth.new_client_token(client_id)
    now = time.time()
    client = store.add_client(
        {"_id": client_id, "job_id": job["_id"], "token_hash": token_hash, "created_at": now, "last_seen": now},
        capacity=cfg.num_clients,
    )
    if client is None:
        raise ApiError(409, f"job {job['_id']} already has its {cfg.num_clients} clients")
    rounds.maybe_start(store, job, now)
    return {"job_id": job["_id"], "client_id": client_id, "token": token, "index": client["index"],
            "config": cfg.to_dict()}


def partition(store: Store, body: dict, headers: Mapping[str, str]) -> dict:
    """The client's share of the training set, as a spec it expands itself."""
    client = _client(store, headers)
    cfg = config_from_doc(_get_job(store, client["job_id"])["config"])
    return {"dataset": cfg.dataset, "strategy": cfg.partition, "seed": cfg.seed, "index": client["index"],
            "num_partitions": cfg.num_clients, "train_fraction": cfg.train_fraction,
            "alpha": cfg.partition_alpha, "shards": cfg.shards_per_client,
            "max_train_examples": cfg.max_train_examples}


def poll(store: Store, body: dict, headers: Mapping[str, str]) -> dict:
    """What the client should do now; also moves the job forward if it is ready."""
    client = _client(store, headers)
    now = time.time()
    store.touch_client(client["_id"], now)
    job = rounds.advance(store, _get_job(store, client["job_id"]), now)
    reply = {"job_id": job["_id"], "round": job["round"], "state": job["state"]}
    if job["state"] == "done":
        return {**reply, "action": "done", "retry_after": None}
    if job["state"] == "running" and client["_id"] in job["picked"] \
            and not store.has_update(job["_id"], job["round"], client["_id"]):
        return {**reply, "action": "train", "retry_after": 0}
    return {**reply, "action": "wait", "retry_after": POLL_INTERVAL_S}


def get_model(store: Store, body: dict, headers: Mapping[str, str]) -> dict:
    """The latest (or the given ``round``'s) global model, ``weights`` null before any exists."""
    job_id = _visible_job(store, body, headers)
    job = _get_job(store, job_id)
    model_round = job.get("model_round")
    wanted = body.get("round")
    if wanted is not None:
        if isinstance(wanted, bool) or not isinstance(wanted, int) or model_round is None \
                or not 0 <= wanted <= model_round:
            raise ApiError(404, f"no model for round {wanted!r}; latest is {model_round}")
        model_round = wanted
    cfg = config_from_doc(job["config"])
    strategy = strategies.get(cfg)
    reply = {"job_id": job_id, "round": job["round"], "model_round": model_round, "state": job["state"],
             "weights": None, "config": job["config"], "round_config": cfg.round_config(job["round"])}
    if model_round is None:
        return reply
    if strategy.shares_state:  # SCAFFOLD: the server's control variate goes with the model
        blob, state_blob = store.get_model_and_state(job_id, model_round)
        extra = strategy.client_tensors(wcodec.decode(state_blob) if state_blob is not None else {})
        if extra:
            reply["tensors"] = wcodec.to_b64(extra)
    else:
        blob = store.get_model(job_id, model_round)
    reply["weights"] = wcodec.to_b64(wcodec.decode(blob)) if blob is not None else None
    return reply


def _metrics(raw: object) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > 32:
        raise ApiError(400, "metrics must be an object of at most 32 numbers")
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or len(key) > 64 or "." in key or key.startswith("$"):
            raise ApiError(400, "metric names must be short plain strings")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ApiError(400, f"metric {key!r} must be a finite number")
        out[key] = float(value)
    return out


def submit(store: Store, body: dict, headers: Mapping[str, str]) -> dict:
    """Accept a picked client's update for the open round, once."""
    client = _client(store, headers)
    rnd = body.get("round")
    if isinstance(rnd, bool) or not isinstance(rnd, int):
        raise ApiError(400, "round must be an integer")
    n = body.get("num_examples")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= MAX_EXAMPLES:
        raise ApiError(400, f"num_examples must be an integer between 1 and {MAX_EXAMPLES}")
    metrics = _metrics(body.get("metrics"))
    job = _get_job(store, client["job_id"])
    if store.has_update(job["_id"], rnd, client["_id"]):
        return {"accepted": False, "duplicate": True, "round": rnd}
    if job["state"] != "running" or rnd != job["round"]:
        raise ApiError(409, f"round {rnd} is not open (job is {job['state']}, round {job['round']})")
    if client["_id"] not in job["picked"]:
        raise ApiError(409, f"client {client['_id']} was not picked for round {rnd}")
    cfg = config_from_doc(job["config"])
    blob, _ = wcodec.parse_update(body.get("weights"), cfg.model, strategies.get(cfg).update_prefixes)
    now = time.time()
    stored = store.add_update({"job_id": job["_id"], "round": rnd, "client_id": client["_id"], "weights": blob,
                               "num_examples": n, "metrics": metrics, "received_at": now})
    if stored:
        store.touch_client(client["_id"], now)  # a client that just delivered is alive
    return {"accepted": stored, "duplicate": not stored, "round": rnd}


def aggregate(store: Store, body: dict, headers: Mapping[str, str]) -> dict:
    """Close every round that is ready (or just the named job's); safe to call any time."""
    client = _caller(store, headers)
    job_id = client["job_id"] if client is not None else _job_id(body, required=False)
    return close_ready(store, [job_id] if job_id else None)


def close_ready(store: Store, job_ids: list[str] | None = None) -> dict:
    """Move the named jobs (default: all running) forward; what the scheduled event runs."""
    moved = []
    for jid in job_ids if job_ids is not None else store.running_job_ids():
        job = store.get_job(jid)
        if job is None:
            continue
        after = rounds.advance(store, job)
        moved.append({"job_id": jid, "state": after["state"], "round": after["round"]})
    return {"jobs": moved}


def status(store: Store, body: dict, headers: Mapping[str, str]) -> dict:
    """State, current round and per-round history of a job."""
    job_id = _visible_job(store, body, headers)
    job = _get_job(store, job_id, history=True)
    return {
        "job_id": job_id, "state": job["state"], "round": job["round"], "rounds": job["config"]["rounds"],
        "subscribed": store.count_clients(job_id), "picked": job.get("picked", []),
        "submitted": len(store.submitted_clients(job_id, job["round"])) if job["state"] == "running" else 0,
        "model_round": job.get("model_round"), "created_at": job["created_at"],
        "stopped_because": job.get("stopped_because"),
        "started_at": job.get("started_at"), "finished_at": job.get("finished_at"),
        "config": job["config"], "history": job.get("history", []),
    }


ACTIONS: dict[str, Action] = {
    "start_training": start_training,
    "subscribe": subscribe,
    "partition": partition,
    "poll": poll,
    "get_model": get_model,
    "submit": submit,
    "aggregate": aggregate,
    "status": status,
}
