"""A function process killed in the middle of an aggregation: the local stack restarts the
function, another invocation takes the round over within about the lease's 15 s, and the
round is aggregated exactly once, even when the dead aggregator's last write lands late."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import requests
from pymongo import MongoClient

from flcli.devstack import LocalStack, handler_pids
from flcli.memory import tree
from flcore.engine.lease import LEASE_S
from flcore.shared import weights as wcodec
from flcore.shared.aggregation import fedavg
from helpers import ADMIN, random_weights


@pytest.fixture
def own_stack(tmp_path, mongodb_url):
    """A function of its own: this test kills its processes."""
    stack = LocalStack(tmp_path)
    url = stack.start_function(
        mongodb_url, extra_env={"FL_DB_NAME": "takeover", "FL_ADMIN_TOKEN": ADMIN}, host="serverless-offline"
    )
    yield stack, url
    stack.stop()
    with MongoClient(mongodb_url) as client:
        client.drop_database("takeover")


def _post(url, action, body, token=None, timeout=40):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.post(f"{url}/{action}", json=body, headers=headers, timeout=timeout)
    return resp.status_code, resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}


def _wait(check, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def test_killed_aggregator_is_taken_over_and_its_late_commit_changes_nothing(own_stack, mongodb_url, capsys):
    stack, url = own_stack
    updates = [(random_weights(seed=i), 100 + 50 * i) for i in range(2)]
    _, job = _post(
        url,
        "start_training",
        {"num_clients": 2, "clients_per_round": 2, "rounds": 3, "weights": wcodec.to_b64(random_weights(seed=9))},
        ADMIN,
    )
    job_id = job["job_id"]
    subs = [_post(url, "subscribe", {"job_id": job_id})[1] for _ in range(2)]
    for sub, (weights, n) in zip(subs, updates):
        assert (
            _post(url, "submit", {"round": 1, "weights": wcodec.to_b64(weights), "num_examples": n}, sub["token"])[0]
            == 200
        )

    admin = MongoClient(mongodb_url, appname="fault-injector")
    db = admin["takeover"]
    # The aggregator's first findAndModify takes the lease; block its second, the commit, for 25 s.
    admin.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"skip": 1, "times": 1},
        data={
            "failCommands": ["findAndModify"],
            "appName": "serverless-fl",
            "blockConnection": True,
            "blockTimeMS": 25_000,
        },
    )
    armed = time.time()
    try:
        threading.Thread(target=lambda: _safe_post(url, "aggregate", {"job_id": job_id}), daemon=True).start()
        # the aggregator holds the lease and has written its model: it is waiting on its commit
        _wait(
            lambda: (
                db.jobs.find_one({"_id": job_id}).get("lease_owner")
                and db.models.count_documents({"job_id": job_id, "round": 1}) == 1
            ),
            20,
            "the aggregation",
        )
        zombie = db.jobs.find_one({"_id": job_id})["lease_owner"]
        victims = handler_pids(stack.function_proc.pid)
        assert victims
        _wait(lambda: victims <= stack.watchdog.steady, 5, "the watchdog seeing the handlers")
        for pid in tree(list(victims)):  # a handler, or the sh that node started it with, and what it runs
            os.kill(pid, signal.SIGKILL)
        killed = time.time()
        # the stack notices and restarts the function; pokes then take the round over
        _wait(
            lambda: _post(url, "aggregate", {"job_id": job_id}, ADMIN, timeout=5)[1]["jobs"][0]["round"] == 2,
            LEASE_S + 20,
            "the takeover",
        )
        took = time.time() - killed
        # let the dead aggregator's blocked commit reach the database: it must match nothing
        time.sleep(max(0.0, armed + 26 - time.time()))
    finally:
        admin.admin.command("configureFailPoint", "failCommand", mode="off")
    status = _post(url, "status", {"job_id": job_id}, ADMIN)[1]
    admin.close()
    with capsys.disabled():
        print(
            f"\naggregator killed holding the lease; function restarted {len(stack.watchdog.restarts)} time(s); "
            f"round taken over {took:.1f}s after the kill"
        )
    assert stack.watchdog.restarts, "the stack did not notice the dead handler"
    assert took < LEASE_S + 10
    assert status["round"] == 2 and [h["round"] for h in status["history"]] == [1]
    assert status["history"][0]["model_owner"] != zombie
    got = wcodec.from_b64(_post(url, "get_model", {"job_id": job_id, "round": 1}, ADMIN)[1]["weights"])
    expected = fedavg(updates)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)


def _safe_post(url, action, body):
    try:
        _post(url, action, body, ADMIN, timeout=60)
    except requests.RequestException:
        pass  # its handler is killed under it


def test_the_stack_restarts_a_crashed_serverless_offline(own_stack):
    stack, url = own_stack
    first = stack.function_proc
    os.killpg(first.pid, signal.SIGKILL)
    _wait(
        lambda: stack.function_proc is not first and _post(url, "status", {}, ADMIN, timeout=5)[0] in (200, 404),
        60,
        "the restart",
    )
    assert len(stack.watchdog.restarts) == 1
