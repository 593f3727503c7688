"""The ``devices`` collection: lasting identities that register once and join jobs."""

from __future__ import annotations

from collections.abc import Iterable

from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError


class DeviceRepository:
    """Registered devices, what they report and what the function counts; the store mixes this in."""

    devices: Collection

    def _device_indexes(self) -> None:
        # a retried register (same idempotency key) finds the device its first try made
        self.devices.create_index(
            [("idempotency_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"idempotency_key": {"$exists": True}},
            name="one_device_per_key",
        )

    def add_device(self, doc: dict) -> dict:
        """Store a new device; the one already made with the same ``idempotency_key``, if there is one."""
        try:
            self.devices.insert_one(doc)
            return doc
        except DuplicateKeyError:
            held = (
                self.devices.find_one({"idempotency_key": doc["idempotency_key"]}) if "idempotency_key" in doc else None
            )
            if held is None:
                raise
            return held

    def device_by_key(self, key: str) -> dict | None:
        return self.devices.find_one({"idempotency_key": key})

    def set_device_token(self, device_id: str, token_hash: str, now: float) -> None:
        self.devices.update_one({"_id": device_id}, {"$set": {"token_hash": token_hash, "last_seen": now}})

    def get_device(self, device_id: str) -> dict | None:
        return self.devices.find_one({"_id": device_id})

    def get_devices(self, device_ids: Iterable[str] | None = None, limit: int = 0) -> list[dict]:
        query = {} if device_ids is None else {"_id": {"$in": list(device_ids)}}
        return list(
            self.devices.find(query, {"token_hash": False, "idempotency_key": False})
            .sort("registered_at", ASCENDING)
            .limit(limit)
        )

    def update_device(self, device_id: str, fields: dict, push: dict | None = None) -> None:
        update: dict = {"$set": fields}
        if push:
            update["$addToSet"] = push
        self.devices.update_one({"_id": device_id}, update)

    def count_changed_data(self, device_ids: list[str], dataset: str, since: float) -> int:
        """How many of these devices reported their data set ``dataset`` changed after ``since``."""
        return self.devices.count_documents(
            {"_id": {"$in": device_ids}, f"info.datasets.{dataset}.changed_at": {"$gt": since}}
        )

    def count_device_stats(self, increments: dict[str, dict[str, float]]) -> None:
        """Add to devices' counters in one round trip: device id -> {stat: amount}."""
        ops = [
            UpdateOne({"_id": d}, {"$inc": {f"stats.{k}": v for k, v in inc.items()}})
            for d, inc in increments.items()
            if inc
        ]
        if ops:
            self.devices.bulk_write(ops, ordered=False)
