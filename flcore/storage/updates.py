"""The ``updates`` collection: one document per (job, round, client), its bytes a GridFS blob.

In FedBuff's mode ``round`` is the version an update was trained on and
``counted`` the version that took it (None until one does).
"""

from __future__ import annotations

from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from flcore.storage.blobs import Blobs


class UpdateRepository:
    """Clients' updates, stored once; the store mixes this in."""

    updates: Collection
    blobs: Blobs

    def _update_indexes(self) -> None:
        self.updates.create_index([("job_id", ASCENDING), ("round", ASCENDING), ("client_id", ASCENDING)], unique=True)
        # the same tensors twice in one round: a client copying another's update
        self.updates.create_index(
            [("job_id", ASCENDING), ("round", ASCENDING), ("sha256", ASCENDING)],
            unique=True,
            partialFilterExpression={"sha256": {"$exists": True}},
            name="one_copy_per_round",
        )
        # FedBuff's buffer: a job's uncounted updates, oldest first
        self.updates.create_index([("job_id", ASCENDING), ("counted", ASCENDING), ("received_at", ASCENDING)])

    def add_update(self, doc: dict) -> str:
        """Record an update whose bytes are stored as blob ``doc["blob"]``, once: ``stored``,
        ``duplicate`` (this client already submitted for the round) or ``copy`` (another
        client's identical update is stored). The blob is deleted unless it was recorded."""
        try:
            self.updates.insert_one(doc)
            return "stored"
        except DuplicateKeyError:
            held = self.updates.find_one(
                {"job_id": doc["job_id"], "round": doc["round"], "client_id": doc["client_id"]}, {"blob": True}
            )
            if held is None or held.get("blob") != doc["blob"]:  # not the same upload sealed twice
                self.blobs.delete([doc["blob"]])
            return "duplicate" if held is not None else "copy"

    def update_weights(self, doc: dict) -> bytearray:
        """An update's safetensors bytes (from its stored document)."""
        return self.blobs.read(doc["blob"], doc["size"])

    def has_update(self, job_id: str, rnd: int, client_id: str) -> bool:
        return self.updates.count_documents({"job_id": job_id, "round": rnd, "client_id": client_id}, limit=1) > 0

    def count_updates(self, job_id: str, rnd: int) -> int:
        return self.updates.count_documents({"job_id": job_id, "round": rnd})

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

    def drop_job_updates(self, job_id: str) -> int:
        """Delete every update of a job with its bytes; how many."""
        docs = list(self.updates.find({"job_id": job_id}, {"blob": True}))
        self.updates.delete_many({"job_id": job_id})
        self.blobs.delete([d["blob"] for d in docs])
        return len(docs)

    def drop_round_updates(self, job_id: str, rnd: int) -> None:
        """Delete a round's updates and their bytes (a secure round's failed attempt: its masks are void)."""
        docs = list(self.updates.find({"job_id": job_id, "round": rnd}, {"blob": True}))
        self.updates.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
        self.blobs.delete([d["blob"] for d in docs])

    def mark_counted(self, job_id: str, taken: list[tuple[str, int]], version: int | None) -> None:
        """Async mode: record that ``version`` took these (client, base version) updates; idempotent."""
        ops = [
            UpdateOne({"job_id": job_id, "round": b, "client_id": c}, {"$set": {"counted": version}}) for c, b in taken
        ]
        if ops:
            self.updates.bulk_write(ops, ordered=False)
