"""Weights <-> bytes with safetensors, and strict validation of what clients send.

safetensors holds only tensors, never code, so decoding an update cannot run
anything a client sent (pickle could). The header is parsed and checked here,
against the job's model, before any tensor is read: an update is validated the
same way whether it arrived in one request or in chunks (:class:`Source`), one
tensor at a time, so memory stays at one tensor however large the model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import save as _st_save

from flcore.errors import DomainError, Invalid, TooLarge
from flcore.shared import encodings
from flcore.shared.modeldef import ModelDef

Weights = dict[str, np.ndarray]

# Room for the safetensors JSON header on top of the raw tensor bytes.
_HEADER_BASE = 4096
_HEADER_PER_TENSOR = 256
_F32 = np.dtype("<f4")


class Source:
    """Random access to an update's bytes, wherever they are (one request, or stored chunks)."""

    def __init__(self, size: int, read: Callable[[int, int], bytes | memoryview]):
        self.size = size
        self.read = read  # (offset, length) -> exactly those bytes

    @classmethod
    def of(cls, blob: bytes) -> Source:
        view = memoryview(blob)
        return cls(len(blob), lambda offset, n: view[offset : offset + n])


def encode(weights: Weights) -> bytes:
    """Serialise weights to safetensors bytes (tensor order kept by name)."""
    return _st_save({k: np.ascontiguousarray(v) for k, v in weights.items()})


def decode(blob: bytes | bytearray | memoryview) -> Weights:
    """Parse safetensors bytes we stored ourselves (trusted, already validated).

    The arrays are views of ``blob``, not copies, so an aggregation holds each
    update once.
    """
    src = Source.of(blob)
    return {name: read_tensor(src, *place) for name, place in layout(src).items()}


def read_tensor(src: Source, begin: int, end: int, shape, dtype: str = "F32") -> np.ndarray:
    """The tensor stored in bytes ``begin:end`` in its stored dtype (a view when ``src`` is in memory)."""
    return np.frombuffer(src.read(begin, end - begin), dtype=encodings.DTYPES[dtype]).reshape(shape)


def layout(src: Source) -> dict[str, tuple[int, int, list, str]]:
    """name -> (absolute begin, end, shape, dtype) of a file we stored ourselves (trusted)."""
    (n,) = struct.unpack("<Q", bytes(src.read(0, 8)))
    header = json.loads(bytes(src.read(8, n)))
    header.pop("__metadata__", None)
    return {
        name: (8 + n + info["data_offsets"][0], 8 + n + info["data_offsets"][1], info["shape"], info["dtype"])
        for name, info in header.items()
    }


def to_b64(weights: Weights) -> str:
    return b64(encode(weights))


def b64(blob: bytes) -> str:
    """Stored bytes as they travel in JSON."""
    return base64.b64encode(blob).decode("ascii")


def from_b64(text: str) -> Weights:
    """Client-side counterpart of :func:`to_b64`."""
    return decode(base64.b64decode(text))


def limit_bytes(mdef: ModelDef, prefixes: tuple[str, ...] = ()) -> int:
    """The largest safetensors file an update of this model (with these extra copies) can be."""
    copies = 1 + len(prefixes)
    extra = len(encodings.MASKED_EXTRA) * (_HEADER_PER_TENSOR + 4)  # a masked update's two extra values
    return mdef.nbytes * copies + _HEADER_BASE + _HEADER_PER_TENSOR * len(mdef.spec) * copies + extra


@dataclass(frozen=True)
class CheckedBlob:
    """An update that passed every check: its safetensors bytes and a digest of its content."""

    blob: bytes
    sha256: str


def content_digest(tensors: Weights) -> str:
    """SHA-256 over names, dtypes, shapes and values in name order: the same tensors give the
    same digest however the safetensors header was written, so a copy is a copy."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        _digest_tensor(h, name, np.ascontiguousarray(tensors[name]))
    return h.hexdigest()


def _digest_tensor(h, name: str, t: np.ndarray) -> None:
    """Add one contiguous tensor, named, to the content digest."""
    h.update(f"{name}:{t.dtype}:{list(t.shape)}\n".encode())
    h.update(memoryview(t).cast("B"))


def parse_update(
    text: object, mdef: ModelDef, prefixes: tuple[str, ...] = (), forms: tuple[str, ...] = ("float32",)
) -> CheckedBlob:
    """Decode and check an update sent in one request; its bytes and content digest.

    Every tensor must match the job's model exactly (names, shapes, and the dtype
    of one of the ``forms`` the job's encoding takes: see :mod:`flcore.shared.encodings`)
    and be finite, so one bad client cannot poison the average. ``prefixes``
    name extra copies of the model's tensors the strategy expects (SCAFFOLD's
    ``control/``).
    """
    if not isinstance(text, str) or not text:
        raise Invalid("weights must be a non-empty base64 string")
    limit = limit_bytes(mdef, prefixes)
    if len(text) > (limit * 4) // 3 + 8:
        raise TooLarge(f"weights are larger than model {mdef.name!r} allows ({limit} bytes)")
    blob = b64_field(text, "weights")
    return CheckedBlob(blob, validate(Source.of(blob), mdef, prefixes, forms))


def b64_field(text: str, field: str) -> bytes:
    """A request field's base64 text as bytes, or a 400 naming the field."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{field} is not valid base64") from None


def validate(src: Source, mdef: ModelDef, prefixes: tuple[str, ...] = (), forms: tuple[str, ...] = ("float32",)) -> str:
    """Check a safetensors file against the model, tensor by tensor; its content digest, or a 400."""
    offsets = _header(src, mdef, prefixes, forms)
    h = hashlib.sha256()
    for name in sorted(offsets):
        t = read_tensor(src, *offsets[name])
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise Invalid(f"tensor {name!r} contains NaN or infinite values")
        if name.startswith(encodings.SCALE) and not (t >= 0).all():
            raise Invalid(f"tensor {name!r} is a scale and must not be negative")
        _digest_tensor(h, name, t)
    return h.hexdigest()


_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "I8": "int8", "U32": "uint32"}


def _form(header: dict, mdef: ModelDef, forms: tuple[str, ...]) -> str:
    """The form the update's model tensors take, if the job's encoding takes it; else the form the
    job expects, so that the tensor-by-tensor check below names the first tensor that is wrong."""
    dtypes = {info.get("dtype") for name, info in header.items() if name in mdef.spec and isinstance(info, dict)}
    form = encodings.form_of(dtypes)
    if form is not None and form not in forms:  # a whole update in a form this job does not take
        first = next(name for name in mdef.spec if isinstance(header.get(name), dict))
        raise Invalid(
            f"this job takes updates as {' or '.join(forms)} (update_encoding), not {form}: tensor {first!r} has "
            f"dtype {header[first].get('dtype')}, expected {_DTYPE_NAMES[encodings.value_dtype(forms[0])]}"
        )
    return form if form in forms else forms[0]


def _invalid(why: str) -> DomainError:
    return Invalid(f"weights are not a valid safetensors payload: {why}")


def _header(
    src: Source, mdef: ModelDef, prefixes: tuple[str, ...], forms: tuple[str, ...] = ("float32",)
) -> dict[str, tuple[int, int, tuple, str]]:
    """name -> (absolute begin, end, shape, dtype) from a header that describes exactly the model's
    tensors (in one of the ``forms``) laid out back to back to the end of the file; a 400 naming the
    first thing that is not so."""
    spec = {p + name: shape for p in ("", *prefixes) for name, shape in mdef.spec.items()}
    entries = len(spec) * (2 if "int8" in forms else 1) + len(encodings.MASKED_EXTRA)  # int8: a scale per tensor
    if src.size < 8:
        raise _invalid("shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", bytes(src.read(0, 8)))
    if not 2 <= n <= _HEADER_BASE + _HEADER_PER_TENSOR * entries or 8 + n > src.size:
        raise _invalid(f"header length {n} does not fit a file of {src.size} bytes for this model")
    try:
        header = json.loads(bytes(src.read(8, n)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _invalid("header is not JSON") from None
    if not isinstance(header, dict):
        raise _invalid("header is not a JSON object")
    header.pop("__metadata__", None)
    form = _form(header, mdef, forms)
    dtypes = {name: encodings.value_dtype(form) if name in mdef.spec else "F32" for name in spec}
    if form == "int8":  # each tensor's scale beside it
        spec.update({encodings.SCALE + name: (1,) for name in mdef.spec})
        dtypes.update({encodings.SCALE + name: "F32" for name in mdef.spec})
    if form == "masked":  # secure aggregation: the weight and the clipping bit, masked too
        spec.update({name: (1,) for name in encodings.MASKED_EXTRA})
        dtypes.update({name: "U32" for name in encodings.MASKED_EXTRA})
    missing, extra = sorted(set(spec) - set(header)), sorted(set(header) - set(spec))
    if missing or extra:
        raise Invalid(
            f"weights do not match model {mdef.name!r}: missing {missing[:10]}, "
            f"unexpected {[k[:64] for k in extra[:10]]}"
        )
    out, spans = {}, []
    for name, shape in spec.items():
        info, dtype = header[name], dtypes[name]
        if not isinstance(info, dict) or info.get("dtype") != dtype:
            raise Invalid(
                f"tensor {name!r} has dtype {info.get('dtype') if isinstance(info, dict) else None}, "
                f"expected {_DTYPE_NAMES[dtype]}"
            )
        if info.get("shape") != list(shape):
            raise Invalid(f"tensor {name!r} has shape {info.get('shape')}, expected {list(shape)}")
        span = info.get("data_offsets")
        if not (
            isinstance(span, list)
            and len(span) == 2
            and all(type(v) is int for v in span)
            and 0 <= span[0]
            and span[1] - span[0] == encodings.nbytes(dtype) * int(np.prod(shape, dtype=np.int64))
        ):
            raise _invalid(f"data_offsets of {name!r} do not hold its {list(shape)} {_DTYPE_NAMES[dtype]} values")
        spans.append((span[0], span[1]))
        out[name] = (8 + n + span[0], 8 + n + span[1], shape, dtype)
    position = 0
    for begin, end in sorted(spans):  # back to back, no gaps, no overlaps, nothing after
        if begin != position:
            raise _invalid("tensor data overlap or leave gaps")
        position = end
    if 8 + n + position != src.size:
        raise _invalid(f"the tensors end at byte {8 + n + position} but the file has {src.size}")
    return out
