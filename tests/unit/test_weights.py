import base64
import pickle

import numpy as np
import pytest

from flcore.edge.api import status_of
from flcore.errors import DomainError
from flcore.shared import weights as wcodec
from helpers import mdef, random_weights, tensor_spec


def test_round_trip_is_exact():
    w = random_weights()
    checked = wcodec.parse_update(wcodec.to_b64(w), mdef())
    parsed = wcodec.decode(checked.blob)
    for k in w:
        np.testing.assert_array_equal(parsed[k], w[k])
    assert checked.sha256 == wcodec.content_digest(w)


def test_content_digest_ignores_how_the_header_was_written():
    """A copy re-encoded with metadata or another tensor order is still the same content."""
    from safetensors.numpy import save

    w = random_weights()
    reordered = save({k: w[k] for k in reversed(list(w))}, metadata={"note": "mine, honestly"})
    assert (
        wcodec.parse_update(base64.b64encode(reordered).decode(), mdef()).sha256
        == wcodec.parse_update(wcodec.to_b64(w), mdef()).sha256
    )
    nudged = {**w, "fc2.bias": w["fc2.bias"] + np.float32(1e-3)}
    assert wcodec.content_digest(nudged) != wcodec.content_digest(w)


def _status(text: object, model: str = "cnn_mnist") -> int:
    with pytest.raises(DomainError) as err:
        wcodec.parse_update(text, mdef(model))
    return status_of(err.value)


def test_rejects_wrong_tensors():
    w = random_weights()
    bad_shape = {**w, "fc2.bias": np.zeros(11, np.float32)}
    bad_dtype = {**w, "fc2.bias": w["fc2.bias"].astype(np.float64)}
    missing = {k: v for k, v in w.items() if k != "fc1.weight"}
    extra = {**w, "fc3.weight": np.zeros(3, np.float32)}
    nan = {**w, "conv1.bias": np.full_like(w["conv1.bias"], np.nan)}
    inf = {**w, "conv1.bias": np.full_like(w["conv1.bias"], np.inf)}
    for case in (bad_shape, bad_dtype, missing, extra, nan, inf):
        assert _status(wcodec.to_b64(case)) == 400


def test_scaffold_updates_carry_one_control_tensor_per_weight():
    w = random_weights()
    full = {**w, **{"control/" + k: np.zeros_like(v) for k, v in w.items()}}
    checked = wcodec.parse_update(wcodec.to_b64(full), mdef(), ("control/",))
    assert wcodec.decode(checked.blob).keys() == full.keys()
    assert _status(wcodec.to_b64(full)) == 413  # twice what other strategies take
    with pytest.raises(DomainError) as err:  # the control part missing, or not finite
        wcodec.parse_update(wcodec.to_b64(w), mdef(), ("control/",))
    assert status_of(err.value) == 400
    with pytest.raises(DomainError) as err:
        wcodec.parse_update(
            wcodec.to_b64({**full, "control/fc2.bias": np.full(10, np.nan, np.float32)}), mdef(), ("control/",)
        )
    assert status_of(err.value) == 400


def test_rejects_what_is_not_safetensors():
    assert _status(base64.b64encode(pickle.dumps({"a": 1})).decode()) == 400
    assert _status("not base64 !!!") == 400
    assert _status("") == 400
    assert _status(123) == 400
    assert _status(base64.b64encode(b"\xff" * 64).decode()) == 400


def test_rejects_oversized_before_decoding():
    huge = "A" * (2 * mdef().nbytes)
    assert _status(huge) == 413


def test_cifar_model_spec_is_consistent():
    spec = tensor_spec("cnn_cifar10")
    assert spec["conv1.weight"] == (16, 3, 5, 5)
    assert spec["fc1.weight"][1] == 32 * 5 * 5
