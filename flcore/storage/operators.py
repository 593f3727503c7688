"""The ``operators`` collection (named operator tokens, stored only as hashes) and the ``audit`` trail.

An operator token is ``<operator id>.<secret>`` like a device's; revoking sets ``revoked_at`` and the
edge refuses it from then on. The audit trail keeps one document per operator action: who, with
which role, what, when, on which job or device, and how it ended.
"""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

MAX_AUDIT_PAGE = 500


class OperatorRepository:
    """Operator tokens and the audit trail; the store mixes this in."""

    operators: Collection
    audit: Collection

    def _operator_indexes(self) -> None:
        self.operators.create_index([("name", ASCENDING)], unique=True)
        self.audit.create_index([("at", DESCENDING)])
        self.audit.create_index([("job_id", ASCENDING), ("at", DESCENDING)])

    def add_operator(self, doc: dict) -> bool:
        """Store a new operator; False if one has that name (revoked or not: names are not reused)."""
        try:
            self.operators.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    def get_operator(self, operator_id: str) -> dict | None:
        return self.operators.find_one({"_id": operator_id})

    def list_operators(self) -> list[dict]:
        return list(self.operators.find({}, {"token_hash": False}).sort("created_at", ASCENDING))

    def revoke_operator(self, name: str, now: float) -> dict | None:
        """Revoke the named operator's token at once; None if there is no such operator still active."""
        return self.operators.find_one_and_update(
            {"name": name, "revoked_at": None},
            {"$set": {"revoked_at": now}},
            projection={"token_hash": False},
            return_document=ReturnDocument.AFTER,
        )

    def record(self, entry: dict) -> None:
        self.audit.insert_one(entry)

    def audit_trail(self, query: dict, limit: int) -> list[dict]:
        return list(self.audit.find(query, {"_id": False}).sort("at", DESCENDING).limit(min(limit, MAX_AUDIT_PAGE)))
