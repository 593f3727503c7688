"""Weights <-> bytes with safetensors, and strict validation of what clients send.

safetensors holds only tensors, never code, so decoding an update cannot run
anything a client sent (pickle could).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from flcore.errors import ApiError
from flcore.specs import DTYPE, model_bytes, tensor_spec

Weights = dict[str, np.ndarray]

# Room for the safetensors JSON header on top of the raw tensor bytes.
_HEADER_SLACK = 4096


def encode(weights: Weights) -> bytes:
    """Serialise weights to safetensors bytes (tensor order kept by name)."""
    return _st_save({k: np.ascontiguousarray(v) for k, v in weights.items()})


def decode(blob: bytes) -> Weights:
    """Parse safetensors bytes we stored ourselves (trusted, already validated)."""
    return _st_load(bytes(blob))


def to_b64(weights: Weights) -> str:
    return b64(encode(weights))


def b64(blob: bytes) -> str:
    """Stored bytes as they travel in JSON."""
    return base64.b64encode(blob).decode("ascii")


def from_b64(text: str) -> Weights:
    """Client-side counterpart of :func:`to_b64`."""
    return decode(base64.b64decode(text))


@dataclass(frozen=True)
class CheckedBlob:
    """An update that passed every check: its safetensors bytes and a digest of its content."""

    blob: bytes
    sha256: str


def content_digest(tensors: Weights) -> str:
    """SHA-256 over names, shapes and values in name order: the same tensors give the
    same digest however the safetensors header was written, so a copy is a copy."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{t.dtype}:{list(t.shape)}\n".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def parse_update(text: object, model: str, prefixes: tuple[str, ...] = ()) -> CheckedBlob:
    """Decode and check an update from the network; its bytes and content digest.

    Every tensor must match the job's model exactly (names, shapes, float32)
    and be finite, so one bad client cannot poison the average. ``prefixes``
    name extra copies of the model's tensors the strategy expects (SCAFFOLD's
    ``control/``).
    """
    if not isinstance(text, str) or not text:
        raise ApiError(400, "weights must be a non-empty base64 string")
    limit = model_bytes(model) * (1 + len(prefixes)) + _HEADER_SLACK
    if len(text) > (limit * 4) // 3 + 8:
        raise ApiError(413, f"weights are larger than model {model!r} allows ({limit} bytes)")
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "weights are not valid base64") from None
    try:
        tensors = _st_load(blob)
    except Exception:  # safetensors raises its own error type for any malformed input
        raise ApiError(400, "weights are not a valid safetensors payload") from None
    check(tensors, model, prefixes)
    return CheckedBlob(blob, content_digest(tensors))


def check(tensors: Weights, model: str, prefixes: tuple[str, ...] = ()) -> None:
    """Raise a 400 naming the first way ``tensors`` differs from the model's spec."""
    base = tensor_spec(model)
    spec = {p + name: shape for p in ("", *prefixes) for name, shape in base.items()}
    missing = sorted(set(spec) - set(tensors))
    extra = sorted(set(tensors) - set(spec))
    if missing or extra:
        raise ApiError(400, f"weights do not match model {model!r}: missing {missing}, unexpected {extra}")
    for name, shape in spec.items():
        t = tensors[name]
        if t.dtype != np.dtype(DTYPE):
            raise ApiError(400, f"tensor {name!r} has dtype {t.dtype}, expected {DTYPE}")
        if tuple(t.shape) != shape:
            raise ApiError(400, f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
        if not np.isfinite(t).all():
            raise ApiError(400, f"tensor {name!r} contains NaN or infinite values")
