"""The ``logs`` collection: the last lines each client of a job sent (capped per client)."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

MAX_PAGE = 1000


class LogRepository:
    """Clients' log lines; the store mixes this in."""

    logs: Collection

    def _log_indexes(self) -> None:
        self.logs.create_index([("job_id", ASCENDING), ("client_id", ASCENDING), ("at", DESCENDING)])
        self.logs.create_index([("job_id", ASCENDING), ("at", ASCENDING)])
        self.logs.create_index([("device_id", ASCENDING), ("at", DESCENDING)])

    def add_log_lines(self, job_id: str, client_id: str, device_id: str | None, lines: list[dict], keep: int) -> None:
        """Store a client's lines, then forget its lines beyond the last ``keep``."""
        owner = {"job_id": job_id, "client_id": client_id, "device_id": device_id}
        self.logs.insert_many([{**owner, **line} for line in lines])
        oldest_kept = list(
            self.logs.find({"job_id": job_id, "client_id": client_id}, {"at": True})
            .sort("at", DESCENDING)
            .skip(keep - 1)
            .limit(1)
        )
        if oldest_kept:
            self.logs.delete_many({"job_id": job_id, "client_id": client_id, "at": {"$lt": oldest_kept[0]["at"]}})

    def log_lines(self, query: dict, limit: int) -> list[dict]:
        """The newest ``limit`` lines matching ``query``, oldest first."""
        found = self.logs.find(query, {"_id": False}).sort("at", DESCENDING).limit(min(limit, MAX_PAGE))
        return list(reversed(list(found)))
