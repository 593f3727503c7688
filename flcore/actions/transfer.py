"""Models and updates of any size: one request when they fit, chunks when they do not.

**Upload.** A client whose update is larger than ``CHUNK_BYTES`` sends it with
``upload_chunk`` (``round``, ``size``, ``sha256`` of the whole, ``index``,
``data`` as base64), in any order, any number of times (a chunk sent again
changes nothing), then calls ``submit`` with ``upload: {size, sha256}`` instead
of ``weights``. Only then is the whole checked: every chunk present, the bytes'
sha256, and the safetensors header and every tensor against the job's model.
An update that fails is discarded with a 400 that says why; one never finished
is deleted once it is ``round_timeout_s`` old and never counts.

**Download.** ``get_model`` puts a part (``weights``, SCAFFOLD's ``tensors``)
inline when it fits in one chunk; otherwise it is null and ``chunked`` names
its ``size``, ``sha256`` and ``chunks``, which ``get_chunk`` serves one by one.

Every request, chunks included, stays well under OpenWhisk's 1 MB (512 KiB of
data is about 0.7 MB as base64 in JSON) and API Gateway's 6 MB limits.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from flcore.actions.request import MAX_ROUND, Request
from flcore.domain.job import Job
from flcore.errors import DomainError, Invalid, NotFound, TooLarge
from flcore.shared import clock, encodings
from flcore.shared import weights as wcodec
from flcore.shared.checks import is_int
from flcore.shared.datasets import CHUNK_BYTES
from flcore.storage.blobs import chunk_length, chunks_of
from flcore.storage.store import Store

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# get_model's reply key for each stored part of a model
PARTS = {"weights": "weights", "tensors": "shared"}


def upload_id(client_id: str, rnd: int, size: int, sha256: str) -> str:
    return f"up:{client_id}:{rnd}:{size}:{sha256}"


def _declared(raw: object, job: Job) -> tuple[int, str]:
    """An upload's ``size`` and ``sha256``, checked against what the job's model allows."""
    if not isinstance(raw, dict):
        raise Invalid("upload must be an object with size and sha256")
    size, sha = raw.get("size"), raw.get("sha256")
    limit = wcodec.limit_bytes(job.config.model_def, job.strategy.update_prefixes)
    if not is_int(size) or not 8 < size <= limit:
        kind = Invalid if not isinstance(size, int) or size <= 8 else TooLarge
        raise kind(f"upload size must be an integer from 9 to {limit} bytes (model {job.config.model_def.name!r})")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise Invalid("upload sha256 must be 64 lowercase hex digits")
    return size, sha


def upload_chunk(req: Request, may_submit: Callable[[Store, Job, dict, int], None]) -> dict:
    """Keep one chunk of a client's update for ``round``; nothing counts until ``submit``.

    ``may_submit`` is the submit rule (raises if this client may not submit for
    ``round`` now), so only clients whose update could count can store chunks.
    """
    store = req.store
    client = req.client
    job = Job.load(store, client["job_id"])
    rnd = req.integer("round", 0, MAX_ROUND)
    may_submit(store, job, client, rnd)
    size, sha = _declared({"size": req.body.get("size"), "sha256": req.body.get("sha256")}, job)
    total = chunks_of(size)
    index = req.integer("index", 0, total - 1)
    data = req.body.get("data")
    want = chunk_length(size, index)
    if not isinstance(data, str) or len(data) > (want + 2) // 3 * 4 + 4:
        raise Invalid(f"data must be base64 of chunk {index}'s {want} bytes")
    raw = wcodec.b64_field(data, "data")
    if len(raw) != want:
        raise Invalid(f"chunk {index} of a {size}-byte upload must have {want} bytes, not {len(raw)}")
    if store.has_update(job.id, rnd, client["_id"]):
        return {"received": index, "chunks": total, "duplicate": True}
    upload = {
        "_id": upload_id(client["_id"], rnd, size, sha),
        "job_id": job.id,
        "client_id": client["_id"],
        "round": rnd,
        "size": size,
        "sha256": sha,
    }
    fresh = store.blobs.stage(upload, index, raw, clock.now())
    return {"received": index, "chunks": total, "duplicate": not fresh}


def _forms(job: Job) -> tuple[str, ...]:
    """The forms an update of this job may take now: its encoding's, less int8 changes in a round
    whose model the function does not hold (a seeded initial model), which nothing could restore."""
    if job.config.secure_aggregation is not None:
        return ("masked",)  # secure aggregation: quantised and masked, nothing else
    forms = encodings.allowed_forms(job.config.update_encoding)
    return tuple(f for f in forms if f != "int8" or job.doc.get("model_round") is not None)


def checked_update(store: Store, job: Job, client: dict, rnd: int, body: dict) -> tuple[object, int, str]:
    """The submitted update, stored and checked: (blob id, size, content digest), or a 400.

    Inline ``weights`` are checked, then stored; an ``upload`` is checked where
    its chunks lie and then sealed into a GridFS file, without being copied.
    Writes before it raises: an upload whose bytes fail their digest or their
    checks is deleted (its chunks can never count), so the client sends it again.
    """
    mdef, prefixes, forms = job.config.model_def, job.strategy.update_prefixes, _forms(job)
    if "upload" not in body:
        checked = wcodec.parse_update(body.get("weights"), mdef, prefixes, forms)
        return store.blobs.put(checked.blob, "update"), len(checked.blob), checked.sha256
    if body.get("weights") is not None:
        raise Invalid("send weights or upload, not both")
    size, sha = _declared(body["upload"], job)
    uid = upload_id(client["_id"], rnd, size, sha)
    missing = store.blobs.missing(uid, size)
    if missing:
        raise Invalid(
            f"upload is missing chunks {missing[:20]}{' ...' if len(missing) > 20 else ''} "
            f"of {chunks_of(size)}; send them with upload_chunk, then submit again"
        )
    if store.blobs.sha256(uid) != sha:
        store.blobs.drop_upload(uid)
        raise Invalid("the uploaded bytes do not match the sha256 declared; the upload was discarded, send it again")
    try:
        digest = wcodec.validate(store.blobs.source(uid, size), mdef, prefixes, forms)
    except DomainError:
        store.blobs.drop_upload(uid)
        raise
    store.blobs.seal_upload(uid, size)
    return uid, size, digest


def model_parts(store: Store, doc: dict | None, reply: dict) -> None:
    """Fill ``reply`` with a stored model's parts: inline base64, or chunk descriptors for large ones."""
    for key, part in PARTS.items():
        meta = (doc or {}).get(part)
        if not meta:
            continue
        if meta["size"] <= CHUNK_BYTES:
            reply[key] = wcodec.b64(store.blobs.read(meta["id"], meta["size"]))
        else:
            reply[key] = None
            reply.setdefault("chunked", {})[key] = {
                "size": meta["size"],
                "sha256": meta["sha256"],
                "chunks": chunks_of(meta["size"]),
                "chunk_bytes": CHUNK_BYTES,
            }


def get_chunk(req: Request) -> dict:
    """One chunk of a stored model's part (``weights`` or ``tensors``) for ``round``."""
    job = req.visible_job(history=True)
    latest = job.doc.get("model_round")
    if latest is None:
        raise NotFound(f"job {job.id} has no model yet")
    rnd = req.integer("round", 0, latest)
    key = req.body.get("part", "weights")
    if key not in PARTS:
        raise Invalid(f"part must be one of {sorted(PARTS)}")
    meta = (req.store.model_doc(job.id, rnd, job.model_owner(rnd)) or {}).get(PARTS[key])
    if not meta:
        raise NotFound(f"no {key} stored for round {rnd}")
    index = req.integer("index", 0, chunks_of(meta["size"]) - 1)
    data = req.store.blobs.chunk(meta["id"], index)
    if data is None:
        raise NotFound(f"chunk {index} of round {rnd}'s {key} is gone")
    return {"round": rnd, "part": key, "index": index, "data": wcodec.b64(data)}
