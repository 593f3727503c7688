"""Bad input gets a clear error and changes nothing."""

from __future__ import annotations

import pytest

from conftest import random_weights, snapshot
from flcore import api
from flcore import weights as wcodec
from test_protocol import call, new_job, subscribe_all


@pytest.mark.parametrize("raw, status", [
    ("{not json", 400), ("[1, 2]", 400), ('"text"', 400), ('{"a": NaN}', 400),
    (b"\xff\xfe", 400), ("x" * (api.MAX_BODY_BYTES + 1), 413),
])
def test_malformed_bodies(store, raw_db, raw, status):
    new_job()
    before = snapshot(raw_db)
    code, payload = api.handle("start_training", raw, {})
    assert code == status and payload["error"]
    assert snapshot(raw_db) == before


@pytest.mark.parametrize("body, status", [
    ({"num_clients": 0}, 400), ({"num_clients": "20"}, 400), ({"rounds": 1.5}, 400), ({"lr": -1}, 400),
    ({"lr": 1e309}, 400), ({"dataset": "imagenet"}, 400), ({"clients_per_round": 30}, 400),
    ({"batch_size": True}, 400), ({"partition": "weird"}, 400), ({"weights": "AAAA"}, 400),
    # CIFAR-10 weights for an MNIST job: larger than the job's model can be
    ({"weights": wcodec.to_b64(random_weights("cnn_cifar10"))}, 413),
    ({"dataset": "cifar10", "weights": wcodec.to_b64(random_weights("cnn_mnist"))}, 400),
])
def test_start_training_refuses_bad_config(store, raw_db, body, status):
    before = snapshot(raw_db)
    assert "error" in call("start_training", body, expect=status)
    assert snapshot(raw_db) == before


def test_unknown_action(store):
    code, payload = api.handle("drop_database", {}, {})
    assert code == 404 and "unknown action" in payload["error"]


def test_operator_token_is_required_when_set(store, raw_db, monkeypatch):
    monkeypatch.setenv("FL_ADMIN_TOKEN", "s3cret")
    before = snapshot(raw_db)
    assert api.handle("start_training", {}, {})[0] == 401
    assert api.handle("start_training", {}, {"Authorization": "Bearer wrong"})[0] == 403
    assert snapshot(raw_db) == before
    code, payload = api.handle("start_training", {"num_clients": 2, "clients_per_round": 1},
                               {"authorization": "bearer s3cret"})
    assert code == 200 and payload["job_id"]


def test_client_tokens(store, raw_db):
    job_a, job_b = new_job(), new_job()
    a = subscribe_all(job_a, 1)[0]
    b = subscribe_all(job_b, 1)[0]
    before = snapshot(raw_db)
    assert call("poll", expect=401)
    assert call("poll", token="garbage", expect=401)
    assert call("poll", token=a["client_id"] + ".forged", expect=401)
    assert call("poll", token=b["token"].split(".")[0] + "." + a["token"].split(".")[1], expect=401)
    assert call("status", {"job_id": job_b}, token=a["token"], expect=403)
    assert call("get_model", {"job_id": job_b}, token=a["token"], expect=403)
    assert snapshot(raw_db) == before
    assert call("status", {}, token=a["token"])["job_id"] == job_a


@pytest.mark.parametrize("body", [
    {"round": "1", "num_examples": 10}, {"round": 1, "num_examples": 0}, {"round": 1, "num_examples": -5},
    {"round": 1, "num_examples": 10**12}, {"round": 1, "num_examples": 10, "metrics": {"loss": "x"}},
    {"round": 1, "num_examples": 10, "metrics": {"$where": 1}}, {"round": 1, "num_examples": 10, "metrics": [1]},
    {"round": 1, "num_examples": 10, "weights": None},
])
def test_submit_validation(store, raw_db, body):
    job_id = new_job(num_clients=1, clients_per_round=1)
    sub = subscribe_all(job_id, 1)[0]
    body = {"weights": wcodec.to_b64(random_weights()), **body}
    before = snapshot(raw_db)
    assert "error" in call("submit", body, sub["token"], expect=400)
    assert snapshot(raw_db) == before


def test_get_model_by_round(store):
    job_id = new_job()
    assert call("get_model", {"job_id": job_id, "round": 0})["model_round"] == 0
    call("get_model", {"job_id": job_id, "round": 1}, expect=404)
    call("get_model", {"job_id": job_id, "round": "0"}, expect=404)


def test_database_down_is_a_503(monkeypatch):
    monkeypatch.setenv("MONGODB_URL", "mongodb://127.0.0.1:9/?directConnection=true")
    monkeypatch.setenv("FL_DB_TIMEOUT_MS", "300")
    code, payload = api.handle("status", {}, {})
    assert code == 503 and "database" in payload["error"]
