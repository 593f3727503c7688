"""Bad input gets a clear error and changes nothing."""

from __future__ import annotations

import base64
import json

import pytest

from flcore.edge import api
from flcore.shared import weights as wcodec
from helpers import call, new_job, random_weights, snapshot, subscribe_all


@pytest.mark.parametrize(
    "raw, status",
    [
        ("{not json", 400),
        ("[1, 2]", 400),
        ('"text"', 400),
        ('{"a": NaN}', 400),
        (b"\xff\xfe", 400),
        ("x" * (api.MAX_BODY_BYTES + 1), 413),
    ],
)
def test_malformed_bodies(store, raw_db, raw, status):
    new_job()
    before = snapshot(raw_db)
    code, payload = api.handle("start_training", raw, {})
    assert code == status and payload["error"]
    assert snapshot(raw_db) == before


@pytest.mark.parametrize(
    "body, status",
    [
        ({"num_clients": 0}, 400),
        ({"num_clients": "20"}, 400),
        ({"rounds": 1.5}, 400),
        ({"lr": -1}, 400),
        ({"lr": 1e309}, 400),
        ({"dataset": "imagenet"}, 400),
        ({"clients_per_round": 30}, 400),
        ({"batch_size": True}, 400),
        ({"partition": "weird"}, 400),
        ({"weights": "AAAA"}, 400),
        # CIFAR-10 weights for an MNIST job: larger than the job's model can be
        ({"weights": wcodec.to_b64(random_weights("cnn_cifar10"))}, 413),
        ({"dataset": "cifar10", "weights": wcodec.to_b64(random_weights("cnn_mnist"))}, 400),
    ],
)
def test_start_training_refuses_bad_config(store, raw_db, body, status):
    before = snapshot(raw_db)
    assert "error" in call("start_training", body, expect=status)
    assert snapshot(raw_db) == before


@pytest.mark.parametrize(
    "body, named",
    [
        ({"num_client": 5}, "'num_client'"),
        ({"model": "resnet152"}, "unknown model 'resnet152'"),
        ({"$where": "sleep(1)"}, "'$where'"),
        ({"__proto__": {"admin": True}}, "'__proto__'"),
        ({"x" * 100_000: 1}, "'xxxxxxxx"),
        ({"proximal_mu": 0.1}, "a setting of fedprox, not fedavg"),
        ({"strategy": "fedavgm", "trim_fraction": 0.2}, "a setting of trimmed_mean, not fedavgm"),
    ],
)
def test_unknown_job_settings_are_refused_by_name(store, raw_db, body, named):
    before = snapshot(raw_db)
    error = call("start_training", body, expect=400)["error"]
    assert named in error, error
    assert snapshot(raw_db) == before


def test_a_config_read_back_is_a_valid_job_definition(store):
    """What status shows as a job's config can be sent to start_training again as it is."""
    job_id = new_job(strategy="fedadam", server_lr=0.05)
    config = call("status", {"job_id": job_id})["config"]
    assert config["server_lr"] == 0.05 and config["adam_tau"] == 1e-3
    assert call("start_training", config)["config"] == config


@pytest.mark.parametrize(
    "action, body",
    [
        ("subscribe", {"job_id": "\ud800"}),
        ("status", {"job_id": "\ud800"}),
        ("get_model", {"job_id": "\ud800"}),
        ("aggregate", {"job_id": "\udfff"}),
        ("start_training", {"dataset": "mni\ud800st"}),
        ("start_training", {"seed": 2**64}),
        ("aggregate", {"job_id": "x", "n": -(2**63) - 1}),
        ("status", {"a": json.loads("[" * 40 + "1" + "]" * 40)}),
        ("start_training", '{"num_clients": 1e400}'),
        ("submit", '{"round": 1' + "0" * 30 + "}"),
    ],
)
def test_values_the_database_cannot_hold_are_400_for_every_action(store, raw_db, action, body):
    before = snapshot(raw_db)
    code, reply = api.handle(action, body if isinstance(body, str) else json.dumps(body), {})
    assert code == 400, reply
    assert snapshot(raw_db) == before


@pytest.mark.parametrize(
    "extra",
    [
        {"round": 2**63},
        {"round": 10**30},
        {"round": -(2**63) - 1},
        {"metrics": {"a\u0000b": 1.0}},
        {"metrics": {"\ud800": 1.0}},
    ],
)
def test_submit_with_out_of_range_numbers_or_bad_keys_is_400(store, raw_db, extra):
    job_id = new_job(num_clients=1, clients_per_round=1)
    sub = subscribe_all(job_id, 1)[0]
    body = {"round": 1, "weights": wcodec.to_b64(random_weights()), "num_examples": 10, **extra}
    before = snapshot(raw_db)
    code, reply = api.handle("submit", json.dumps(body), {"Authorization": f"Bearer {sub['token']}"})
    assert code == 400, reply
    assert snapshot(raw_db) == before


def test_a_client_cannot_claim_more_examples_than_its_share(store, raw_db):
    """MNIST iid over 20 clients: 3,000 examples each, 2,700 of them trained on."""
    job_id = new_job(num_clients=20, clients_per_round=20)
    subs = subscribe_all(job_id, 20)
    body = {"round": 1, "weights": wcodec.to_b64(random_weights()), "num_examples": 100_000_000}
    before = snapshot(raw_db)
    error = call("submit", body, subs[0]["token"], expect=400)["error"]
    assert "between 1 and 2700" in error
    call("submit", {**body, "num_examples": 2701}, subs[0]["token"], expect=400)
    assert snapshot(raw_db) == before
    assert call("submit", {**body, "num_examples": 2700}, subs[0]["token"])["accepted"]


def test_a_copied_update_is_refused(store, raw_db):
    """Client B sends A's update byte for byte, or re-encoded: 409, and it does not count."""
    from safetensors.numpy import save

    job_id = new_job(num_clients=3, clients_per_round=3)
    a, b, c = subscribe_all(job_id, 3)
    weights = random_weights(seed=3)
    call("submit", {"round": 1, "weights": wcodec.to_b64(weights), "num_examples": 100}, a["token"])
    before = snapshot(raw_db)
    error = call(
        "submit", {"round": 1, "weights": wcodec.to_b64(weights), "num_examples": 100}, b["token"], expect=409
    )["error"]
    assert "identical" in error
    reencoded = save({k: weights[k] for k in reversed(list(weights))}, metadata={"from": "b"})
    call(
        "submit",
        {"round": 1, "weights": base64.b64encode(reencoded).decode(), "num_examples": 100},
        b["token"],
        expect=409,
    )
    assert snapshot(raw_db) == before
    # A's own retry is still a harmless duplicate, and B can send its own work
    assert call("submit", {"round": 1, "weights": wcodec.to_b64(weights), "num_examples": 100}, a["token"])["duplicate"]
    assert call(
        "submit", {"round": 1, "weights": wcodec.to_b64(random_weights(seed=4)), "num_examples": 100}, b["token"]
    )["accepted"]


def test_aggregate_of_an_unknown_job_is_404(store, raw_db):
    before = snapshot(raw_db)
    assert "no job" in call("aggregate", {"job_id": "job-nope"}, expect=404)["error"]
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
    code, payload = api.handle(
        "start_training", {"num_clients": 2, "clients_per_round": 1}, {"authorization": "bearer s3cret"}
    )
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


@pytest.mark.parametrize(
    "body",
    [
        {"round": "1", "num_examples": 10},
        {"round": 1, "num_examples": 0},
        {"round": 1, "num_examples": -5},
        {"round": 1, "num_examples": 10**12},
        {"round": 1, "num_examples": 10, "metrics": {"loss": "x"}},
        {"round": 1, "num_examples": 10, "metrics": {"$where": 1}},
        {"round": 1, "num_examples": 10, "metrics": [1]},
        {"round": 1, "num_examples": 10, "weights": None},
    ],
)
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
