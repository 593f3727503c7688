"""The OpenWhisk adapter against the parameter shapes OpenWhisk documents for web actions."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
from pymongo import MongoClient

from flcore.shared import weights as wcodec
from helpers import random_weights, snapshot
from server_ow.__main__ import main


def web(path: str, body: dict | None = None, headers: dict | None = None, **extra) -> dict:
    """A web action invoked with a JSON body: OpenWhisk merges the body's fields into params."""
    return {
        "__ow_method": "post",
        "__ow_path": path,
        "__ow_headers": {"content-type": "application/json", **(headers or {})},
        **(body or {}),
        **extra,
    }


def raw(path: str, text: str, b64: bool = False, headers: dict | None = None) -> dict:
    """A raw-http web action: the body arrives as ``__ow_body`` (base64 when binary)."""
    return {
        "__ow_method": "post",
        "__ow_path": path,
        "__ow_query": "",
        "__ow_headers": {"content-type": "application/octet-stream" if b64 else "application/json", **(headers or {})},
        "__ow_body": base64.b64encode(text.encode()).decode() if b64 else text,
    }


def payload(resp: dict) -> dict:
    assert resp["headers"]["Content-Type"] == "application/json"
    return json.loads(resp["body"])


def test_json_body_merged_into_params(store):
    resp = main(web("/start_training", {"num_clients": 2, "clients_per_round": 1}))
    assert resp["statusCode"] == 200
    job_id = payload(resp)["job_id"]
    resp = main(web("/status", {"job_id": job_id}))
    assert resp["statusCode"] == 200 and payload(resp)["config"]["num_clients"] == 2


def test_raw_body_plain_and_base64(store):
    assert main(raw("/start_training", json.dumps({"num_clients": 3, "clients_per_round": 3})))["statusCode"] == 200
    resp = main(raw("/start_training", json.dumps({"num_clients": 4, "clients_per_round": 2}), b64=True))
    assert resp["statusCode"] == 200 and payload(resp)["config"]["num_clients"] == 4
    bad = main(raw("/start_training", "{broken", b64=True))
    assert bad["statusCode"] == 400 and "JSON" in payload(bad)["error"]


def test_api_gateway_forwarded_url(store):
    params = web(
        "",
        {"num_clients": 2, "clients_per_round": 1},
        headers={"x-forwarded-url": "https://gw.example/api/123/fl/start_training"},
    )
    assert main(params)["statusCode"] == 200


def test_headers_carry_the_client_token(store):
    job = payload(main(web("/start_training", {"num_clients": 1, "clients_per_round": 1})))["job_id"]
    sub = payload(main(web("/subscribe", {"job_id": job})))
    assert main(web("/poll"))["statusCode"] == 401
    resp = main(web("/poll", headers={"authorization": f"Bearer {sub['token']}"}))
    assert resp["statusCode"] == 200 and payload(resp)["action"] == "train"


def test_settings_params_configure_and_are_not_request_fields(store, db_name, monkeypatch):
    monkeypatch.setenv("FL_ADMIN_TOKEN", "")
    resp = main(
        web(
            "/start_training",
            {"num_clients": 1, "clients_per_round": 1},
            FL_DB_NAME=db_name,
            MONGODB_URL=os.environ["MONGODB_URL"],
            FL_ADMIN_TOKEN="ow-secret",
        )
    )
    assert resp["statusCode"] == 401  # the deploy-time token now applies
    resp = main(
        web(
            "/start_training",
            {"num_clients": 1, "clients_per_round": 1},
            headers={"authorization": "Bearer ow-secret"},
            FL_ADMIN_TOKEN="ow-secret",
        )
    )
    assert resp["statusCode"] == 200


@pytest.mark.parametrize("bound, typed", [(20251123, "20251123"), (True, "true"), (False, "false")])
def test_a_token_bound_as_json_still_guards_the_operator_actions(store, raw_db, bound, typed, monkeypatch):
    """`wsk action update -p FL_ADMIN_TOKEN 20251123` binds a number: it must still be the token."""
    monkeypatch.delenv("FL_ADMIN_TOKEN", raising=False)
    before = snapshot(raw_db)
    resp = main(web("/start_training", {"num_clients": 1, "clients_per_round": 1}, FL_ADMIN_TOKEN=bound))
    assert resp["statusCode"] == 401
    resp = main(
        web(
            "/start_training",
            {"num_clients": 1, "clients_per_round": 1},
            FL_ADMIN_TOKEN=bound,
            headers={"authorization": "Bearer wrong"},
        )
    )
    assert resp["statusCode"] == 403
    assert snapshot(raw_db) == before
    resp = main(
        web(
            "/start_training",
            {"num_clients": 1, "clients_per_round": 1},
            FL_ADMIN_TOKEN=bound,
            headers={"authorization": f"Bearer {typed}"},
        )
    )
    assert resp["statusCode"] == 200
    assert "FL_ADMIN_TOKEN" not in os.environ  # settings are never written into the environment


@pytest.mark.parametrize(
    "name, bound",
    [
        ("FL_ADMIN_TOKEN", None),
        ("FL_ADMIN_TOKEN", 1.5),
        ("FL_ADMIN_TOKEN", ["x"]),
        ("FL_ADMIN_TOKEN", " padded "),
        ("FL_DB_NAME", None),
        ("FL_DB_NAME", "a/b"),
        ("FL_DB_TIMEOUT_MS", "soon"),
        ("MONGODB_URL", {"host": "x"}),
    ],
)
def test_an_unusable_setting_refuses_every_call(store, raw_db, name, bound):
    before = snapshot(raw_db)
    for params in (
        web("/start_training", {"num_clients": 1}, **{name: bound}),
        web("/status", **{name: bound}),
        raw("/subscribe", "{}") | {name: bound},
    ):
        resp = main(params)
        assert resp["statusCode"] == 500
        assert name in payload(resp)["error"] and "misconfigured" in payload(resp)["error"]
    assert "error" in main({"fl_tick": True, name: bound})  # the alarm says so too
    assert snapshot(raw_db) == before


def test_a_numeric_database_name_is_that_name(store, mongodb_url, monkeypatch):
    monkeypatch.delenv("FL_DB_NAME", raising=False)
    resp = main(
        web("/start_training", {"num_clients": 1, "clients_per_round": 1}, FL_DB_NAME=4711, MONGODB_URL=mongodb_url)
    )
    assert resp["statusCode"] == 200
    with MongoClient(mongodb_url) as client:
        assert client["4711"].jobs.find_one({"_id": payload(resp)["job_id"]}) is not None
        client.drop_database("4711")


def test_errors_and_unknown_paths(store):
    assert main(web("/nope"))["statusCode"] == 404
    assert main(web("/subscribe"))["statusCode"] == 404  # no job yet
    resp = main(web("/submit", {"round": 1}))
    assert resp["statusCode"] == 401 and payload(resp)["error"]


def test_alarm_trigger_and_plain_invoke(store):
    assert main({"fl_tick": True}) == {"jobs": []}
    out = main({"action": "start_training", "num_clients": 2, "clients_per_round": 1})
    assert out["statusCode"] == 200 and out["job_id"]


@pytest.mark.parametrize(
    "model, dataset, strategy, bound",
    [
        ("cnn_mnist", "mnist", "fedavg", 0.5),
        ("cnn_cifar10", "cifar10", "fedavg", 0.5),
        ("cnn_cifar10", "cifar10", "scaffold", 0.75),  # SCAFFOLD sends its control change too
    ],
)
def test_update_messages_fit_openwhisk_with_room(model, dataset, strategy, bound, capsys):
    weights = random_weights(model)
    if strategy == "scaffold":
        weights = {**weights, **{"control/" + k: v for k, v in random_weights(model, seed=1).items()}}
    body = {
        "round": 1,
        "weights": wcodec.to_b64(weights),
        "num_examples": 2400,
        "metrics": {
            "train_loss": 0.1,
            "train_accuracy": 0.9,
            "eval_loss": 0.2,
            "eval_accuracy": 0.9,
            "eval_examples": 600.0,
            "train_seconds": 20.0,
        },
    }
    size = len(json.dumps(body).encode())
    with capsys.disabled():
        print(f"\n{dataset} {strategy} submit message: {size} bytes ({size / 2**20:.3f} MiB of OpenWhisk's 1 MiB)")
    assert size < bound * 2**20


def test_devices_register_find_and_join_jobs_through_the_web_action(store):
    job = payload(
        main(
            web(
                "/create_job",
                {"num_clients": 1, "clients_per_round": 1, "name": "ow", "criteria": {"info.labels.site": "edge"}},
            )
        )
    )["job_id"]
    dev = payload(main(web("/register", {"info": {"datasets": {"mnist": 100}, "labels": {"site": "edge"}}})))
    auth = {"authorization": f"Bearer {dev['token']}"}
    offers = payload(main(web("/offers", headers=auth)))["jobs"]
    assert [o["job_id"] for o in offers] == [job] and offers[0]["name"] == "ow"
    joined = main(web("/join", {"job_id": job}, headers=auth))
    assert joined["statusCode"] == 200 and payload(joined)["job_id"] == job
    listed = payload(main(web("/list_jobs", {"state": "running"})))["jobs"]
    assert [j["job_id"] for j in listed] == [job] and listed[0]["clients"] == 1


def test_enrolment_token_bound_as_a_number_is_text(store, db_name):
    params = {"FL_DB_NAME": db_name, "MONGODB_URL": os.environ["MONGODB_URL"], "FL_ENROL_TOKEN": 20251123}
    assert main(web("/register", {"info": {}}, **params))["statusCode"] == 401
    ok = main(web("/register", {"info": {}}, headers={"authorization": "Bearer 20251123"}, **params))
    assert ok["statusCode"] == 200


def test_a_resnet18_update_travels_in_chunks_under_the_1_mib_limit(store, monkeypatch):
    """Every request and every reply of a chunked upload and download through the web action stays
    under OpenWhisk's 1 MiB, and the model that comes back is the average that went in."""
    from clients import transfer
    from helpers import mdef

    monkeypatch.setenv("FL_ADMIN_TOKEN", "ow-admin")
    admin = {"authorization": "Bearer ow-admin"}
    sizes: list[int] = []

    def ow_call(action: str, body: dict | None = None, headers: dict | None = None) -> dict:
        params = web(f"/{action}", body, headers)
        sizes.append(len(json.dumps(params).encode()))
        resp = main(params)
        sizes.append(len(resp["body"].encode()))
        assert resp["statusCode"] == 200, resp["body"][:300]
        return payload(resp)

    job = ow_call("create_job", {"model": "resnet18", "num_clients": 2, "clients_per_round": 2, "rounds": 1}, admin)[
        "job_id"
    ]
    spec = mdef("resnet18").spec
    sent = []
    subs = [ow_call("subscribe", {"job_id": job}) for _ in range(2)]
    for i, sub in enumerate(subs):
        auth = {"authorization": f"Bearer {sub['token']}"}
        rng = np.random.default_rng(i)
        w = {k: rng.standard_normal(s).astype(np.float32) * 0.01 for k, s in spec.items()}
        sent.append(w)
        reply = transfer.submit(
            lambda a, b=None, h=auth: ow_call(a, b, h), {"round": 1, "num_examples": 1000}, wcodec.encode(w)
        )
        assert reply["accepted"] is True
    ow_call("aggregate", {"job_id": job}, admin)
    reply = ow_call("get_model", {"job_id": job}, admin)
    assert reply["model_round"] == 1 and reply["chunked"]["weights"]["chunks"] == 86
    got = wcodec.decode(transfer.model_part(lambda a, b=None: ow_call(a, b, admin), reply))
    np.testing.assert_allclose(got["fc.weight"], (sent[0]["fc.weight"] + sent[1]["fc.weight"]) / 2, atol=1e-6)
    assert max(sizes) < 0.75 * 2**20, max(sizes)
    assert len(sizes) > 2 * (2 * 86 + 86)  # every chunk went through the adapter
