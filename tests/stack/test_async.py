"""Buffered asynchronous mode (FedBuff) through the core, against a real database, and end to end
with real clients of uneven speed."""

from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest

from flcli.devstack import ROOT
from flcli.operator import Operator
from flcore.engine.fedbuff import staleness_weight
from flcore.shared import weights as wcodec
from helpers import ADMIN, call, random_weights, subscribe_all


def async_job(**cfg) -> tuple[str, dict]:
    x0 = random_weights(seed=99)
    body = {
        "mode": "async",
        "num_clients": 4,
        "clients_per_round": 4,
        "buffer_size": 2,
        "rounds": 50,
        "weights": wcodec.to_b64(x0),
        **cfg,
    }
    return call("create_job", body)["job_id"], x0


def poll(sub) -> dict:
    return call("poll", token=sub["token"])


def send(sub, version, weights, n=100, expect=200):
    """Submit, then let the job move on (as the next poll of any client would)."""
    body = {"round": version, "weights": wcodec.to_b64(weights), "num_examples": n, "metrics": {"train_loss": 0.5}}
    reply = call("submit", body, sub["token"], expect=expect)
    call("aggregate", {"job_id": sub["job_id"]})
    return reply


def model(job_id, version):
    return wcodec.from_b64(call("get_model", {"job_id": job_id, "round": version}, ADMIN)["weights"])


@pytest.fixture(autouse=True)
def operator(monkeypatch):
    monkeypatch.setenv("FL_ADMIN_TOKEN", ADMIN)


def test_staleness_weight_is_one_over_the_root_of_one_plus_staleness():
    assert staleness_weight(0, 0.5) == 1.0
    assert staleness_weight(3, 0.5) == pytest.approx(0.5)
    assert staleness_weight(8, 0.5) == pytest.approx(1 / 3)
    assert staleness_weight(1, 1.0) == pytest.approx(0.5)
    assert staleness_weight(7, 0.0) == 1.0  # exponent 0: staleness ignored


def test_versions_fold_buffers_with_stale_updates_shrunk_as_computed_by_hand(store):
    job_id, x0 = async_job()
    subs = subscribe_all(job_id, 4)
    assert [poll(s)["round"] for s in subs] == [0, 0, 0, 0]  # four slots, all on the initial model
    y = [random_weights(seed=i) for i in range(4)]
    send(subs[0], 0, y[0], n=100)
    assert store.get_job(job_id)["model_round"] == 0  # half a buffer: no version yet
    send(subs[1], 0, y[1], n=300)
    x1 = model(job_id, 1)
    for name in x0:  # staleness 0: plain FedAvg of the two
        np.testing.assert_allclose(x1[name], (100 * y[0][name] + 300 * y[1][name]) / 400, atol=1e-6)
    # the other two trained on version 0 as well: staleness 1, weight 1/sqrt(2), applied as changes to x1
    send(subs[2], 0, y[2], n=200)
    send(subs[3], 0, y[3], n=200)
    x2 = model(job_id, 2)
    w = 1 / np.sqrt(2)
    for name in x0:
        change = (200 * w * (y[2][name] - x0[name]) + 200 * w * (y[3][name] - x0[name])) / 400
        np.testing.assert_allclose(x2[name], x1[name] + change, atol=1e-6)
    entry = call("status", {"job_id": job_id}, ADMIN)["history"][1]
    assert entry["staleness_mean"] == 1 and entry["staleness_max"] == 1 and entry["closed"] == "buffer full"


def test_at_most_max_concurrency_clients_train_at_once_and_one_update_per_model(store):
    job_id, _ = async_job(num_clients=8, clients_per_round=8, max_concurrency=3, buffer_size=4)
    subs = subscribe_all(job_id, 8)
    replies = []
    threads = [threading.Thread(target=lambda s=s: replies.append(poll(s))) for s in subs]
    [t.start() for t in threads]
    [t.join() for t in threads]
    training = [s for s in subs if poll(s)["action"] == "train"]
    assert sum(r["action"] == "train" for r in replies) == 3 and len(training) == 3
    assert len(store.get_job(job_id)["picked"]) == 3
    send(training[0], 0, random_weights(seed=1))
    assert poll(training[0])["action"] == "wait"  # it already trained on the newest model
    assert sum(poll(s)["action"] == "train" for s in subs) == 3  # its slot went to another client


def test_an_update_older_than_max_staleness_is_refused_with_the_reason(store):
    job_id, _ = async_job(max_staleness=0)
    subs = subscribe_all(job_id, 4)
    for s in subs:
        poll(s)
    send(subs[0], 0, random_weights(seed=1))
    send(subs[1], 0, random_weights(seed=2))  # version 1 exists now
    error = send(subs[2], 0, random_weights(seed=3), expect=409)["error"]
    assert "1 versions old" in error and "max_staleness is 0" in error
    assert store.count_uncounted(job_id) == 0
    assert poll(subs[2]) == {**poll(subs[2]), "action": "train", "round": 1}  # its slot is back, on the newest model


def test_a_slot_not_used_in_time_is_given_back(store, clock):
    job_id, _ = async_job(num_clients=2, clients_per_round=2, max_concurrency=1, buffer_size=1, round_timeout_s=1.0)
    a, b = subscribe_all(job_id, 2)
    assert poll(a)["action"] == "train" and poll(b)["action"] == "wait"
    clock.advance(1.2)
    assert poll(b)["action"] == "train"  # a's slot expired and went to b
    assert "holds no training slot" in send(a, 0, random_weights(seed=1), expect=409)["error"]


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean", "scaffold"])
def test_strategies_that_need_a_round_refuse_async(store, strategy):
    error = call("create_job", {"mode": "async", "strategy": strategy}, expect=400)["error"]
    assert f"strategy {strategy} cannot run in async mode" in error and "fedavg" in error


def test_each_update_counts_in_exactly_one_version_under_concurrent_submits(store, raw_db):
    n = 12
    job_id, _ = async_job(num_clients=n, clients_per_round=n, buffer_size=3)
    subs = subscribe_all(job_id, n)
    for wave in range(3):  # every client trains three times, each time on the newest model it is given
        bases = {s["client_id"]: poll(s)["round"] for s in subs}
        errors = []

        def deliver(s, bases=bases, wave=wave, errors=errors):
            try:
                if bases[s["client_id"]] is not None:
                    send(s, bases[s["client_id"]], random_weights(seed=hash((s["client_id"], wave)) % 10**6))
                call("aggregate", {"job_id": job_id})
            except AssertionError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=deliver, args=(s,)) for s in subs]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors
    call("aggregate", {"job_id": job_id})  # what the next poll would do
    job = call("status", {"job_id": job_id}, ADMIN)
    taken = [tuple(t) for h in job["history"] for t in h["taken"]]
    stored = [(d["client_id"], d["round"]) for d in raw_db.updates.find({"job_id": job_id})]
    assert len(taken) == len(set(taken))  # none twice
    assert all(len(h["taken"]) == 3 for h in job["history"])
    uncounted = {(d["client_id"], d["round"]) for d in raw_db.updates.find({"job_id": job_id, "counted": None})}
    assert set(taken) | uncounted == set(stored) and not set(taken) & uncounted  # none lost
    assert len(uncounted) < 3  # what is left is less than a buffer
    for h in job["history"]:  # marked with the version that took them
        for c, b in h["taken"]:
            assert raw_db.updates.find_one({"job_id": job_id, "client_id": c, "round": b})["counted"] == h["round"]


def test_updates_a_dead_aggregator_had_taken_are_not_taken_again(store, raw_db):
    job_id, _ = async_job()
    subs = subscribe_all(job_id, 4)
    for s in subs:
        poll(s)
    send(subs[0], 0, random_weights(seed=1))
    send(subs[1], 0, random_weights(seed=2))
    # as if the aggregator of version 1 died after its commit, before marking what it took
    raw_db.updates.update_many({"job_id": job_id}, {"$unset": {"counted": ""}})
    assert store.count_uncounted(job_id) == 2
    send(subs[2], 0, random_weights(seed=3))
    send(subs[3], 0, random_weights(seed=4))
    history = call("status", {"job_id": job_id}, ADMIN)["history"]
    assert [sorted(c for c, _ in h["taken"]) for h in history] == [
        sorted(s["client_id"] for s in subs[:2]),
        sorted(s["client_id"] for s in subs[2:]),
    ]


def test_an_async_job_end_to_end_with_clients_of_uneven_speed(function_url, fleet_env):
    n = 4
    env, _ = fleet_env(n)
    op = Operator(function_url, ADMIN)
    job_id = op.start_job(
        {
            "mode": "async",
            "num_clients": n,
            "clients_per_round": n,
            "buffer_size": 2,
            "rounds": 6,
            "local_epochs": 1,
            "lr": 0.05,
            "max_train_examples": 300,
        }
    )["job_id"]
    slow = {**env, "FL_JOB_ID": job_id, "FL_SLOW_FRACTION": "0.5", "FL_SLOWDOWN": "4"}
    subprocess.run([str(ROOT / "scripts" / "start_clients_aws.sh"), str(n)], env=slow, cwd=ROOT, check=True)
    try:
        final = op.follow(job_id, timeout=300, interval=0.5)
    finally:
        subprocess.run([str(ROOT / "scripts" / "stop_clients_aws.sh")], env=env, cwd=ROOT, check=False)
    assert final["state"] == "done" and final["model_round"] == 6
    history = final["history"]
    assert all(h["clients"] == 2 for h in history)
    taken = [tuple(t) for h in history for t in h["taken"]]
    assert len(taken) == 12 == len(set(taken))  # every version took two updates, none twice
    # who was slow and how stale their updates got depends on timing: the unit tests above pin those down
    assert all(h["staleness_max"] <= final["config"]["max_staleness"] for h in history)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"mode": "later"}, "mode must be one of ['sync', 'async']"),
        ({"mode": "async", "num_clients": 4, "clients_per_round": 4, "buffer_size": 5}, "buffer_size cannot exceed"),
        ({"mode": "async", "max_staleness": -1}, "max_staleness must be between"),
        ({"mode": "async", "staleness_exponent": "half"}, "staleness_exponent must be a number"),
    ],
)
def test_bad_async_settings_are_refused_and_create_nothing(store, raw_db, settings, message):
    assert message in call("create_job", settings, expect=400)["error"]
    assert raw_db.jobs.count_documents({}) == 0
