"""The client's side of moving models and updates of any size (see :mod:`flcore.actions.transfer`).

Small ones travel inline in one request; larger ones in ``CHUNK_BYTES`` pieces,
each request small enough for every platform. Each chunk request is idempotent,
so the transport's retries make uploads and downloads resumable.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from flcore.shared.datasets import CHUNK_BYTES

Call = Callable[[str, dict], dict]


def model_part(call: Call, reply: dict, key: str = "weights") -> bytes | None:
    """A ``get_model`` reply's part as bytes: inline, or fetched chunk by chunk and checked by its sha256."""
    if reply.get(key) is not None:
        return base64.b64decode(reply[key])
    meta = (reply.get("chunked") or {}).get(key)
    if meta is None:
        return None
    size = meta["size"]
    buf = bytearray(size)
    position = 0
    for index in range(meta["chunks"]):
        got = call("get_chunk", {"job_id": reply["job_id"], "round": reply["model_round"], "part": key, "index": index})
        data = base64.b64decode(got["data"])
        if position + len(data) > size:
            raise ValueError(f"chunk {index} of the {key} goes past its {size} bytes")
        buf[position : position + len(data)] = data
        position += len(data)
    if position != size or hashlib.sha256(buf).hexdigest() != meta["sha256"]:
        raise ValueError(f"the downloaded {key} does not match its sha256")
    return bytes(buf)


def submit(call: Call, body: dict, blob: bytes) -> dict:
    """``submit`` an update's safetensors bytes with ``body``: inline, or uploaded in chunks first."""
    if len(blob) <= CHUNK_BYTES:
        return call("submit", {**body, "weights": base64.b64encode(blob).decode("ascii")})
    declared = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    view = memoryview(blob)
    for index in range(-(-len(blob) // CHUNK_BYTES)):
        piece = view[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
        call(
            "upload_chunk",
            {"round": body["round"], **declared, "index": index, "data": base64.b64encode(piece).decode("ascii")},
        )
    return call("submit", {**body, "upload": declared})
