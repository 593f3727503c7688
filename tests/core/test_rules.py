"""Rules fire as rounds close, exactly once, in the round's own commit."""

from __future__ import annotations

import threading

import pytest

from flcore.domain.config import JobConfig
from flcore.engine import rules
from helpers import call, create, subscribe_all


def close(store, job_id, subs, acc: float, seed: int = 0, closers: int = 1):
    """Every picked client submits (reporting ``acc``), then ``closers`` invocations close the round at once."""
    job = store.get_job(job_id)
    for i, sub in enumerate(subs):
        if sub["client_id"] in job["picked"]:
            call(
                "submit",
                {
                    "round": job["round"],
                    "num_examples": 100,
                    "metrics": {"eval_accuracy": acc},
                    "weights": _weights(seed * 1000 + job["round"] * 10 + i),
                },
                sub["token"],
            )
    threads = [threading.Thread(target=call, args=("aggregate", {"job_id": job_id})) for _ in range(closers)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return store.get_job(job_id, history=True)


def _weights(seed):
    from flcore.shared import weights as wcodec
    from helpers import random_weights

    return wcodec.to_b64(random_weights(seed=seed))


def test_stop_and_start_next_when_the_target_is_reached_exactly_once_under_concurrent_closers(store):
    nxt = create(start=False, name="C")["job_id"]
    job_id = create(
        rounds=10,
        rules=[
            {"when": {"metrics.eval_accuracy": {"$gte": 0.9}}, "then": {"stop": "reached 90 %"}},
            {"when": {"metrics.eval_accuracy": {"$gte": 0.9}}, "then": {"start_job": nxt}},
            {"when": {"round": {"$gte": 1}}, "then": {"set": {"lr": 0.005}}},
        ],
    )["job_id"]
    subs = subscribe_all(job_id, 3)
    doc = close(store, job_id, subs, acc=0.5, closers=6)
    assert doc["state"] == "running" and doc["round"] == 2
    assert [h["rules"] for h in doc["history"]] == [[{"rule": 2, "then": {"set": {"lr": 0.005}}}]]
    assert [(c["round"], c["set"], c["by"]) for c in doc["changes"]] == [(2, {"lr": 0.005}, "rule")]
    assert store.get_job(nxt)["state"] == "created"
    doc = close(store, job_id, subs, acc=0.95, seed=1, closers=6)
    assert doc["state"] == "stopped" and doc["stopped_because"] == "rule: reached 90 %"
    assert [r["rule"] for r in doc["history"][1]["rules"]] == [0, 1]  # rule 2 fired once, not again
    assert sorted(doc["rules_fired"]) == [0, 1, 2] and len(doc["history"]) == 2
    assert store.get_job(nxt)["state"] == "waiting" and "starts_pending" not in store.get_job(nxt)
    assert "starts_pending" not in doc


def test_repeat_and_rounds_since_best(store):
    job_id = create(
        rounds=10,
        lr=0.1,
        rules=[
            {"when": {"round": {"$gte": 1}}, "then": {"set": {"lr_decay": 0.5}}, "repeat": True},
            {"when": {"rounds_since_best": {"$gte": 2}}, "then": {"stop": "no better for 2 rounds"}},
        ],
    )["job_id"]
    subs = subscribe_all(job_id, 3)
    for rnd, acc in enumerate([0.6, 0.8, 0.7, 0.75], start=1):
        doc = close(store, job_id, subs, acc=acc, seed=rnd)
    assert doc["state"] == "stopped" and doc["stopped_because"] == "rule: no better for 2 rounds"
    assert [h["round"] for h in doc["history"] if any(r["rule"] == 0 for r in h.get("rules", []))] == [1, 2, 3, 4]
    assert doc["best"] == {"eval_accuracy": pytest.approx(0.8), "round": 2}


def test_a_set_that_no_longer_fits_is_recorded_not_applied(store):
    job_id = create(rounds=3, clients_per_round=2, rules=[{"when": {"round": 1}, "then": {"set": {"min_updates": 2}}}])[
        "job_id"
    ]
    call("update_job", {"job_id": job_id, "set": {"clients_per_round": 1}})  # now min_updates 2 cannot be
    subs = subscribe_all(job_id, 3)
    doc = close(store, job_id, subs, acc=0.5)
    record = doc["history"][0]["rules"][0]
    assert "min_updates cannot exceed clients_per_round" in record["error"]
    assert [c["by"] for c in doc["changes"]] == ["root"] and doc["state"] == "running"


def test_evaluate_records_errors_instead_of_half_applying():
    cfg = JobConfig(num_clients=3, clients_per_round=2, min_updates=2)
    parsed = rules.parse_rules(
        [{"when": {}, "then": {"set": {"clients_per_round": 3}}}, {"when": {}, "then": {"set": {"lr": 0.2}}}], cfg
    )
    fired = rules.evaluate(parsed, [], {"round": 1, "clients": 2, "seconds": 1.0, "metrics": {}, "best": {}}, cfg)
    assert fired.changes == {"clients_per_round": 3, "lr": 0.2} and fired.fired == [0, 1]
    broken = rules.evaluate([{"when": {}, "then": {"set": {"min_updates": 3}}, "repeat": False}], [], {"round": 1}, cfg)
    assert broken.changes == {} and "min_updates cannot exceed" in broken.records[0]["error"]


def test_a_start_lost_to_a_crash_is_finished_by_the_scheduled_tick(store):
    from flcore.edge import api

    nxt = create(start=False)["job_id"]
    job_id = create()["job_id"]
    store.jobs.find_one_and_update(
        {"_id": job_id}, {"$set": {"starts_pending": [nxt]}}
    )  # committed, then the invocation died
    api.scheduled_tick()
    assert store.get_job(nxt)["state"] == "waiting" and "starts_pending" not in store.get_job(job_id)
