"""Devices with their own CSV files as real client processes on the local stack: a regression and a
classification end to end, predict for rows in the function against each device's own torch model."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import requests

from flcli import devices, flctl
from flcli.operator import Operator
from helpers import ADMIN, HOUSES, house_rows, wait_until


@pytest.fixture(scope="module")
def device_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    rng = np.random.default_rng(0)
    return {
        name: devices.write_device(root / name, "houses", HOUSES, house_rows(rng, 150, s))
        for name, s in (("a", 0), ("b", 1))
    }


def device_predictions(port, rows_, which="global"):
    reply = requests.post(f"http://127.0.0.1:{port}/predict", json={"rows": rows_, "model": which}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


ASK = [{"size": 150, "rooms": 4, "town": "north"}, {"size": "70.5", "rooms": None, "town": "nowhere"}]


def test_a_regression_on_the_devices_own_rows_learns_and_predicts_as_the_devices_do(
    function_url, tmp_path, device_files
):
    data = {"name": "houses", "task": "regression", "target": "price", "transform": "log1p", "exclude": ["kind"]}
    op = Operator(function_url, ADMIN)
    body = {"data": data, "num_clients": 2, "clients_per_round": 2, "rounds": 4, "local_epochs": 5, "lr": 0.05,
            "batch_size": 16, "model": "mlp"}  # fmt: skip
    job_id = op.call("create_job", body)["job_id"]
    with devices.running(function_url, device_files, tmp_path / "state", tmp_path / "logs") as procs:
        status = wait_until(lambda: (s := op.status(job_id))["state"] in ("done", "stopped") and s, "the job", 120, 0.5)
        assert status["state"] == "done", status.get("stopped_because")
        first, last = status["history"][0]["metrics"], status["history"][-1]["metrics"]
        assert last["eval_rmse"] < first["eval_rmse"] / 3  # learnt, in the trained scale
        assert last["eval_r2"] > 0.8 and "eval_rmse_units" in last and "local_rmse" in last
        assert set(status["history"][-1]["per_client"]) == set(status["history"][-1]["client_ids"])
        assert [f[0] for f in status["schema"]["features"]] == ["size", "rooms", "town"]
        # the function's numpy predict and each device's torch model agree on the same global model
        got = op.call("predict", {"job_id": job_id, "rows": ASK})
        ports = _ports(tmp_path, device_files)
        for name, port in ports.items():
            mine = wait_until(lambda p=port: _done_model(p, got["model_round"]), f"{name}'s final model", 30, 0.2)
            np.testing.assert_allclose(device_predictions(port, ASK)["predictions"], got["predictions"], rtol=1e-4)
            assert mine
        assert 1e5 < got["predictions"][0] < 1e6  # dollars, not log dollars
        ens = op.call("predict", {"job_id": job_id, "rows": ASK, "mode": "ensemble"})
        assert ens["models"] == 2 and np.all(np.isfinite(ens["predictions"]))
        assert all(p.poll() is None for p in procs)
    # the operator's own file, scored through predict and recorded with the job
    held = devices.write_device(tmp_path / "mine", "houses", HOUSES, house_rows(np.random.default_rng(9), 80, 0.5))
    argv = ["jobs", "evaluate", job_id, str(held.parent / "houses.csv"), "--report", "--json"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert flctl.main([*argv, "--url", function_url, "--token", ADMIN]) == 0
    got = json.loads(out.getvalue())
    assert got["rows"] == 80 and got["model_round"] == 4 and got["test_r2"] > 0.8 and got["test_rmse_units"] > 1000
    assert op.status(job_id)["history"][-1]["reported"]["test_rmse"] == got["test_rmse"]


def _ports(tmp_path, device_files) -> dict[str, int]:
    """Each device's Flask port, as its log says."""
    out = {}
    for name in device_files:
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        out[name] = int(log.split(" listening on http://127.0.0.1:")[1].split(",")[0])
    return out


def _done_model(port: int, rnd: int) -> bool:
    status = requests.get(f"http://127.0.0.1:{port}/status", timeout=10).json()
    return status.get("phase") == "done" and status.get("model_round") == rnd


def test_a_classification_of_any_number_of_classes_reports_accuracy_and_macro_f1(function_url, tmp_path, device_files):
    data = {"name": "houses", "task": "classification", "target": "kind", "features": ["size", "rooms", "town"]}
    op = Operator(function_url, ADMIN)
    body = {"data": data, "num_clients": 2, "clients_per_round": 2, "rounds": 4, "local_epochs": 5, "lr": 0.1,
            "batch_size": 16, "model": "mlp"}  # fmt: skip
    job_id = op.call("create_job", body)["job_id"]
    with devices.running(function_url, device_files, tmp_path / "state", tmp_path / "logs"):
        status = wait_until(lambda: (s := op.status(job_id))["state"] in ("done", "stopped") and s, "the job", 120, 0.5)
        assert status["state"] == "done", status.get("stopped_because")
        assert status["encoding"]["target"]["classes"] == ["big", "mid", "small"]
        last = status["history"][-1]["metrics"]
        assert last["eval_accuracy"] > 0.8 and 0 < last["eval_macro_f1"] <= 1 and "local_accuracy" in last
        got = op.call("predict", {"job_id": job_id, "rows": ASK})
        assert got["classes"] == ["big", "mid", "small"] and got["predictions"][0] == "big"
        port = _ports(tmp_path, device_files)["a"]
        wait_until(lambda: _done_model(port, got["model_round"]), "a's final model", 30, 0.2)
        mine = device_predictions(port, ASK)
        np.testing.assert_allclose(mine["probabilities"], got["probabilities"], atol=1e-4)


def test_a_job_stopped_while_devices_train_leaves_them_no_error_and_says_why(function_url, tmp_path, device_files):
    data = {"name": "houses", "task": "regression", "target": "price", "exclude": ["kind"], "compare_local": False}
    op = Operator(function_url, ADMIN)
    body = {"data": data, "num_clients": 2, "clients_per_round": 2, "rounds": 50, "local_epochs": 400, "lr": 0.01,
            "batch_size": 16, "model": "mlp"}  # fmt: skip
    job_id = op.call("create_job", body)["job_id"]
    with devices.running(function_url, device_files, tmp_path / "state", tmp_path / "logs"):
        ports = wait_until(lambda: _listening(tmp_path, device_files), "the devices' ports", 60, 0.2)
        wait_until(lambda: op.status(job_id)["round"] >= 2, "round 2", 120, 0.2)
        op.call("stop_job", {"job_id": job_id, "reason": "enough for this test"})
        said = f"job {job_id} is stopped: enough for this test"
        for name, port in ports.items():
            log = tmp_path / "logs" / f"{name}.log"
            wait_until(lambda f=log: said in f.read_text(), f"{name} to hear of the stop", 60, 0.2)
            st = requests.get(f"http://127.0.0.1:{port}/status", timeout=10).json()
            assert "last_error" not in st and st["errors"] == 0, st


def _listening(tmp_path, device_files) -> dict[str, int] | None:
    try:
        return _ports(tmp_path, device_files)
    except (IndexError, FileNotFoundError):
        return None
