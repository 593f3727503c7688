"""The round protocol through the core's entry point, against a real database."""

from __future__ import annotations

import threading
import time

import numpy as np

from flcore.domain.job import Job
from flcore.engine import lifecycle, pacing
from flcore.shared import weights as wcodec
from flcore.shared.aggregation import fedavg
from helpers import call, new_job, random_weights, snapshot, submit, subscribe_all, wait_until


def test_job_starts_when_full_and_picks_clients_per_round(store):
    job_id = new_job()
    subs = subscribe_all(job_id, 3)
    assert sorted(s["index"] for s in subs) == [0, 1, 2]
    job = store.get_job(job_id)
    assert job["state"] == "running" and job["round"] == 1 and len(job["picked"]) == 2
    actions = {s["client_id"]: call("poll", token=s["token"])["action"] for s in subs}
    assert sorted(actions.values()) == ["train", "train", "wait"]
    assert {c for c, a in actions.items() if a == "train"} == set(job["picked"])


def test_full_job_refuses_more_clients_and_changes_nothing(store, raw_db):
    job_id = new_job()
    subscribe_all(job_id, 3)
    before = snapshot(raw_db)
    assert "error" in call("subscribe", {"job_id": job_id}, expect=409)
    assert snapshot(raw_db) == before


def test_concurrent_subscribers_get_distinct_partitions(store):
    job_id = new_job(num_clients=12, clients_per_round=4)
    out, errors = [], []

    def worker():
        try:
            out.append(call("subscribe", {"job_id": job_id}))
        except AssertionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert sorted(s["index"] for s in out) == list(range(12))
    assert store.get_job(job_id)["state"] == "running"


def test_a_round_aggregates_exactly_the_picked_updates(store, raw_db):
    job_id = new_job()
    subs = {s["client_id"]: s for s in subscribe_all(job_id, 3)}
    picked = store.get_job(job_id)["picked"]
    for i, cid in enumerate(picked):
        assert submit(subs[cid], 1, seed=10 + i, n=100 * (i + 1))["accepted"] is True
    # a retried submit is a no-op
    before = snapshot(raw_db)
    assert submit(subs[picked[0]], 1, seed=99)["duplicate"] is True
    assert snapshot(raw_db) == before
    # a client that was not picked cannot submit
    other = next(c for c in subs if c not in picked)
    submit(subs[other], 1, seed=5, expect=409)
    # the next poll closes the round
    reply = call("poll", token=subs[picked[0]]["token"])
    assert reply["round"] == 2
    status = call("status", {"job_id": job_id})
    entry = status["history"][0]
    assert entry["client_ids"] == sorted(picked) and entry["clients"] == 2 and entry["examples"] == 300
    expected = fedavg([(random_weights(seed=10), 100), (random_weights(seed=11), 200)])
    got = wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)
    assert raw_db.updates.count_documents({"job_id": job_id, "round": 1}) == 2


def test_late_submit_for_a_closed_round_is_refused(store, raw_db):
    job_id = new_job(rounds=3)
    subs = {s["client_id"]: s for s in subscribe_all(job_id, 3)}
    picked = store.get_job(job_id)["picked"]
    for i, cid in enumerate(picked):
        submit(subs[cid], 1, seed=i)
    call("aggregate", {"job_id": job_id})
    before = snapshot(raw_db)
    outsider = next(c for c in subs if c not in picked)
    submit(subs[outsider], 1, seed=7, expect=409)
    assert snapshot(raw_db) == before


def test_simultaneous_closers_aggregate_once(store):
    job_id = new_job(rounds=5)
    subs = {s["client_id"]: s for s in subscribe_all(job_id, 3)}
    for i, cid in enumerate(store.get_job(job_id)["picked"]):
        submit(subs[cid], 1, seed=i)
    barrier = threading.Barrier(8)

    def closer():
        barrier.wait()
        lifecycle.advance(store, Job.load(store, job_id))

    threads = [threading.Thread(target=closer) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    job = store.get_job(job_id, history=True)
    assert job["round"] == 2
    assert [h["round"] for h in job["history"]] == [1]


def test_an_expired_lease_is_taken_over(store):
    job_id = new_job()
    subs = {s["client_id"]: s for s in subscribe_all(job_id, 3)}
    for i, cid in enumerate(store.get_job(job_id)["picked"]):
        submit(subs[cid], 1, seed=i)
    now = time.time()
    # an aggregator takes the lease and vanishes (its heartbeat stops with it)
    assert store.jobs.find_one_and_update(
        {"_id": job_id, "round": 1}, {"$set": {"lease_owner": "ghost", "lease_until": now + 15}}
    )
    assert lifecycle.advance(store, Job.load(store, job_id), now).round == 1
    # a stale write of the ghost's model for this round is never what the job serves
    store.put_model(job_id, 1, "ghost", wcodec.encode(random_weights(seed=666)))
    after = lifecycle.advance(store, Job.load(store, job_id), now + 16)
    assert after.round == 2 and len(store.get_job(job_id, history=True)["history"]) == 1
    served = wcodec.from_b64(call("get_model", {"job_id": job_id, "round": 1})["weights"])
    assert not np.array_equal(served["fc2.bias"], random_weights(seed=666)["fc2.bias"])


def test_a_live_aggregator_keeps_its_lease_and_a_lost_one_cannot_commit(store, monkeypatch):
    """The holder renews its lease while it works; once another holds it, the old holder's commit fails."""
    from flcore.engine import lease

    monkeypatch.setattr(lease, "RENEW_S", 0.05)
    job_id = new_job()
    held = lease.Lease(store, job_id, 1)
    subscribe_all(job_id, 3)
    assert held.acquire(time.time()) is not None
    first = store.get_job(job_id)["lease_until"]
    wait_until(lambda: store.get_job(job_id)["lease_until"] > first, "the heartbeat to renew the lease", 5)
    # another invocation takes over (as if the holder had stalled past its expiry)
    assert store.jobs.find_one_and_update(
        {"_id": job_id, "round": 1}, {"$set": {"lease_owner": "other", "lease_until": time.time() + 15}}
    )
    wait_until(lambda: held.lost, "the holder to see its lease lost", 5)
    held.stop()
    assert store.get_job(job_id)["lease_owner"] == "other"


def test_deadline_closes_a_round_with_the_minimum(store):
    job_id = new_job(round_timeout_s=5, min_updates=1)
    subs = {s["client_id"]: s for s in subscribe_all(job_id, 3)}
    job = Job.load(store, job_id)
    submit(subs[job.picked[0]], 1, seed=1)
    assert lifecycle.advance(store, job, time.time()).round == 1
    after = lifecycle.advance(store, Job.load(store, job_id), job.doc["deadline"] + 1)
    assert after.round == 2
    assert store.get_job(job_id, history=True)["history"][0]["closed"] == "deadline"


def test_deadline_repicks_when_too_few_arrived(store):
    job_id = new_job(round_timeout_s=5, min_updates=2)
    subscribe_all(job_id, 3)
    job = Job.load(store, job_id)
    after = lifecycle.advance(store, job, job.doc["deadline"] + 1)
    assert after.round == 1 and after.doc["deadline"] > job.doc["deadline"] and after.doc["attempt"] == 1


def test_job_finishes_after_its_rounds(store):
    job_id = new_job(rounds=1)
    subs = {s["client_id"]: s for s in subscribe_all(job_id, 3)}
    for i, cid in enumerate(store.get_job(job_id)["picked"]):
        submit(subs[cid], 1, seed=i)
    assert call("poll", token=next(iter(subs.values()))["token"])["action"] == "done"
    assert call("status", {"job_id": job_id})["state"] == "done"


def test_waiting_clients_are_told_to_come_back_about_when_the_round_should_end(store):
    from flcore.domain.config import parse_config

    cfg = parse_config({}).to_dict()
    doc = {
        "_id": "j",
        "state": "running",
        "round": 3,
        "round_started_at": 1000.0,
        "config": cfg,
        "recent_round_s": [10.0, 12.0, 20.0],
    }
    job = Job.of(doc)
    assert pacing.until_round_end(job, 1002.0, 1.0) == 9.0  # median 12 s: back 1 s before 1012
    assert pacing.until_round_end(job, 1011.5, 1.0) == 1.0  # it is about time: every second
    assert pacing.until_round_end(Job.of({**doc, "recent_round_s": [500.0]}), 1000.0, 1.0) == 30.0  # half the timeout
    assert pacing.until_round_end(Job.of({**doc, "recent_round_s": []}), 1000.0, 1.0) == 1.0  # no history yet
    # through the protocol: after a round, the client left out of the next one hears when to come back
    job_id = new_job(clients_per_round=2, rounds=3)
    subs = subscribe_all(job_id, 3)
    picked = store.get_job(job_id)["picked"]
    for i, sub in enumerate(s for s in subs if s["client_id"] in picked):
        submit(sub, 1, seed=i)
    call("aggregate", {"job_id": job_id})
    picked = store.get_job(job_id)["picked"]
    left_out = next(s for s in subs if s["client_id"] not in picked)
    reply = call("poll", token=left_out["token"])
    assert reply["action"] == "wait" and reply["round"] == 2 and reply["retry_after"] == 1.0  # a round of ~0 s
    store.jobs.update_one({"_id": job_id}, {"$set": {"recent_round_s": [30.0]}})
    assert 27.0 < call("poll", token=left_out["token"])["retry_after"] <= 29.0


def test_a_large_fleet_polls_no_faster_than_the_jobs_max_poll_rate(store):
    """1,000 clients at 100 polls a second: each waits 10 s, not 1 s; a few clients still ask every second."""
    from flcore.domain.config import parse_config

    def job(**cfg):
        return Job.of({"_id": "j", "state": "waiting", "round": 0, "config": parse_config(cfg).to_dict()})

    assert pacing.until_round_end(job(num_clients=1000, clients_per_round=100), 0.0, 1.0) == 10.0
    assert pacing.until_round_end(job(num_clients=20, clients_per_round=10), 0.0, 1.0) == 1.0
    assert pacing.until_round_end(job(num_clients=1000, clients_per_round=100, max_poll_rate=1000), 0.0, 1.0) == 1.0
    assert pacing.until_round_end(job(num_clients=10000, clients_per_round=100), 0.0, 1.0) == 30.0  # half the timeout
    # through the protocol: a client of a job still waiting for its fleet hears the slower pace
    job_id = new_job(num_clients=300, clients_per_round=10, max_poll_rate=50)
    sub = call("subscribe", {"job_id": job_id})
    assert call("poll", token=sub["token"])["retry_after"] == 6.0
