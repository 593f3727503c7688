"""The ``models`` collection: one document per (job, round, aggregation), its parts GridFS blobs."""

from __future__ import annotations

import contextlib
import hashlib

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from flcore.storage.blobs import Blobs


class ModelRepository:
    """Global models as each aggregation wrote them; the store mixes this in."""

    models: Collection
    blobs: Blobs

    def _model_indexes(self) -> None:
        # one model per (round, aggregation): a stale aggregator's write never replaces the committed one;
        # databases from before this allowed one model per round only
        if "job_id_1_round_1" in self.models.index_information():
            self.models.drop_index("job_id_1_round_1")
        self.models.create_index([("job_id", ASCENDING), ("round", ASCENDING), ("owner", ASCENDING)], unique=True)

    def put_model(
        self, job_id: str, rnd: int, owner: str, blob: bytes, state: bytes | None = None, shared: bytes | None = None
    ) -> None:
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
                    doc[part] = {
                        "id": self.blobs.put(data, part),
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
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

    def drop_job_models(self, job_id: str, keep: tuple[int, str] | None = None) -> int:
        """Delete a job's models and their blobs, all but ``keep`` (round, owner) if given; how many."""
        query: dict = {"job_id": job_id}
        if keep is not None:
            query["$nor"] = [{"round": keep[0], "owner": keep[1]}]
        count = self.models.count_documents(query)
        self._drop_models(query)
        return count

    def _drop_models(self, query: dict) -> None:
        for doc in self.models.find(query):
            self.blobs.delete(_blob_ids(doc))
            self.models.delete_one({"_id": doc["_id"]})


def _blob_ids(doc: dict) -> list:
    return [doc[part]["id"] for part in ("weights", "state", "shared") if isinstance(doc.get(part), dict)]
