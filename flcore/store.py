"""MongoDB persistence: every state change is one atomic operation.

The function is stateless and may run as many instances at once, so nothing
here reads a value and writes it back in two steps where a race could matter:
uniqueness comes from unique indexes, transitions from conditional
``find_one_and_update`` calls that name the state they expect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from bson import Binary
from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from flcore.settings import Settings

_clients: dict[str, MongoClient] = {}
_lock = threading.Lock()

# Fields never needed when a job document is read for routing decisions.
_JOB_LIGHT = {"history": False}


def connect(settings: Settings) -> "Store":
    """A store on a pooled client, reused across warm invocations of the function."""
    key = f"{settings.mongodb_url}#{settings.db_timeout_ms}"
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = MongoClient(
                settings.mongodb_url,
                serverSelectionTimeoutMS=settings.db_timeout_ms,
                retryWrites=True,
                appname="serverless-fl",
            )
            _clients[key] = client
    return Store(client[settings.db_name])


class Store:
    """Documents: ``jobs``, ``clients``, ``updates`` (one per job/round/client), ``models``."""

    _indexed: set[str] = set()

    def __init__(self, db: Database):
        self.db = db
        self.jobs = db["jobs"]
        self.clients = db["clients"]
        self.updates = db["updates"]
        self.models = db["models"]
        self.ensure_indexes()

    def ensure_indexes(self) -> None:
        """Create the unique indexes the protocol relies on; once per process and database."""
        key = f"{id(self.db.client)}/{self.db.name}"
        if key in Store._indexed:
            return
        self.clients.create_index([("job_id", ASCENDING), ("index", ASCENDING)], unique=True)
        self.updates.create_index(
            [("job_id", ASCENDING), ("round", ASCENDING), ("client_id", ASCENDING)], unique=True
        )
        # the same tensors twice in one round: a client copying another's update
        self.updates.create_index(
            [("job_id", ASCENDING), ("round", ASCENDING), ("sha256", ASCENDING)], unique=True,
            partialFilterExpression={"sha256": {"$exists": True}}, name="one_copy_per_round",
        )
        # one model per (round, aggregation): a stale aggregator's write never replaces the committed one;
        # databases from before this allowed one model per round only
        if "job_id_1_round_1" in self.models.index_information():
            self.models.drop_index("job_id_1_round_1")
        self.models.create_index([("job_id", ASCENDING), ("round", ASCENDING), ("owner", ASCENDING)], unique=True)
        self.jobs.create_index([("state", ASCENDING), ("created_at", DESCENDING)])
        Store._indexed.add(key)

    # jobs ---------------------------------------------------------------
    def create_job(self, doc: dict) -> None:
        self.jobs.insert_one(doc)

    def get_job(self, job_id: str, history: bool = False) -> dict | None:
        return self.jobs.find_one({"_id": job_id}, None if history else _JOB_LIGHT)

    def newest_job(self, states: Iterable[str]) -> dict | None:
        return self.jobs.find_one(
            {"state": {"$in": list(states)}}, _JOB_LIGHT, sort=[("created_at", DESCENDING)]
        )

    def running_job_ids(self) -> list[str]:
        return [d["_id"] for d in self.jobs.find({"state": "running"}, {"_id": True})]

    def renew_lease(self, job_id: str, rnd: int, owner: str, until: float) -> bool:
        """Extend a held aggregation lease; False once it is no longer this owner's."""
        res = self.jobs.update_one({"_id": job_id, "round": rnd, "lease_owner": owner},
                                   {"$set": {"lease_until": until}})
        return res.matched_count == 1

    def transition(self, job_id: str, expect: dict, update: dict) -> dict | None:
        """Apply ``update`` only if the job still matches ``expect``; the new doc or None."""
        return self.jobs.find_one_and_update(
            {"_id": job_id, **expect}, update, projection=_JOB_LIGHT, return_document=ReturnDocument.AFTER
        )

    # clients ------------------------------------------------------------
    def add_client(self, doc: dict, capacity: int) -> dict | None:
        """Insert a client in the first free partition slot; None when the job is full.

        The unique (job_id, index) index settles races between simultaneous subscribers.
        """
        while True:
            index = self.clients.count_documents({"job_id": doc["job_id"]})
            if index >= capacity:
                return None
            try:
                self.clients.insert_one({**doc, "index": index})
                return {**doc, "index": index}
            except DuplicateKeyError as exc:
                if "index" not in str(exc.details or exc):
                    raise

    def get_client(self, client_id: str) -> dict | None:
        return self.clients.find_one({"_id": client_id})

    def touch_client(self, client_id: str, now: float) -> None:
        self.clients.update_one({"_id": client_id}, {"$set": {"last_seen": now}})

    def count_clients(self, job_id: str) -> int:
        return self.clients.count_documents({"job_id": job_id})

    def client_ids(self, job_id: str, seen_since: float | None = None) -> list[str]:
        """Subscribed clients in partition order, optionally only those seen recently."""
        query: dict = {"job_id": job_id}
        if seen_since is not None:
            query["last_seen"] = {"$gte": seen_since}
        cursor = self.clients.find(query, {"_id": True}).sort("index", ASCENDING)
        return [d["_id"] for d in cursor]

    # updates ------------------------------------------------------------
    def add_update(self, doc: dict) -> str:
        """Store an update once: ``stored``, ``duplicate`` (this client already submitted
        for the round) or ``copy`` (another client's identical update is stored)."""
        try:
            self.updates.insert_one({**doc, "weights": Binary(doc["weights"])})
            return "stored"
        except DuplicateKeyError:
            return "duplicate" if self.has_update(doc["job_id"], doc["round"], doc["client_id"]) else "copy"

    def has_update(self, job_id: str, rnd: int, client_id: str) -> bool:
        return self.updates.count_documents({"job_id": job_id, "round": rnd, "client_id": client_id}, limit=1) > 0

    def submitted_clients(self, job_id: str, rnd: int) -> list[str]:
        return [d["client_id"] for d in self.updates.find({"job_id": job_id, "round": rnd}, {"client_id": True})]

    def load_updates(self, job_id: str, rnd: int) -> list[dict]:
        return list(self.updates.find({"job_id": job_id, "round": rnd}))

    # models -------------------------------------------------------------
    def put_model(self, job_id: str, rnd: int, owner: str, blob: bytes, state: bytes | None = None) -> None:
        """A round's model as written by one aggregation (``owner``, its lease).

        Which one counts is decided by the job's commit, which names the owner; an
        aggregator that lost its lease writes a document nobody reads. ``state``
        holds a strategy's tensors between rounds (server momentum, Adam moments).
        """
        doc = {"job_id": job_id, "round": rnd, "owner": owner, "weights": Binary(blob)}
        if state is not None:
            doc["state"] = Binary(state)
        self.models.replace_one({"job_id": job_id, "round": rnd, "owner": owner}, doc, upsert=True)

    def get_model(self, job_id: str, rnd: int, owner: str) -> bytes | None:
        doc = self.models.find_one({"job_id": job_id, "round": rnd, "owner": owner}, {"state": False})
        return bytes(doc["weights"]) if doc else None

    def get_model_and_state(self, job_id: str, rnd: int | None,
                            owner: str | None) -> tuple[bytes | None, bytes | None]:
        doc = self.models.find_one({"job_id": job_id, "round": rnd, "owner": owner}) if rnd is not None else None
        if doc is None:
            return None, None
        return bytes(doc["weights"]), bytes(doc["state"]) if doc.get("state") is not None else None

    def drop_uncommitted_models(self, job_id: str, rnd: int, owner: str) -> None:
        """Remove what aggregators that lost the round wrote (best effort: nobody reads them)."""
        self.models.delete_many({"job_id": job_id, "round": rnd, "owner": {"$ne": owner}})
