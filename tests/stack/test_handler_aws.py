"""The Lambda adapter against the event shapes API Gateway (REST proxy) and EventBridge send."""

from __future__ import annotations

import base64
import json

import pytest

from flcore.edge.settings import Settings
from server_aws import handler as handler_module
from server_aws.handler import handler


@pytest.fixture(autouse=True)
def settings_of_this_test(monkeypatch):
    """The handler reads its settings once per container; each test here has its own database."""
    monkeypatch.setattr(handler_module, "SETTINGS", Settings.from_env)


def rest_event(path: str, body: str | None, headers: dict | None = None, b64: bool = False) -> dict:
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"resourcePath": path, "httpMethod": "POST", "stage": "dev", "path": f"/dev{path}"},
        "body": base64.b64encode(body.encode()).decode() if (b64 and body is not None) else body,
        "isBase64Encoded": b64,
    }


def test_start_and_status_through_the_handler(store):
    resp = handler(rest_event("/start_training", json.dumps({"num_clients": 2, "clients_per_round": 1})))
    assert resp["statusCode"] == 200 and resp["headers"]["Content-Type"] == "application/json"
    job_id = json.loads(resp["body"])["job_id"]
    resp = handler(rest_event("/status", json.dumps({"job_id": job_id}), b64=True))
    assert resp["statusCode"] == 200 and json.loads(resp["body"])["state"] == "waiting"


def test_errors_are_json_with_status(store):
    resp = handler(rest_event("/subscribe", "{oops"))
    assert resp["statusCode"] == 400 and "JSON" in json.loads(resp["body"])["error"]
    resp = handler(rest_event("/poll", None))
    assert resp["statusCode"] == 401
    resp = handler(rest_event("/nothing", "{}"))
    assert resp["statusCode"] == 404


def test_stage_prefixed_path_and_http_api_shape(store):
    resp = handler({"rawPath": "/prod/subscribe", "body": "{}", "headers": {}, "isBase64Encoded": False})
    assert resp["statusCode"] == 404 and "no job" in json.loads(resp["body"])["error"]


def test_scheduled_event_closes_rounds(store):
    event = {
        "version": "0",
        "id": "x",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123",
        "time": "2026-11-22T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {},
    }
    assert handler(event) == {"jobs": []}


def test_handler_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, server_aws.handler; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_scheduled_event_closes_a_round_nobody_pokes(store):
    from flcore.shared import weights as wcodec
    from helpers import call, new_job, random_weights, subscribe_all

    job_id = new_job(num_clients=2, clients_per_round=2)
    for i, sub in enumerate(subscribe_all(job_id, 2)):
        call("submit", {"round": 1, "weights": wcodec.to_b64(random_weights(seed=i)), "num_examples": 5}, sub["token"])
    assert store.get_job(job_id)["round"] == 1  # complete, but nobody has polled since
    out = handler({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}})
    assert out["jobs"] == [{"job_id": job_id, "state": "running", "round": 2}]
