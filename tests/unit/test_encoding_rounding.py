"""Update encodings: what a client sends is restored to within the encoding's rounding, and error
feedback carries what rounding lost into the next update."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.shared import encodings
from flcore.shared import weights as wcodec
from helpers import random_weights


def _trained(base: dict, seed: int, step: float = 0.01) -> dict:
    rng = np.random.default_rng(seed)
    return {k: (v + step * rng.standard_normal(v.shape)).astype(np.float32) for k, v in base.items()}


@pytest.mark.parametrize("encoding, bytes_per_value", [("float32", 4), ("float16", 2), ("int8", 1)])
def test_each_encoding_restores_what_was_trained_within_its_rounding(encoding, bytes_per_value):
    base = random_weights(seed=1)
    trained = _trained(base, seed=2)
    sent = encodings.encode(trained, encoding, base)
    restored = encodings.restore(wcodec.decode(wcodec.encode(sent)), base)
    values = sum(v.size for v in base.values())
    assert len(wcodec.encode(sent)) == pytest.approx(bytes_per_value * values, rel=0.05)
    for name, w in trained.items():
        change = np.abs(w - base[name]).max()
        error = np.abs(restored[name] - w).max()
        if encoding == "float32":
            assert error == 0
        elif encoding == "float16":
            assert error <= np.abs(w).max() * 2**-11 + 1e-7  # half precision's rounding
        else:
            assert error <= change / 127 / 2 + 1e-7  # half a quantization step of the change


def test_int8_without_the_model_received_sends_float16_weights():
    trained = random_weights(seed=3)
    sent = encodings.encode(trained, "int8", base=None)
    assert {v.dtype for v in sent.values()} == {np.dtype(np.float16)}
    with pytest.raises(ValueError, match="needs the model"):
        encodings.restore(encodings.encode(trained, "int8", random_weights(seed=4)), None)


def test_error_feedback_carries_the_rounding_into_the_next_update():
    """Over many rounds of the same small change, what arrives adds up to what was trained only with
    error feedback: without it, a change below half a step is lost every time."""
    base = {"w": np.zeros(1000, dtype=np.float32)}
    big = np.zeros(1000, dtype=np.float32)
    big[0] = 1.0  # sets the scale: 1/127 per step
    step = {"w": big + np.float32(0.001)}  # the other values change by 0.001, below half a step (0.0039)
    for feedback in (False, True):
        residual: dict | None = {} if feedback else None
        total = np.zeros(1000, dtype=np.float32)
        for _ in range(20):
            sent = encodings.encode({"w": base["w"] + step["w"]}, "int8", base, residual)
            total += encodings.restore(sent, base)["w"] - base["w"]
        moved = total[1:].mean()
        if feedback:
            assert moved == pytest.approx(0.02, rel=0.2)  # 20 rounds of 0.001 arrived
        else:
            assert moved == 0.0  # every one was rounded away
