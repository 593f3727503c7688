"""The ``clients`` collection: one document per job and participant (a subscriber, or a device's place).

A client holds a partition slot (``index``, unique per job), a token hash, when
it was last heard from, and whether it left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError


class ClientRepository:
    """Places in jobs; the store mixes this in."""

    clients: Collection
    take_place: Callable[[str, int], int | None]  # JobRepository's

    def _client_indexes(self) -> None:
        self.clients.create_index([("job_id", ASCENDING), ("index", ASCENDING)], unique=True)
        # one place per device in a job, however many joins race
        self.clients.create_index(
            [("job_id", ASCENDING), ("device_id", ASCENDING)],
            unique=True,
            partialFilterExpression={"device_id": {"$exists": True}},
            name="one_place_per_device",
        )
        self.clients.create_index([("device_id", ASCENDING)], partialFilterExpression={"device_id": {"$exists": True}})
        # a retried subscribe (same idempotency key) finds the place its first try took
        self.clients.create_index(
            [("job_id", ASCENDING), ("idempotency_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"idempotency_key": {"$exists": True}},
            name="one_place_per_key",
        )

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
        slot = self.take_place(doc["job_id"], capacity)  # the job's counter (storage/jobs.py)
        if slot is not None and (placed := self._try_slot(doc, slot)) is not None:
            return placed
        # every slot handed out (or ours filled meanwhile): fill a gap a join left, if there is one
        taken = {d["index"] for d in self.clients.find({"job_id": doc["job_id"]}, {"index": True})}
        for index in (i for i in range(capacity) if i not in taken):
            if (placed := self._try_slot(doc, index)) is not None:
                return placed
        return None

    def _try_slot(self, doc: dict, index: int) -> dict | None:
        """The client placed at ``index`` (or the place its device already has); None if the slot is taken.

        A duplicate key is either the slot (another client holds ``index``) or the device's one place in
        the job; which one is read from the database, not from the error's text.
        """
        try:
            self.clients.insert_one({**doc, "index": index})
            return {**doc, "index": index}
        except DuplicateKeyError:
            if "device_id" in doc:
                held = self.device_client(doc["job_id"], doc["device_id"])
                if held is not None:
                    return held
            if "idempotency_key" in doc:
                held = self.client_by_key(doc["job_id"], doc["idempotency_key"])
                if held is not None:
                    return held
            return None

    def client_by_key(self, job_id: str, key: str) -> dict | None:
        return self.clients.find_one({"job_id": job_id, "idempotency_key": key})

    def get_client(self, client_id: str) -> dict | None:
        return self.clients.find_one({"_id": client_id})

    def touch_client(self, client_id: str, now: float) -> None:
        self.clients.update_one({"_id": client_id}, {"$set": {"last_seen": now}})

    def drop_job_clients(self, job_id: str) -> int:
        """Delete a job's clients (their tokens stop working); how many."""
        return self.clients.delete_many({"job_id": job_id}).deleted_count

    def count_clients(self, job_id: str, taking_part: bool = False) -> int:
        """Clients that subscribed to the job (``taking_part``: less those that left)."""
        query: dict = {"job_id": job_id, "left": {"$ne": True}} if taking_part else {"job_id": job_id}
        return self.clients.count_documents(query)

    def client_docs(self, job_id: str, seen_since: float | None = None) -> list[dict]:
        query: dict = {"job_id": job_id, "left": {"$ne": True}}
        if seen_since is not None:
            query["last_seen"] = {"$gte": seen_since}
        cursor = self.clients.find(query, {"_id": True, "device_id": True}).sort("index", ASCENDING)
        return list(cursor)

    def last_seen_of(self, client_ids: Iterable[str]) -> dict[str, float]:
        """client id -> when it was last heard from (a poll, a heartbeat, a submit)."""
        docs = self.clients.find({"_id": {"$in": list(client_ids)}}, {"last_seen": True})
        return {d["_id"]: float(d.get("last_seen") or 0.0) for d in docs}

    def set_client_stats(self, client_id: str, stats: dict) -> None:
        """A tabular client's statistics for the job's encoding (replaced if it sends them again)."""
        self.clients.update_one({"_id": client_id}, {"$set": {"data_stats": stats}})

    def client_stats(self, job_id: str) -> list[dict]:
        """The statistics of the job's clients taking part that sent them, in index order."""
        query = {"job_id": job_id, "left": {"$ne": True}, "data_stats": {"$exists": True}}
        return [d["data_stats"] for d in self.clients.find(query, {"data_stats": True}).sort("index", ASCENDING)]

    def device_client(self, job_id: str, device_id: str) -> dict | None:
        return self.clients.find_one({"job_id": job_id, "device_id": device_id})

    def set_client_token(self, client_id: str, token_hash: str, now: float) -> None:
        self.clients.update_one({"_id": client_id}, {"$set": {"token_hash": token_hash, "last_seen": now}})

    def mark_left(self, client_id: str, reason: str, now: float) -> bool:
        """Record that a client left its job; False if it had already left."""
        res = self.clients.update_one(
            {"_id": client_id, "left": {"$ne": True}}, {"$set": {"left": True, "left_reason": reason, "left_at": now}}
        )
        return res.modified_count == 1

    def device_ids_of(self, client_ids: Iterable[str]) -> dict[str, str]:
        """client id -> device id, for the clients among these that came as devices."""
        docs = self.clients.find(
            {"_id": {"$in": list(client_ids)}, "device_id": {"$exists": True}}, {"device_id": True}
        )
        return {d["_id"]: d["device_id"] for d in docs}

    def last_seen_as_clients(self, device_ids: Iterable[str]) -> dict[str, float]:
        """device id -> the latest poll or submit of any of its clients (polls do not write to devices)."""
        out: dict[str, float] = {}
        for d in self.clients.find({"device_id": {"$in": list(device_ids)}}, {"device_id": True, "last_seen": True}):
            out[d["device_id"]] = max(out.get(d["device_id"], 0.0), d.get("last_seen") or 0.0)
        return out

    def revoke_device_clients(self, device_id: str, reason: str, now: float) -> int:
        """Every client of a device: its token stops working (no hash matches "") and it has left."""
        res = self.clients.update_many(
            {"device_id": device_id},
            {"$set": {"token_hash": "", "left": True, "left_reason": reason, "left_at": now}},
        )
        return res.modified_count

    def job_clients(self, job_id: str) -> list[dict]:
        """Every client of a job, left or not, without its token."""
        return list(self.clients.find({"job_id": job_id}, {"token_hash": False, "data_stats": False}))

    def job_device_ids(self, job_id: str) -> list[str]:
        return [
            d["device_id"]
            for d in self.clients.find({"job_id": job_id, "device_id": {"$exists": True}}, {"device_id": True})
        ]
