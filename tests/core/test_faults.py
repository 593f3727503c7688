"""Concurrency and database faults: no update lost or double-counted, nothing half-done."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pymongo import MongoClient

from flcore.edge import api
from flcore.shared import weights as wcodec
from flcore.shared.aggregation import fedavg
from helpers import call, new_job, random_weights, snapshot, subscribe_all


def test_many_concurrent_submits_count_once_and_aggregate_once(store, raw_db, capsys):
    n = 120
    job_id = new_job(num_clients=n, clients_per_round=n, rounds=2)
    subs = subscribe_all(job_id, n)
    updates = {s["client_id"]: (random_weights(seed=i), 10 + i) for i, s in enumerate(subs)}
    bodies = {cid: {"round": 1, "weights": wcodec.to_b64(w), "num_examples": k} for cid, (w, k) in updates.items()}

    def send(sub):
        return api.handle("submit", dict(bodies[sub["client_id"]]), {"Authorization": f"Bearer {sub['token']}"})

    # every client submits twice (a retry racing the original), all at once
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(send, subs + subs))
        polls = list(pool.map(lambda s: api.handle("poll", {}, {"Authorization": f"Bearer {s['token']}"}), subs))
    assert {status for status, _ in results + polls} == {200}
    accepted = sum(1 for _, p in results if p["accepted"])
    duplicates = sum(1 for _, p in results if p["duplicate"])
    job = store.get_job(job_id, history=True)
    with capsys.disabled():
        print(
            f"\nconcurrent submits: {len(results)} sent, {accepted} accepted, {duplicates} duplicates; "
            f"{len(job['history'])} aggregation(s) of round 1 with {job['history'][0]['clients']} updates"
        )
    assert accepted == n and duplicates == n
    assert raw_db.updates.count_documents({"job_id": job_id, "round": 1}) == n
    assert job["round"] == 2 and len(job["history"]) == 1
    assert job["history"][0]["clients"] == n and job["history"][0]["examples"] == sum(k for _, k in updates.values())
    got = wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])
    expected = fedavg(list(updates.values()))
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-7)


@pytest.fixture
def fail_point(mongodb_url):
    """Arm SecantusDB's failCommand for the function's connections only (appName filter)."""
    admin = MongoClient(mongodb_url, appname="fault-injector")

    def arm(commands: list[str], times: int = 1) -> None:
        admin.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": times},
            data={"failCommands": commands, "errorCode": 2, "appName": "serverless-fl"},
        )

    yield arm
    admin.admin.command("configureFailPoint", "failCommand", mode="off")
    admin.close()


def _running_job_with_updates(store, submit_all: bool):
    job_id = new_job(num_clients=3, clients_per_round=3, rounds=2)
    subs = subscribe_all(job_id, 3)
    if submit_all:
        for i, s in enumerate(subs):
            call(
                "submit", {"round": 1, "weights": wcodec.to_b64(random_weights(seed=i)), "num_examples": 10}, s["token"]
            )
    return job_id, subs


def test_fault_during_submit(store, raw_db, fail_point):
    job_id, subs = _running_job_with_updates(store, submit_all=False)
    body = {"round": 1, "weights": wcodec.to_b64(random_weights()), "num_examples": 10}
    before = snapshot(raw_db)
    fail_point(["insert"])
    status, payload = api.handle("submit", dict(body), {"Authorization": f"Bearer {subs[0]['token']}"})
    assert status == 503 and "database" in payload["error"]
    assert snapshot(raw_db) == before
    assert call("submit", dict(body), subs[0]["token"])["accepted"] is True  # the retry succeeds


@pytest.mark.parametrize("command", ["insert", "update", "find"])
def test_fault_during_aggregation(store, raw_db, fail_point, command):
    job_id, _ = _running_job_with_updates(store, submit_all=True)
    before = snapshot(raw_db)
    # "insert": writing the model's GridFS file; "update": its document; "find": loading the updates
    fail_point([command])
    status, _ = api.handle("aggregate", {"job_id": job_id}, {})
    assert status == 503
    assert snapshot(raw_db) == before  # no model, no history, and the lease given back
    job = call("aggregate", {"job_id": job_id})["jobs"][0]  # the retry succeeds at once
    assert job["round"] == 2
    assert len(call("status", {"job_id": job_id})["history"]) == 1
