"""The job control plane through the core's entry point, against a real database:
create (started or not), start, stop (also racing an aggregation), update, list."""

from __future__ import annotations

import threading

import pytest

from flcore.storage.store import Store
from helpers import call, create, snapshot, submit, subscribe_all


def run_round(store, job_id, subs, rnd, seed=0):
    for i, sub in enumerate(subs):
        if sub["client_id"] in store.get_job(job_id)["picked"]:
            submit(sub, rnd, seed=seed * 100 + rnd * 10 + i)
    return call("aggregate", {"job_id": job_id})


def test_created_job_takes_nobody_until_started(store):
    made = create(start=False, name="later", tags=["a"])
    assert made["state"] == "created"
    job_id = made["job_id"]
    assert "takes no new clients" in call("subscribe", {"job_id": job_id}, expect=409)["error"]
    assert call("start_job", {"job_id": job_id}) == {"job_id": job_id, "state": "waiting"}
    assert "only a created job" in call("start_job", {"job_id": job_id}, expect=409)["error"]
    subscribe_all(job_id, 3)
    assert store.get_job(job_id)["state"] == "running"


def test_start_training_is_create_job_started(store):
    job_id = call("start_training", {"num_clients": 2, "clients_per_round": 1})["job_id"]
    assert store.get_job(job_id)["state"] == "waiting"
    assert "use create_job" in call("start_training", {"start": False}, expect=400)["error"]


def test_operator_actions_need_the_operator_token(store, monkeypatch):
    monkeypatch.setenv("FL_ADMIN_TOKEN", "op-secret")
    job_id = call("create_job", {"num_clients": 2, "clients_per_round": 1}, token="op-secret")["job_id"]
    for action, body in [
        ("create_job", {}),
        ("start_job", {"job_id": job_id}),
        ("list_jobs", {}),
        ("stop_job", {"job_id": job_id}),
        ("update_job", {"job_id": job_id, "set": {"lr": 0.1}}),
        ("devices", {}),
    ]:
        assert call(action, body, expect=401)["error"]
        assert call(action, body, token="not-it", expect=403)["error"]


def test_stop_ends_the_job_for_its_clients_and_keeps_its_models(store):
    job_id = create()["job_id"]
    subs = subscribe_all(job_id, 3)
    run_round(store, job_id, subs, 1)
    stopped = call("stop_job", {"job_id": job_id, "reason": "enough"})
    assert stopped["state"] == "stopped" and stopped["stopped_because"] == "enough"
    assert {call("poll", token=s["token"])["action"] for s in subs} == {"done"}
    assert call("get_model", {"job_id": job_id})["model_round"] == 1  # still downloadable
    status = call("status", {"job_id": job_id})
    assert status["state"] == "stopped" and status["stopped_because"] == "enough"
    assert "already finished" in call("stop_job", {"job_id": job_id}, expect=409)["error"]
    submit(subs[0], 2, seed=99, expect=409)


def test_stop_between_aggregation_and_commit_leaves_no_trace(store, raw_db, monkeypatch):
    """The operator's stop lands while the lease holder aggregates: the commit must fail and
    nothing of the round (model, history, next round) may remain."""
    job_id = create()["job_id"]
    subs = subscribe_all(job_id, 3)
    for i, sub in enumerate(subs):
        if sub["client_id"] in store.get_job(job_id)["picked"]:
            submit(sub, 1, seed=i)
    real = Store.commit_round

    def stop_first(self, *args, **kwargs):
        call("stop_job", {"job_id": job_id, "reason": "operator was faster"})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "commit_round", stop_first)
    call("aggregate", {"job_id": job_id})
    doc = raw_db.jobs.find_one({"_id": job_id})
    assert doc["state"] == "stopped" and doc["round"] == 1 and doc["history"] == []
    assert doc["model_round"] == 0 and "lease_owner" not in doc  # the loser gives its lease back
    assert raw_db.models.count_documents({"job_id": job_id, "round": 1}) == 0


def test_stop_racing_concurrent_aggregations_ends_stopped_and_consistent(store, raw_db):
    for attempt in range(3):
        job_id = create(rounds=5)["job_id"]
        subs = subscribe_all(job_id, 3)
        for i, sub in enumerate(subs):
            if sub["client_id"] in store.get_job(job_id)["picked"]:
                submit(sub, 1, seed=attempt * 10 + i)
        threads = [threading.Thread(target=call, args=("aggregate", {"job_id": job_id})) for _ in range(4)]
        threads.append(threading.Thread(target=call, args=("stop_job", {"job_id": job_id})))
        [t.start() for t in threads]
        [t.join() for t in threads]
        doc = raw_db.jobs.find_one({"_id": job_id})
        assert doc["state"] == "stopped"
        committed = [h["round"] for h in doc["history"]]
        assert committed in ([], [1])  # the round closed once before the stop, or not at all
        models = list(raw_db.models.find({"job_id": job_id, "round": 1}))
        assert [m["owner"] for m in models] == ([doc["model_owner"]] if committed else [])


def test_update_applies_from_the_next_round_and_is_recorded(store, raw_db):
    job_id = create(lr=0.1)["job_id"]
    subs = subscribe_all(job_id, 3)
    reply = call("update_job", {"job_id": job_id, "set": {"lr": 0.05, "local_epochs": 2, "rounds": 4}})
    assert reply["from_round"] == 2 and reply["set"] == {"lr": 0.05, "local_epochs": 2, "rounds": 4}
    now = call("get_model", {"job_id": job_id})
    assert now["round"] == 1 and now["round_config"]["lr"] == pytest.approx(0.1)  # round 1 keeps its settings
    assert now["config"]["rounds"] == 4
    run_round(store, job_id, subs, 1)
    after = call("get_model", {"job_id": job_id})
    assert after["round"] == 2 and after["round_config"]["lr"] == pytest.approx(0.05)
    assert after["round_config"]["local_epochs"] == 2
    status = call("status", {"job_id": job_id})
    assert [(c["round"], c["by"]) for c in status["changes"]] == [(2, "root")]
    for r in (2, 3, 4):
        run_round(store, job_id, subs, r)
    assert store.get_job(job_id)["state"] == "done" and store.get_job(job_id)["round"] == 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lr": -1}, "lr must be between"),
        ({"num_clients": 5}, "cannot change"),
        ({"dataset": "cifar10"}, "cannot change"),
        ({"clients_per_round": 9}, "cannot exceed num_clients"),
        ({"lrr": 0.1}, "unknown job settings"),
        ({}, "set must be an object"),
        ({"proximal_mu": 0.1}, "unknown job settings"),
    ],
)
def test_invalid_update_is_refused_and_changes_nothing(store, raw_db, change, message):
    job_id = create()["job_id"]
    before = snapshot(raw_db)
    assert message in call("update_job", {"job_id": job_id, "set": change}, expect=400)["error"]
    assert snapshot(raw_db) == before


def test_rounds_below_the_round_under_way_are_refused_saying_why(store, raw_db):
    job_id = create(rounds=5)["job_id"]
    subs = subscribe_all(job_id, 3)
    run_round(store, job_id, subs, 1)
    run_round(store, job_id, subs, 2)  # round 3 is under way
    before = snapshot(raw_db)
    got = call("update_job", {"job_id": job_id, "set": {"rounds": 1}}, expect=400)["error"]
    assert got == f"job {job_id} is in round 3: rounds must be at least 3 (it ends after the round under way at 3)"
    assert snapshot(raw_db) == before
    assert call("update_job", {"job_id": job_id, "set": {"rounds": 3}})["set"] == {"rounds": 3}  # ends after round 3


def test_update_of_a_waiting_job_applies_from_round_one_and_strategy_settings_change(store):
    job_id = create(strategy="fedprox", proximal_mu=0.01)["job_id"]
    assert call("update_job", {"job_id": job_id, "set": {"proximal_mu": 0.1}})["from_round"] == 1
    subscribe_all(job_id, 3)
    assert call("get_model", {"job_id": job_id})["round_config"]["proximal_mu"] == pytest.approx(0.1)


def test_list_pages_newest_first_and_filters(store):
    ids = [create(tags=["even" if i % 2 == 0 else "odd"], name=f"job {i}", start=i != 4)["job_id"] for i in range(5)]
    seen, after = [], None
    while True:
        page = call("list_jobs", {"limit": 2, **({"after": after} if after else {})})
        seen += [j["job_id"] for j in page["jobs"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ids[::-1]
    assert [j["job_id"] for j in call("list_jobs", {"tag": "odd"})["jobs"]] == [ids[3], ids[1]]
    created = call("list_jobs", {"state": "created"})["jobs"]
    assert [j["job_id"] for j in created] == [ids[4]] and created[0]["name"] == "job 4"
    assert set(created[0]) >= {
        "job_id",
        "name",
        "tags",
        "state",
        "round",
        "rounds",
        "clients",
        "eval_accuracy",
        "created_at",
    }
    assert "state must be one of" in call("list_jobs", {"state": "sleeping"}, expect=400)["error"]
    assert "after must be" in call("list_jobs", {"after": "yesterday"}, expect=400)["error"]
    assert "limit must be" in call("list_jobs", {"limit": 1000}, expect=400)["error"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"criteria": {"info.cpus": {"$where": "1"}}}, "unknown operator"),
        ({"criteria": {"secret": 1}}, "is not one of info., stats."),
        ({"criteria": "info.cpus > 2"}, "a filter must be an object"),
        ({"rules": [{"when": {"round": 1}}]}, "must be an object with when, then"),
        ({"rules": [{"when": {"round": 1}, "then": {"eval": "x"}}]}, "then must be one of"),
        ({"rules": [{"when": {"round": 1}, "then": {"set": {"num_clients": 1}}}]}, "rules[0].then.set: cannot change"),
        ({"rules": [{"when": {"loss": 1}, "then": {"stop": "x"}}]}, "rules[0].when: field 'loss'"),
        ({"rules": [{"when": {}, "then": {"stop": "x"}, "repeat": "yes"}]}, "repeat must be true or false"),
        ({"tags": "a,b"}, "tags must be a list"),
        ({"name": "x" * 101}, "name must be text"),
        ({"priority": 1.5}, "priority must be an integer"),
        ({"start": "no"}, "start and public_predict must be true or false"),
        ({"public_predict": 1}, "start and public_predict must be true or false"),
    ],
)
def test_create_refuses_bad_definitions_and_changes_nothing(store, raw_db, extra, message):
    before = snapshot(raw_db)
    reply = call("create_job", {"num_clients": 2, "clients_per_round": 1, **extra}, expect=400)
    assert message in reply["error"]
    assert snapshot(raw_db) == before


def test_update_waits_for_a_round_being_closed_and_then_applies_to_the_next(store, monkeypatch):
    from flcore.actions import jobs as job_actions

    job_id = create(lr=0.1)["job_id"]
    subs = subscribe_all(job_id, 3)
    monkeypatch.setattr(job_actions, "UPDATE_TRIES", 2)
    monkeypatch.setattr(job_actions, "UPDATE_WAIT_S", 0.01)
    store.jobs.find_one_and_update(
        {"_id": job_id}, {"$set": {"lease_owner": "someone", "lease_until": 1e12}}
    )  # aggregating
    assert "closing a round" in call("update_job", {"job_id": job_id, "set": {"lr": 0.05}}, expect=409)["error"]
    assert store.get_job(job_id)["changes"] == []
    store.jobs.find_one_and_update({"_id": job_id}, {"$unset": {"lease_owner": "", "lease_until": ""}})
    assert call("update_job", {"job_id": job_id, "set": {"lr": 0.05}})["from_round"] == 2
    run_round(store, job_id, subs, 1)
    assert call("get_model", {"job_id": job_id})["round_config"]["lr"] == pytest.approx(0.05)


def test_the_operator_reports_test_accuracy_beside_the_rounds(store, raw_db):
    job_id = create()["job_id"]
    subs = subscribe_all(job_id, 3)
    run_round(store, job_id, subs, 1)
    call("report", {"job_id": job_id, "round": 1, "metrics": {"test_accuracy": 0.91}})
    history = call("status", {"job_id": job_id})["history"]
    assert history[0]["reported"] == {"test_accuracy": 0.91}
    before = snapshot(raw_db)
    assert "has not closed" in call("report", {"job_id": job_id, "round": 2, "metrics": {"a": 1}}, expect=404)["error"]
    assert "at least one" in call("report", {"job_id": job_id, "round": 1, "metrics": {}}, expect=400)["error"]
    assert "finite number" in call("report", {"job_id": job_id, "round": 1, "metrics": {"a": "x"}}, expect=400)["error"]
    assert snapshot(raw_db) == before
