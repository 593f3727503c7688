"""The ``secure`` collection: what devices relay to each other in a secure round, one document per
(job, round, attempt, client, stage); a second message for the same stage is refused by the unique index.

Stages: ``keys`` (the device's two public keys), ``shares`` (its Shamir shares,
each encrypted for one neighbour: ``to.<neighbour>``), ``unmask`` (the shares it
reveals once the survivors are known). The job document holds where the round's
protocol stands (``secure``: attempt, stage, members); see :mod:`flcore.engine.secure`.
"""

from __future__ import annotations

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError


class SecureRepository:
    """Relayed messages of secure aggregation; the store mixes this in."""

    secure: Collection

    def _secure_indexes(self) -> None:
        self.secure.create_index(
            [("job_id", ASCENDING), ("round", ASCENDING), ("attempt", ASCENDING), ("stage", ASCENDING),
             ("client_id", ASCENDING)],
            unique=True,
        )  # fmt: skip

    def add_message(self, job_id: str, rnd: int, attempt: int, stage: str, client_id: str, body: dict) -> bool:
        """Store a device's message for a stage once; False if it already sent one."""
        try:
            self.secure.insert_one(
                {"job_id": job_id, "round": rnd, "attempt": attempt, "stage": stage, "client_id": client_id, **body}
            )
        except DuplicateKeyError:
            return False
        return True

    def messages(self, job_id: str, rnd: int, attempt: int, stage: str, projection: dict | None = None) -> list[dict]:
        query = {"job_id": job_id, "round": rnd, "attempt": attempt, "stage": stage}
        return list(self.secure.find(query, projection))

    def count_messages(self, job_id: str, rnd: int, attempt: int, stage: str) -> int:
        return self.secure.count_documents({"job_id": job_id, "round": rnd, "attempt": attempt, "stage": stage})

    def has_sent(self, job_id: str, rnd: int, attempt: int, stage: str, client_id: str) -> bool:
        query = {"job_id": job_id, "round": rnd, "attempt": attempt, "stage": stage, "client_id": client_id}
        return self.secure.count_documents(query, limit=1) > 0

    def messages_from(self, job_id: str, rnd: int, attempt: int, stage: str, clients: list[str]) -> list[dict]:
        """The stage's messages of these clients only (a device's neighbours: O(degree), not O(members))."""
        query = {"job_id": job_id, "round": rnd, "attempt": attempt, "stage": stage, "client_id": {"$in": clients}}
        return list(self.secure.find(query))

    def senders(self, job_id: str, rnd: int, attempt: int, stage: str) -> list[str]:
        return [d["client_id"] for d in self.messages(job_id, rnd, attempt, stage, {"client_id": True})]

    def inbox(self, job_id: str, rnd: int, attempt: int, client_id: str, senders: list[str]) -> dict[str, str]:
        """The shares ``senders`` (its neighbours) sent to ``client_id`` in this attempt: sender -> ciphertext."""
        query = {"job_id": job_id, "round": rnd, "attempt": attempt, "stage": "shares", "client_id": {"$in": senders}}
        found = self.secure.find(query, {"client_id": True, f"to.{client_id}": True})
        return {d["client_id"]: d["to"][client_id] for d in found if client_id in d.get("to", {})}

    def drop_messages(self, job_id: str, before_round: int | None = None) -> None:
        """Forget relayed messages: a job's rounds before ``before_round`` (None: all of them)."""
        query: dict = {"job_id": job_id}
        if before_round is not None:
            query["round"] = {"$lt": before_round}
        self.secure.delete_many(query)
