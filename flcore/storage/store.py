"""MongoDB persistence: every state change is one atomic operation.

The function is stateless and may run as many instances at once, so nothing
here reads a value and writes it back in two steps where a race could matter:
uniqueness comes from unique indexes, transitions from conditional
``find_one_and_update`` calls that name the state they expect.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterable

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from flcore.storage.blobs import Blobs
from flcore.edge.settings import Settings

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
    """Documents: ``jobs``, ``clients`` (one per job and participant), ``updates`` (one per
    job/round/client), ``models``, ``devices`` (lasting identities that join jobs)."""

    _indexed: set[str] = set()

    def __init__(self, db: Database):
        self.db = db
        self.jobs = db["jobs"]
        self.clients = db["clients"]
        self.updates = db["updates"]
        self.models = db["models"]
        self.devices = db["devices"]
        self.blobs = Blobs(db)
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
        # async mode's buffer: a job's uncounted updates, oldest first
        self.updates.create_index([("job_id", ASCENDING), ("counted", ASCENDING), ("received_at", ASCENDING)])
        self.jobs.create_index([("state", ASCENDING), ("created_at", DESCENDING)])
        self.jobs.create_index([("created_at", DESCENDING), ("_id", DESCENDING)])
        # one place per device in a job, however many joins race
        self.clients.create_index([("job_id", ASCENDING), ("device_id", ASCENDING)], unique=True,
                                  partialFilterExpression={"device_id": {"$exists": True}}, name="one_place_per_device")
        self.clients.create_index([("device_id", ASCENDING)], partialFilterExpression={"device_id": {"$exists": True}})
        self.blobs.ensure_indexes()
        Store._indexed.add(key)

    # jobs ---------------------------------------------------------------
    def create_job(self, doc: dict) -> None:
        self.jobs.insert_one({**doc, "places_taken": 0})

    def get_job(self, job_id: str, history: bool = False) -> dict | None:
        return self.jobs.find_one({"_id": job_id}, None if history else _JOB_LIGHT)

    def newest_job(self, states: Iterable[str], query: dict | None = None) -> dict | None:
        return self.jobs.find_one(
            {"state": {"$in": list(states)}, **(query or {})}, _JOB_LIGHT, sort=[("created_at", DESCENDING)]
        )

    def running_job_ids(self) -> list[str]:
        return [d["_id"] for d in self.jobs.find({"state": "running"}, {"_id": True})]

    def list_jobs(self, query: dict, limit: int) -> list[dict]:
        """Jobs matching ``query``, newest first (ties broken by id, so pages never overlap)."""
        cursor = self.jobs.find(query, _JOB_LIGHT).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        return list(cursor.limit(limit))

    def open_jobs(self, limit: int) -> list[dict]:
        """Jobs that take devices now, best first: highest priority, then oldest."""
        cursor = self.jobs.find({"state": {"$in": ["waiting", "running"]}}, _JOB_LIGHT)
        return list(cursor.sort([("priority", DESCENDING), ("created_at", ASCENDING)]).limit(limit))

    def jobs_with_pending_starts(self) -> list[dict]:
        return list(self.jobs.find({"starts_pending": {"$exists": True}}, {"starts_pending": True}))

    def clear_pending_starts(self, job_id: str) -> None:
        self.jobs.update_one({"_id": job_id}, {"$unset": {"starts_pending": ""}})

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

    def claim_slot(self, job_id: str, client_id: str, base: int, limit: int, now: float) -> bool:
        """Async mode: let a client train on version ``base`` if fewer than ``limit`` train now."""
        return self.transition(
            job_id, {"state": "running", "picked": {"$ne": client_id}, f"picked.{limit - 1}": {"$exists": False}},
            {"$push": {"picked": client_id}, "$set": {f"in_flight.{client_id}": [base, now]}},
        ) is not None

    def release_slot(self, job_id: str, client_id: str, slot: list | None = None) -> None:
        """Async mode: give a client's training slot back (only if it is still ``slot``, when given)."""
        query: dict = {"_id": job_id}
        if slot is not None:
            query[f"in_flight.{client_id}"] = slot
        self.jobs.update_one(query, {"$pull": {"picked": client_id}, "$unset": {f"in_flight.{client_id}": ""}})

    # clients ------------------------------------------------------------
    def add_client(self, doc: dict, capacity: int) -> dict | None:
        """Insert a client in the first free partition slot; None when the job is full.

        The job's ``places_taken`` counter hands out slots one by one, so a
        thousand clients joining at once each cost one update and one insert
        (counting the job's clients is a scan). A join that took a slot and
        never inserted (a crash, or a device that already had its place) leaves
        a gap, which joins find by probing once the counter is full. The unique
        (job_id, index) index settles any race; a device that already has a
        place gets that one back.
        """
        job = self.jobs.find_one_and_update({"_id": doc["job_id"], "places_taken": {"$lt": capacity}},
                                            {"$inc": {"places_taken": 1}}, {"places_taken": True},
                                            return_document=ReturnDocument.AFTER)
        if job is not None and (placed := self._try_slot(doc, job["places_taken"] - 1)) is not None:
            return placed
        # every slot handed out (or ours filled meanwhile): fill a gap a join left, if there is one
        taken = {d["index"] for d in self.clients.find({"job_id": doc["job_id"]}, {"index": True})}
        for index in (i for i in range(capacity) if i not in taken):
            if (placed := self._try_slot(doc, index)) is not None:
                return placed
        return None

    def _try_slot(self, doc: dict, index: int) -> dict | None:
        """The client placed at ``index`` (or the place its device already has); None if the slot is taken."""
        try:
            self.clients.insert_one({**doc, "index": index})
            return {**doc, "index": index}
        except DuplicateKeyError as exc:
            if "device_id" in doc and "one_place_per_device" in str(exc.details or exc):
                return self.device_client(doc["job_id"], doc["device_id"])
            if "index" not in str(exc.details or exc):
                raise
            return None

    def get_client(self, client_id: str) -> dict | None:
        return self.clients.find_one({"_id": client_id})

    def touch_client(self, client_id: str, now: float) -> None:
        self.clients.update_one({"_id": client_id}, {"$set": {"last_seen": now}})

    def count_clients(self, job_id: str, taking_part: bool = False) -> int:
        """Clients that subscribed to the job (``taking_part``: less those that left)."""
        query: dict = {"job_id": job_id, "left": {"$ne": True}} if taking_part else {"job_id": job_id}
        return self.clients.count_documents(query)

    def client_ids(self, job_id: str, seen_since: float | None = None) -> list[str]:
        """Clients taking part in partition order (not those that left), optionally only those seen recently."""
        return [d["_id"] for d in self.client_docs(job_id, seen_since)]

    def client_docs(self, job_id: str, seen_since: float | None = None) -> list[dict]:
        query: dict = {"job_id": job_id, "left": {"$ne": True}}
        if seen_since is not None:
            query["last_seen"] = {"$gte": seen_since}
        cursor = self.clients.find(query, {"_id": True, "device_id": True}).sort("index", ASCENDING)
        return list(cursor)

    def device_client(self, job_id: str, device_id: str) -> dict | None:
        return self.clients.find_one({"job_id": job_id, "device_id": device_id})

    def set_client_token(self, client_id: str, token_hash: str, now: float) -> None:
        self.clients.update_one({"_id": client_id}, {"$set": {"token_hash": token_hash, "last_seen": now}})

    def mark_left(self, client_id: str, reason: str, now: float) -> bool:
        """Record that a client left its job; False if it had already left."""
        res = self.clients.update_one({"_id": client_id, "left": {"$ne": True}},
                                      {"$set": {"left": True, "left_reason": reason, "left_at": now}})
        return res.modified_count == 1

    def device_ids_of(self, client_ids: Iterable[str]) -> dict[str, str]:
        """client id -> device id, for the clients among these that came as devices."""
        docs = self.clients.find({"_id": {"$in": list(client_ids)}, "device_id": {"$exists": True}},
                                 {"device_id": True})
        return {d["_id"]: d["device_id"] for d in docs}

    def last_seen_as_clients(self, device_ids: Iterable[str]) -> dict[str, float]:
        """device id -> the latest poll or submit of any of its clients (polls do not write to devices)."""
        out: dict[str, float] = {}
        for d in self.clients.find({"device_id": {"$in": list(device_ids)}}, {"device_id": True, "last_seen": True}):
            out[d["device_id"]] = max(out.get(d["device_id"], 0.0), d.get("last_seen") or 0.0)
        return out

    def job_device_ids(self, job_id: str) -> list[str]:
        return [d["device_id"] for d in self.clients.find({"job_id": job_id, "device_id": {"$exists": True}},
                                                          {"device_id": True})]

    # devices ------------------------------------------------------------
    def add_device(self, doc: dict) -> None:
        self.devices.insert_one(doc)

    def get_device(self, device_id: str) -> dict | None:
        return self.devices.find_one({"_id": device_id})

    def get_devices(self, device_ids: Iterable[str] | None = None, limit: int = 0) -> list[dict]:
        query = {} if device_ids is None else {"_id": {"$in": list(device_ids)}}
        return list(self.devices.find(query, {"token_hash": False}).sort("registered_at", ASCENDING).limit(limit))

    def update_device(self, device_id: str, fields: dict, push: dict | None = None) -> None:
        update: dict = {"$set": fields}
        if push:
            update["$addToSet"] = push
        self.devices.update_one({"_id": device_id}, update)

    def count_device_stats(self, increments: dict[str, dict[str, float]]) -> None:
        """Add to devices' counters in one round trip: device id -> {stat: amount}."""
        ops = [UpdateOne({"_id": d}, {"$inc": {f"stats.{k}": v for k, v in inc.items()}})
               for d, inc in increments.items() if inc]
        if ops:
            self.devices.bulk_write(ops, ordered=False)

    # updates ------------------------------------------------------------
    def add_update(self, doc: dict) -> str:
        """Record an update whose bytes are stored as blob ``doc["blob"]``, once: ``stored``,
        ``duplicate`` (this client already submitted for the round) or ``copy`` (another
        client's identical update is stored). The blob is deleted unless it was recorded."""
        try:
            self.updates.insert_one(doc)
            return "stored"
        except DuplicateKeyError:
            held = self.updates.find_one({"job_id": doc["job_id"], "round": doc["round"],
                                          "client_id": doc["client_id"]}, {"blob": True})
            if held is None or held.get("blob") != doc["blob"]:  # not the same upload sealed twice
                self.blobs.delete([doc["blob"]])
            return "duplicate" if held is not None else "copy"

    def update_weights(self, doc: dict) -> bytearray:
        """An update's safetensors bytes (from its stored document)."""
        return self.blobs.read(doc["blob"], doc["size"])

    def has_update(self, job_id: str, rnd: int, client_id: str) -> bool:
        return self.updates.count_documents({"job_id": job_id, "round": rnd, "client_id": client_id}, limit=1) > 0

    def submitted_clients(self, job_id: str, rnd: int) -> list[str]:
        return [d["client_id"] for d in self.updates.find({"job_id": job_id, "round": rnd}, {"client_id": True})]

    def load_updates(self, job_id: str, rnd: int) -> list[dict]:
        """A round's update documents (their weights are blobs: :meth:`update_weights`)."""
        return list(self.updates.find({"job_id": job_id, "round": rnd}))

    def count_uncounted(self, job_id: str) -> int:
        """Async mode: updates stored and not yet taken into a model version."""
        return self.updates.count_documents({"job_id": job_id, "counted": None})

    def uncounted_updates(self, job_id: str, limit: int) -> list[dict]:
        """Async mode: the oldest ``limit`` updates no version has taken."""
        cursor = self.updates.find({"job_id": job_id, "counted": None}).sort("received_at", ASCENDING)
        return list(cursor.limit(limit))

    def mark_counted(self, job_id: str, taken: list[tuple[str, int]], version: int | None) -> None:
        """Async mode: record that ``version`` took these (client, base version) updates; idempotent."""
        ops = [UpdateOne({"job_id": job_id, "round": b, "client_id": c}, {"$set": {"counted": version}})
               for c, b in taken]
        if ops:
            self.updates.bulk_write(ops, ordered=False)

    # models -------------------------------------------------------------
    def put_model(self, job_id: str, rnd: int, owner: str, blob: bytes, state: bytes | None = None,
                  shared: bytes | None = None) -> None:
        """A round's model as written by one aggregation (``owner``, its lease).

        Which one counts is decided by the job's commit, which names the owner; an
        aggregator that lost its lease writes a document nobody reads. ``state``
        holds a strategy's tensors between rounds (server momentum, Adam moments),
        ``shared`` the part of it clients receive with the model (SCAFFOLD's c).
        The bytes are GridFS files; the document lists them with their sizes and
        digests, which chunked downloads are checked against.
        """
        doc: dict = {"job_id": job_id, "round": rnd, "owner": owner}
        key = {"job_id": job_id, "round": rnd, "owner": owner}
        try:
            for part, data in (("weights", blob), ("state", state), ("shared", shared)):
                if data is not None:
                    doc[part] = {"id": self.blobs.put(data, part), "size": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}
            old = self.models.find_one(key)  # the same aggregation writing again (a retried request)
            self.models.replace_one(key, doc, upsert=True)
        except PyMongoError:  # files nobody will list: best effort, then the error as it was
            with contextlib.suppress(PyMongoError):
                self.blobs.delete(_blob_ids(doc))
            raise
        if old:
            self.blobs.delete(_blob_ids(old))

    def model_doc(self, job_id: str, rnd: int | None, owner: str | None) -> dict | None:
        """What a round's stored model consists of: ``weights``, ``state``, ``shared`` as {id, size, sha256}."""
        return self.models.find_one({"job_id": job_id, "round": rnd, "owner": owner}) if rnd is not None else None

    def model_part(self, doc: dict | None, part: str) -> bytearray | None:
        """One part of a stored model, read whole (None if it has none)."""
        if doc is None or not doc.get(part):
            return None
        return self.blobs.read(doc[part]["id"], doc[part]["size"])

    def get_model(self, job_id: str, rnd: int, owner: str) -> bytearray | None:
        return self.model_part(self.model_doc(job_id, rnd, owner), "weights")

    def drop_model(self, job_id: str, rnd: int, owner: str) -> None:
        self._drop_models({"job_id": job_id, "round": rnd, "owner": owner})

    def drop_uncommitted_models(self, job_id: str, rnd: int, owner: str) -> None:
        """Remove what aggregators that lost the round wrote (best effort: nobody reads them)."""
        self._drop_models({"job_id": job_id, "round": rnd, "owner": {"$ne": owner}})

    def _drop_models(self, query: dict) -> None:
        for doc in self.models.find(query):
            self.blobs.delete(_blob_ids(doc))
            self.models.delete_one({"_id": doc["_id"]})


def _blob_ids(doc: dict) -> list:
    return [doc[part]["id"] for part in ("weights", "state", "shared") if isinstance(doc.get(part), dict)]
