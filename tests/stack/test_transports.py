"""Every way in that runs here, end to end against serverless-offline and the embedded database:
the Lambda invoke URL (as the container image's Runtime Interface Emulator exposes it) and boto3."""

from __future__ import annotations

import pytest

from clients.federated_client import FederatedClient
from clients.transport import Boto3Transport, FunctionError, HttpTransport, InvokeUrlTransport, make_transport
from flcli.operator import Operator
from helpers import ADMIN

FUNCTION = "serverless-fl-dev-api"


@pytest.fixture
def invoke_url(stack, function_url) -> str:
    return f"{stack.lambda_endpoint}/2015-03-31/functions/{FUNCTION}/invocations"


def test_make_transport_picks_by_url(monkeypatch):
    assert isinstance(make_transport("https://x.execute-api.eu-west-1.amazonaws.com/dev"), HttpTransport)
    url = "http://localhost:9000/2015-03-31/functions/function/invocations"
    assert isinstance(make_transport(url), InvokeUrlTransport)
    monkeypatch.setenv("FL_LAMBDA_ENDPOINT", "http://127.0.0.1:3002")
    t = make_transport("lambda://serverless-fl-prod-api")
    assert isinstance(t, Boto3Transport) and t.function_name == "serverless-fl-prod-api"


def _one_round(transport, function_url, tmp_path, monkeypatch) -> None:
    op = Operator(function_url, ADMIN)
    job_id = op.start_job(
        {"num_clients": 1, "clients_per_round": 1, "rounds": 1, "local_epochs": 1, "max_train_examples": 300}
    )["job_id"]
    monkeypatch.setenv("FL_JOB_ID", job_id)  # other tests' jobs share this database
    client = FederatedClient(transport, tmp_path / "c.json", "c")
    for _ in range(10):
        client.tick()
        if op.status(job_id)["state"] == "done":
            break
    st = op.status(job_id)
    assert st["state"] == "done" and st["history"][0]["clients"] == 1
    assert st["history"][0]["client_ids"] == [client.info["client_id"]]


def test_a_round_over_the_invoke_url(invoke_url, function_url, tmp_path, monkeypatch):
    _one_round(make_transport(invoke_url), function_url, tmp_path, monkeypatch)


def test_a_round_over_boto3(stack, function_url, tmp_path, monkeypatch):
    monkeypatch.setenv("FL_LAMBDA_ENDPOINT", stack.lambda_endpoint)
    _one_round(make_transport(f"lambda://{FUNCTION}"), function_url, tmp_path, monkeypatch)


def test_errors_come_back_as_statuses(invoke_url, stack, monkeypatch):
    for transport in (make_transport(invoke_url), Boto3Transport(FUNCTION, endpoint_url=stack.lambda_endpoint)):
        with pytest.raises(FunctionError) as err:
            transport.call("poll", {}, token="c-nobody.secret")
        assert err.value.status == 401
        with pytest.raises(FunctionError) as err:
            transport.call("start_training", {"num_clients": -1}, token=ADMIN)
        assert err.value.status == 400
