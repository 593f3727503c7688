"""The device registry through the core's entry point, against a real database: registering,
offers, criteria at join and at every pick, leaving, and the statistics the function keeps."""

from __future__ import annotations

import pytest

from helpers import KIND_A, KIND_B, call, create, register, snapshot, submit


def offered(device) -> list[str]:
    return [j["job_id"] for j in call("offers", token=device["token"])["jobs"]]


def test_register_gives_a_lasting_identity_that_update_changes(store):
    dev = register(KIND_A)
    assert dev["device_id"].startswith("d-") and dev["token"].startswith(dev["device_id"] + ".")
    call("update_device", {"info": {**KIND_A, "cpus": 8}}, token=dev["token"])
    listed = {d["device_id"]: d for d in call("devices")["devices"]}
    assert listed[dev["device_id"]]["info"]["cpus"] == 8
    assert "token_hash" not in listed[dev["device_id"]]
    assert call("update_device", {"info": KIND_A}, token="d-nobody.secret", expect=401)["error"]


@pytest.mark.parametrize(
    "info, message",
    [
        ("linux", "info must be an object"),
        ({"os": "linux"}, "unknown fields"),
        ({"cpus": 0}, "info.cpus must be a whole number"),
        ({"cpus": True}, "info.cpus must be a whole number"),
        ({"memory_mb": 1.5}, "info.memory_mb must be a whole number"),
        ({"platform": ""}, "info.platform must be text"),
        ({"datasets": {"mnist": -1}}, "info.datasets.mnist must be"),
        ({"datasets": {"a.b": 1}}, "names are 1 to 64 letters"),
        ({"labels": {"$where": "x"}}, "names are 1 to 64 letters"),
        ({"labels": {"k": 3}}, "info.labels.k must be text"),
        ({"labels": {f"k{i}": "v" for i in range(17)}}, "at most 16 entries"),
        (
            {
                "datasets": {
                    f"d{i:02d}": {"rows": 1, "columns": {f"{j:03d}" + "c" * 60: "numeric" for j in range(100)}}
                    for i in range(16)
                },
            },
            "larger than 65536 bytes",
        ),
        ({"datasets": {"s": {"rows": 1, "columns": {"a.b": "numeric"}}}}, "'a.b' is not a usable column name"),
        ({"datasets": {"s": {"rows": 1, "columns": {"a": "date"}}}}, "the kind must be one of"),
        ({"datasets": {"s": {"rows": 1, "values": [1]}}}, "unknown fields ['values']"),
    ],
)
def test_bad_info_is_refused_and_changes_nothing(store, raw_db, info, message):
    before = snapshot(raw_db)
    assert message in register(info, expect=400)["error"]
    assert snapshot(raw_db) == before


def test_enrolment_token_is_required_when_set(store, monkeypatch):
    monkeypatch.setenv("FL_ENROL_TOKEN", "enrol-me")
    monkeypatch.setenv("FL_ADMIN_TOKEN", "op-secret")
    assert "FL_ENROL_TOKEN" in register(KIND_A, expect=401)["error"]
    register(KIND_A, token="guess", expect=403)
    register(KIND_A, token="enrol-me")
    register(KIND_A, token="op-secret")  # the operator may enrol devices too


def test_offers_follow_criteria_data_sets_state_and_priority(store):
    a, b = register(KIND_A), register(KIND_B)
    low = create(name="low", criteria={"info.cpus": {"$gte": 2}})["job_id"]
    high = create(name="high", priority=5)["job_id"]
    only_b = create(name="fashion", dataset="fashionmnist", criteria={"info.labels.kind": "b"})["job_id"]
    only_a = create(name="a only", criteria={"$or": [{"info.labels.kind": "a"}, {"info.memory_mb": {"$gt": 1e6}}]})
    create(name="not started", start=False)
    assert offered(a) == [high, low, only_a["job_id"]]
    assert offered(b) == [high, low, only_b]
    assert "does not report the data set" in call("join", {"job_id": only_b}, token=a["token"], expect=403)["error"]
    assert (
        "does not meet the criteria"
        in call("join", {"job_id": only_a["job_id"]}, token=b["token"], expect=403)["error"]
    )
    assert "criteria" in call("subscribe", {"job_id": only_b}, expect=403)["error"]
    joined = call("join", {"job_id": high}, token=a["token"])
    assert joined["job_id"] == high and joined["index"] == 0
    assert call("poll", token=joined["token"])["action"] == "wait"
    assert high not in offered(a)
    again = call("join", {"job_id": high}, token=a["token"])  # the first answer was lost, say
    assert (again["client_id"], again["index"]) == (joined["client_id"], 0) and again["token"] != joined["token"]
    assert call("poll", token=again["token"])["action"] == "wait"
    assert call("poll", token=joined["token"], expect=401)["error"]
    assert call("status", {"job_id": high})["subscribed"] == 1


def test_concurrent_joins_of_one_device_take_one_place(store):
    import threading

    dev = register(KIND_A)
    job_id = create(num_clients=3)["job_id"]
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(call("join", {"job_id": job_id}, token=dev["token"])))
        for _ in range(6)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({a["client_id"] for a in answers}) == 1 and len(answers) == 6
    assert call("status", {"job_id": job_id})["subscribed"] == 1


def test_a_device_that_leaves_is_replaced_in_its_round_and_never_picked_again(store, raw_db):
    devs = [register(KIND_A) for _ in range(3)]
    job_id = create(num_clients=3, clients_per_round=2, rounds=3, criteria={"info.labels.kind": "a"})["job_id"]
    subs = [call("join", {"job_id": job_id}, token=d["token"]) for d in devs]
    picked = store.get_job(job_id)["picked"]
    leaver = next(s for s in subs if s["client_id"] in picked)
    assert call("leave", {"reason": "training failed: CUDA error"}, token=leaver["token"]) == {
        "left": True,
        "already": False,
    }
    assert call("leave", {}, token=leaver["token"])["already"] is True
    assert "its own job" in call("leave", {"job_id": "job-other"}, token=leaver["token"], expect=403)["error"]
    now_picked = store.get_job(job_id)["picked"]
    assert leaver["client_id"] not in now_picked and len(now_picked) == 2
    assert call("poll", token=leaver["token"])["action"] == "done"
    for rnd in (1, 2, 3):
        for i, sub in enumerate(subs):
            if sub["client_id"] in store.get_job(job_id)["picked"]:
                assert sub is not leaver
                submit(sub, rnd, seed=rnd * 10 + i)
        call("aggregate", {"job_id": job_id})
    assert store.get_job(job_id)["state"] == "done"
    gone = next(
        d
        for d in devs
        if leaver["client_id"].startswith("c-")
        and d["device_id"] == raw_db.clients.find_one({"_id": leaver["client_id"]})["device_id"]
    )
    view = {d["device_id"]: d for d in call("devices", {"job_id": job_id})["devices"]}[gone["device_id"]]
    assert view["stats"]["failures_reported"] == 1 and job_id in view["left_jobs"]
    assert "left job" in call("join", {"job_id": job_id}, token=gone["token"], expect=403)["error"]


def test_statistics_count_what_devices_did(store):
    devs = [register(KIND_A) for _ in range(3)]
    job_id = create(num_clients=3, clients_per_round=2, rounds=1, round_timeout_s=1, min_updates=1)["job_id"]
    subs = [call("join", {"job_id": job_id}, token=d["token"]) for d in devs]
    picked = store.get_job(job_id)["picked"]
    worker, idle = [s for s in subs if s["client_id"] in picked]
    submit(worker, 1, seed=1, n=300)
    store.jobs.find_one_and_update({"_id": job_id}, {"$set": {"deadline": 0}})  # the round's deadline has passed
    call("aggregate", {"job_id": job_id})
    stats = {d["device_id"]: d["stats"] for d in call("devices", {"job_id": job_id})["devices"]}
    by_client = {s["client_id"]: devs[i]["device_id"] for i, s in enumerate(subs)}
    done = stats[by_client[worker["client_id"]]]
    assert done["jobs_joined"] == 1 and done["updates_accepted"] == 1 and done["rounds_trained"] == 1
    assert done["contribution"] == 1.0 and done["deadlines_missed"] == 0 and done["last_seen"] > 0
    assert stats[by_client[idle["client_id"]]]["deadlines_missed"] == 1
    assert stats[by_client[idle["client_id"]]]["rounds_trained"] == 0
    # the same devices in another job: their figures in each job, beside their totals over all jobs
    other = create(num_clients=3, clients_per_round=2, rounds=1)["job_id"]
    call("join", {"job_id": other}, token=devs[0]["token"])
    listed = {d["device_id"]: d for d in call("devices", {"job_id": other})["devices"]}
    assert list(listed) == [devs[0]["device_id"]]
    assert listed[devs[0]["device_id"]]["in_job"]["rounds_counted"] == 0
    assert listed[devs[0]["device_id"]]["stats"]["jobs_joined"] == 2
    first = {d["device_id"]: d["in_job"] for d in call("devices", {"job_id": job_id})["devices"]}
    assert first[by_client[worker["client_id"]]]["rounds_counted"] == 1
    assert first[by_client[idle["client_id"]]] == {**first[by_client[idle["client_id"]]], "rounds_counted": 0}
    assert "in_job" not in call("devices")["devices"][0]


def test_criteria_on_statistics_are_checked_at_every_pick(store):
    devs = [register(KIND_A) for _ in range(4)]
    job_id = create(
        num_clients=4,
        clients_per_round=2,
        rounds=3,
        round_timeout_s=1,
        min_updates=1,
        criteria={"stats.deadlines_missed": {"$lt": 1}},
    )["job_id"]
    subs = [call("join", {"job_id": job_id}, token=d["token"]) for d in devs]
    first = store.get_job(job_id)["picked"]
    worker = next(s for s in subs if s["client_id"] in first)
    submit(worker, 1, seed=1)
    store.jobs.find_one_and_update({"_id": job_id}, {"$set": {"deadline": 0}})
    call("aggregate", {"job_id": job_id})  # the other picked client missed its deadline
    missed = [c for c in first if c != worker["client_id"]]
    for _ in range(2):
        job = store.get_job(job_id)
        assert not set(missed) & set(job["picked"])
        for i, sub in enumerate(subs):
            if sub["client_id"] in job["picked"]:
                submit(sub, job["round"], seed=job["round"] * 10 + i)
        call("aggregate", {"job_id": job_id})
    assert store.get_job(job_id)["state"] == "done"


def test_poll_may_carry_info(store):
    dev = register(KIND_A)
    job_id = create()["job_id"]
    sub = call("join", {"job_id": job_id}, token=dev["token"])
    call("poll", {"info": {**KIND_A, "memory_mb": 1234}}, token=sub["token"])
    assert call("devices")["devices"][0]["info"]["memory_mb"] == 1234
    assert "info.cpus" in call("poll", {"info": {"cpus": -1}}, token=sub["token"], expect=400)["error"]


def test_a_waiting_job_says_which_criterion_keeps_devices_out(store):
    criteria = {"info.labels.kind": "b", "info.cpus": {"$gte": 4}}
    job_id = create(criteria=criteria)["job_id"]
    register(KIND_A)  # kind a, 4 cpus
    register(KIND_B)  # kind b, 2 cpus
    register({**KIND_B, "cpus": 8})  # kind b, 8 cpus: meets both
    wait = call("status", {"job_id": job_id})["waiting_for"]
    assert wait["clients"] == 3 and wait["joined"] == 0 and wait["devices"] == 3 and wait["meet_all"] == 1
    assert wait["clauses"] == [
        {"clause": {"info.labels.kind": "b"}, "meet": 2},
        {"clause": {"info.cpus": {"$gte": 4}}, "meet": 2},
    ]


def test_a_disabled_device_is_not_offered_nor_picked_and_a_revoked_one_is_shut_out(store):
    devs = [register(KIND_A) for _ in range(3)]
    job_id = create(num_clients=3, clients_per_round=3, min_updates=1, rounds=3)["job_id"]
    subs = [call("join", {"job_id": job_id}, token=d["token"]) for d in devs[:2]]
    call("disable_device", {"device_id": devs[2]["device_id"]})
    assert call("offers", token=devs[2]["token"])["jobs"] == []
    assert "disabled by the operator" in call("join", {"job_id": job_id}, token=devs[2]["token"], expect=403)["error"]
    call("enable_device", {"device_id": devs[2]["device_id"]})
    third = call("join", {"job_id": job_id}, token=devs[2]["token"])
    assert call("status", {"job_id": job_id})["state"] == "running"
    # disabled while in the job: never picked again
    call("disable_device", {"device_id": devs[0]["device_id"]})
    store.jobs.find_one_and_update({"_id": job_id}, {"$set": {"deadline": 0}})  # re-pick now
    call("aggregate", {"job_id": job_id})
    assert sorted(store.get_job(job_id)["picked"]) == sorted([subs[1]["client_id"], third["client_id"]])
    listed = {d["device_id"]: d for d in call("devices")["devices"]}
    assert listed[devs[0]["device_id"]]["disabled"] is True
    # revoked: its device token and its client token stop working at once
    got = call("revoke_device", {"device_id": devs[2]["device_id"]})
    assert got == {"device_id": devs[2]["device_id"], "revoked": True, "clients_left": 1}
    assert call("offers", token=devs[2]["token"], expect=401)["error"] == "invalid device token"
    assert call("poll", token=third["token"], expect=401)["error"] == "invalid client token"
    assert "no device" in call("revoke_device", {"device_id": "d-000000000000"}, expect=404)["error"]
    assert "device_id must name" in call("disable_device", {"device_id": 7}, expect=400)["error"]


def test_an_operator_names_and_labels_devices_and_criteria_read_the_labels(store, raw_db):
    devs = [register(KIND_A) for _ in range(2)]
    named = call("label_device", {"device_id": devs[0]["device_id"], "name": "pi in the lab",
                                  "labels": {"site": "lab"}})  # fmt: skip
    assert named["name"] == "pi in the lab" and named["labels"] == {"site": "lab"}
    listed = {d["device_id"]: d for d in call("devices", {})["devices"]}
    assert listed[devs[0]["device_id"]]["labels"] == {"site": "lab"} and listed[devs[1]["device_id"]]["name"] is None
    job_id = create(num_clients=1, clients_per_round=1, criteria={"labels.site": "lab"})["job_id"]
    assert job_id in offered(devs[0]) and job_id not in offered(devs[1])
    # the device's own report (info) does not touch what the operator set
    call("update_device", {"info": {"labels": {"site": "elsewhere"}}}, token=devs[0]["token"])
    mine = next(d for d in call("devices", {})["devices"] if d["device_id"] == devs[0]["device_id"])
    assert mine["labels"] == {"site": "lab"} and mine["info"]["labels"] == {"site": "elsewhere"}
    before = snapshot(raw_db)
    bad = {"device_id": devs[1]["device_id"], "labels": {"a.b": "x"}}
    assert call("label_device", bad, expect=400)
    assert (
        "name must be text"
        in call("label_device", {"device_id": devs[1]["device_id"], "name": ""}, expect=400)["error"]
    )
    assert snapshot(raw_db) == before
    call("label_device", {"device_id": devs[0]["device_id"], "name": None})
    assert next(d for d in call("devices", {})["devices"] if d["device_id"] == devs[0]["device_id"])["name"] is None
