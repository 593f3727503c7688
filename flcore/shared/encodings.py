"""Lighter updates on the wire and at rest: a job's ``update_encoding``.

- ``float32``: the trained weights as they are (4 bytes a value).
- ``float16``: the trained weights rounded to half precision (2 bytes a value).
- ``int8``: the *change* from the model the client received, each tensor quantized to
  int8 with its own scale (``scale/<name>``, float32: 1 byte a value). With
  ``error_feedback`` the client carries what rounding lost into its next update.
  In a round whose model the function does not hold (a job's seeded initial
  model, which clients build themselves) the change has nothing to be added to,
  so the client sends its weights in float16 instead.

Clients encode (:func:`encode`); the function checks the form against the job's
encoding when the update arrives (:func:`allowed_forms`) and stores it as sent;
aggregation restores each update to float32 weights as it folds it
(:func:`restore`). Everything here is numpy: the function and the clients share it.
"""

from __future__ import annotations

import numpy as np

Weights = dict[str, np.ndarray]

ENCODINGS = ("float32", "float16", "int8")
SCALE = "scale/"
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I8": np.dtype("i1"), "U32": np.dtype("<u4")}
_BYTES = {"F32": 4, "F16": 2, "I8": 1, "U32": 4}
# secure aggregation's form ("masked"): each model tensor as uint32 modulo 2**32, plus these two one-value
# tensors, masked like the rest (the device's weight in the average; whether its change fitted under the
# DP clipping norm). See flcore.shared.secagg.masking.
MASKED_EXTRA = ("secagg/weight", "secagg/unclipped")


def allowed_forms(encoding: str) -> tuple[str, ...]:
    """The forms (see :func:`form_of`) an update of a job with this encoding may take."""
    return {"float32": ("float32",), "float16": ("float16",), "int8": ("int8", "float16")}[encoding]


def value_dtype(form: str) -> str:
    """The safetensors dtype of a model tensor in an update of this form."""
    return {"float32": "F32", "float16": "F16", "int8": "I8", "masked": "U32"}[form]


def form_of(dtypes: set[str]) -> str | None:
    """Which form the model tensors' dtypes make (all F32, all F16, all I8), or None if mixed."""
    forms = {"F32": "float32", "F16": "float16", "I8": "int8", "U32": "masked"}
    return forms[next(iter(dtypes))] if len(dtypes) == 1 and next(iter(dtypes)) in forms else None


def nbytes(dtype: str) -> int:
    return _BYTES[dtype]


def encode(weights: Weights, encoding: str, base: Weights | None, residual: Weights | None = None) -> Weights:
    """The tensors a client sends for its trained ``weights`` (float32), given the ``base`` it was sent
    (None: the function holds no model for this round); ``residual`` (error feedback, int8) is
    updated in place with what this update's rounding lost."""
    if encoding == "float32":
        return weights
    if encoding == "float16" or base is None:
        return {k: v.astype(np.float16) for k, v in weights.items()}
    out: Weights = {}
    for name, w in weights.items():
        change = w.astype(np.float32) - base[name]
        if residual is not None:
            change = change + residual.get(name, 0.0)
        peak = float(np.abs(change).max()) if change.size else 0.0
        scale = np.float32(peak / 127.0 if peak > 0 else 1.0)
        q = np.clip(np.rint(change / scale), -127, 127).astype(np.int8)
        if residual is not None:
            residual[name] = (change - q.astype(np.float32) * scale).astype(np.float32)
        out[name] = q
        out[SCALE + name] = np.array([scale], dtype=np.float32)
    return out


def restore(tensors: Weights, base: Weights | None) -> Weights:
    """Float32 weights from an update as stored: float32 as it is, float16 widened, int8 changes added
    to ``base`` (the model the round's clients received)."""
    out: Weights = {}
    for name, t in tensors.items():
        if name.startswith(SCALE):
            continue
        if t.dtype == np.int8:
            if base is None:
                raise ValueError("an int8 update needs the model it changes")
            out[name] = (base[name] + t.astype(np.float32) * tensors[SCALE + name][0]).astype(np.float32)
        else:
            out[name] = t if t.dtype == np.float32 else t.astype(np.float32)
    return out


def needs_base(encoding: str) -> bool:
    """Whether restoring this encoding's updates needs the model the clients received."""
    return encoding == "int8"


def lossy(encoding: str) -> bool:
    return encoding != "float32"
