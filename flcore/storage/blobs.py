"""Large bytes (models, server state, updates) in GridFS, so no document limit applies.

Files are standard GridFS (``blobs.files`` and ``blobs.chunks``) with
``CHUNK_BYTES`` chunks, which is also what one request carries when a model
travels in pieces: chunk *n* of a download is GridFS chunk *n*, and an upload's
chunks are written straight into ``blobs.chunks`` under the upload's id. Only
once the whole upload is checked does its ``blobs.files`` document appear,
which makes it a GridFS file; until then it is staging that nothing reads, and
a stale one is deleted (:meth:`Blobs.drop_stale_uploads`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Iterable

from bson import Binary, ObjectId
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from flcore.errors import Conflict, Invalid
from flcore.shared.datasets import CHUNK_BYTES
from flcore.shared.weights import Source


def chunks_of(size: int) -> int:
    """How many chunks hold ``size`` bytes."""
    return max(1, -(-size // CHUNK_BYTES))


def chunk_length(size: int, n: int) -> int:
    """The length chunk ``n`` of a ``size``-byte file must have."""
    return min(CHUNK_BYTES, size - n * CHUNK_BYTES)


class Blobs:
    """GridFS files by id, read whole, by chunk, or by byte range."""

    def __init__(self, db: Database):
        self.files = db["blobs.files"]
        self.chunks = db["blobs.chunks"]
        self.uploads = db["uploads"]

    def ensure_indexes(self) -> None:
        self.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        self.files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        self.uploads.create_index([("job_id", ASCENDING), ("touched_at", ASCENDING)])

    # whole files ----------------------------------------------------------
    def put(self, data: bytes, kind: str, file_id: object = None) -> object:
        """Store ``data`` as a GridFS file; its id. Chunks first, the files document last."""
        file_id = ObjectId() if file_id is None else file_id
        view = memoryview(data)
        total = chunks_of(len(data))
        try:
            for first in range(0, total, 16):  # at most 8 MB per insert, so a copy of at most that is held
                self.chunks.insert_many(
                    [
                        {
                            "files_id": file_id,
                            "n": n,
                            "data": Binary(bytes(view[n * CHUNK_BYTES : (n + 1) * CHUNK_BYTES])),
                        }
                        for n in range(first, min(first + 16, total))
                    ],
                    ordered=False,
                )
            self._seal(file_id, len(data), kind)
        except PyMongoError:  # no half-written file stays behind (best effort), then the error as it was
            with contextlib.suppress(PyMongoError):
                self.delete([file_id])
            raise
        return file_id

    def _seal(self, file_id: object, size: int, kind: str) -> None:
        self.files.insert_one(
            {
                "_id": file_id,
                "length": size,
                "chunkSize": CHUNK_BYTES,
                "filename": kind,
                "uploadDate": datetime.datetime.now(datetime.UTC),
            }
        )

    def read(self, file_id: object, size: int) -> bytearray:
        """A whole file into one buffer, chunk by chunk (so it is held once, not twice)."""
        out = bytearray(size)
        position = 0
        for chunk in self.chunks.find({"files_id": file_id}, {"data": True, "n": True}).sort("n", ASCENDING):
            data = chunk["data"]
            if chunk["n"] * CHUNK_BYTES != position or position + len(data) > size:
                raise ValueError(f"blob {file_id} is damaged at chunk {chunk['n']}")
            out[position : position + len(data)] = data
            position += len(data)
        if position != size:
            raise ValueError(f"blob {file_id} has {position} of its {size} bytes")
        return out

    def chunk(self, file_id: object, n: int) -> bytes | None:
        doc = self.chunks.find_one({"files_id": file_id, "n": n}, {"data": True})
        return bytes(doc["data"]) if doc else None

    def source(self, file_id: object, size: int) -> Source:
        """Random access by byte range, fetching only the chunks a range covers (one kept cached)."""
        cache: dict[int, bytes] = {}

        def chunk(n: int) -> bytes:
            if n not in cache:
                cache.clear()
                data = self.chunk(file_id, n)
                if data is None or len(data) != chunk_length(size, n):
                    raise Invalid(f"chunk {n} is missing or has the wrong length")
                cache[n] = data
            return cache[n]

        def read(offset: int, length: int) -> bytes:
            if offset < 0 or offset + length > size:
                raise Invalid("a read past the end of the upload")
            parts, end = [], offset + length
            while offset < end:
                n, within = divmod(offset, CHUNK_BYTES)
                piece = chunk(n)[within : within + end - offset]
                parts.append(piece)
                offset += len(piece)
            return b"".join(parts)

        return Source(size, read)

    def sha256(self, file_id: object) -> str:
        """Digest of a file's bytes in chunk order, one chunk in memory at a time."""
        h = hashlib.sha256()
        for chunk in self.chunks.find({"files_id": file_id}, {"data": True}).sort("n", ASCENDING):
            h.update(chunk["data"])
        return h.hexdigest()

    def delete(self, file_ids: Iterable[object]) -> None:
        ids = [i for i in file_ids if i is not None]
        if ids:
            self.files.delete_many({"_id": {"$in": ids}})
            self.chunks.delete_many({"files_id": {"$in": ids}})

    # uploads in chunks ----------------------------------------------------
    def stage(self, upload: dict, n: int, data: bytes, now: float) -> bool:
        """Keep chunk ``n`` of an upload; False if that very chunk was already here (a resend).

        A different chunk under the same number is a conflict: the upload's id
        includes its sha256, so two different contents cannot both be right.
        """
        if self.uploads.count_documents({"_id": upload["_id"]}, limit=1) == 0:
            # a client has one upload in progress per round: a new one replaces any other it started,
            # so a client can hold at most one update's worth of staging
            for other in self.uploads.find(
                {"job_id": upload["job_id"], "client_id": upload["client_id"], "round": upload["round"]}, {"_id": 1}
            ):
                self.drop_upload(other["_id"])
        self.uploads.update_one({"_id": upload["_id"]}, {"$set": {**upload, "touched_at": now}}, upsert=True)
        try:
            self.chunks.insert_one({"files_id": upload["_id"], "n": n, "data": Binary(data)})
            return True
        except DuplicateKeyError:
            held = self.chunks.find_one({"files_id": upload["_id"], "n": n}, {"data": True})
            if held is not None and bytes(held["data"]) == data:
                return False
            raise Conflict(
                f"chunk {n} was already received with different bytes; "
                f"an upload's chunks cannot change (start over with a new sha256)"
            ) from None

    def missing(self, upload_id: str, size: int) -> list[int]:
        have = {d["n"] for d in self.chunks.find({"files_id": upload_id}, {"n": True})}
        return [n for n in range(chunks_of(size)) if n not in have]

    def seal_upload(self, upload_id: str, size: int) -> bool:
        """Make a checked upload a GridFS file; False if another request sealed it first."""
        try:
            self._seal(upload_id, size, "update")
        except DuplicateKeyError:
            return False
        self.uploads.delete_one({"_id": upload_id})
        return True

    def drop_upload(self, upload_id: str) -> None:
        self.uploads.delete_one({"_id": upload_id})
        self.chunks.delete_many({"files_id": upload_id})

    def drop_stale_uploads(self, job_id: str, before: float, below_round: int | None = None) -> int:
        """Delete the unfinished uploads of a job not touched since ``before`` (or, when given, for
        rounds below ``below_round``, which can no longer count); how many."""
        query: dict = {"touched_at": {"$lt": before}}
        if below_round is not None:
            query = {"$or": [query, {"round": {"$lt": below_round}}]}
        stale = [d["_id"] for d in self.uploads.find({"job_id": job_id, **query}, {"_id": 1})]
        for upload_id in stale:
            if self.files.count_documents({"_id": upload_id}, limit=1) == 0:
                self.chunks.delete_many({"files_id": upload_id})
            self.uploads.delete_one({"_id": upload_id})
        return len(stale)
