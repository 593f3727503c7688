"""A job's update_encoding through the function: encoded updates are checked, stored as sent, and
aggregated as FedAvg of what they restore to; what cannot work is refused, saying why."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.shared import encodings
from flcore.shared import weights as wcodec
from flcore.shared.aggregation import fedavg
from helpers import call, random_weights, snapshot, subscribe_all

BASE = random_weights(seed=5)


def _job(encoding: str, **cfg) -> str:
    body = {"num_clients": 2, "clients_per_round": 2, "rounds": 3, "update_encoding": encoding, **cfg}
    return call("start_training", {**body, "weights": wcodec.to_b64(BASE)})["job_id"]


def _send(sub: dict, rnd: int, tensors: dict, n: int, expect: int = 200) -> dict:
    body = {"round": rnd, "weights": wcodec.to_b64(tensors), "num_examples": n, "metrics": {"train_loss": 0.1}}
    return call("submit", body, sub["token"], expect=expect)


@pytest.mark.parametrize("encoding", ["float16", "int8"])
def test_encoded_updates_aggregate_to_fedavg_of_what_they_restore_to(store, raw_db, encoding):
    job_id = _job(encoding)
    subs = subscribe_all(job_id, 2)
    trained = [{k: (v + 0.01 * (i + 1)).astype(np.float32) for k, v in BASE.items()} for i in range(2)]
    sent = [encodings.encode(t, encoding, BASE) for t in trained]
    for sub, tensors, n in zip(subs, sent, (100, 300)):
        _send(sub, 1, tensors, n)
    call("aggregate", {"job_id": job_id})
    model = wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])
    expected = fedavg([(encodings.restore(s, BASE), n) for s, n in zip(sent, (100, 300))])
    for name in BASE:
        np.testing.assert_allclose(model[name], expected[name], rtol=1e-6, atol=1e-7)
    sizes = [d["size"] for d in raw_db.updates.find({"job_id": job_id})]
    full = len(wcodec.encode(BASE))
    assert all(s < (0.55 if encoding == "float16" else 0.3) * full for s in sizes)  # stored as sent


def test_a_job_takes_only_its_encodings_forms(store, raw_db):
    f32 = _job("float32")
    sub = subscribe_all(f32, 2)[0]
    before = snapshot(raw_db)
    half = encodings.encode(BASE, "float16", None)
    assert "expected float32" in _send(sub, 1, half, 100, expect=400)["error"]
    int8_job = _job("int8")
    sub8 = subscribe_all(int8_job, 2)[0]
    assert "expected int8" in _send(sub8, 1, BASE, 100, expect=400)["error"]  # float32 is not an int8 job's
    _send(sub8, 1, half, 100)  # float16 weights are (a client without the model received sends them)
    assert snapshot(raw_db)["updates"] != before["updates"]


def test_int8_changes_are_refused_where_the_function_holds_no_model(store):
    body = {"num_clients": 2, "clients_per_round": 2, "rounds": 3, "update_encoding": "int8"}
    job_id = call("start_training", body)["job_id"]  # no initial weights: clients build the seeded model
    sub = subscribe_all(job_id, 2)[0]
    change = encodings.encode(random_weights(seed=6), "int8", BASE)
    assert "expected float16" in _send(sub, 1, change, 100, expect=400)["error"]


@pytest.mark.parametrize(
    "extra, why",
    [
        ({"strategy": "scaffold"}, "control variates must travel exactly"),
        ({"strategy": "median"}, "block by block"),
        ({"mode": "async", "update_encoding": "int8"}, "async mode folds updates trained on older models"),
    ],
)
def test_what_cannot_work_with_lossy_updates_is_refused(store, raw_db, extra, why):
    before = snapshot(raw_db)
    body = {"update_encoding": "int8", **extra} if "update_encoding" not in extra else extra
    if extra.get("strategy") == "scaffold":
        body["update_encoding"] = "float16"
    assert why in call("create_job", body, expect=400)["error"]
    assert snapshot(raw_db) == before
