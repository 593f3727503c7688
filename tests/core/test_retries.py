"""Calls whose answer was lost are safe to send again, and a picked client that goes silent is
replaced in its round instead of holding it until the deadline."""

from __future__ import annotations

import concurrent.futures

import pytest

from flcore.edge import api
from helpers import KIND_A, call, new_job, snapshot, submit

KEY = "k-0123456789abcdef"


def test_a_retried_register_gets_the_same_device_and_a_fresh_token(store, raw_db):
    first = call("register", {"info": KIND_A, "idempotency_key": KEY})  # its answer was lost
    again = call("register", {"info": KIND_A, "idempotency_key": KEY})
    assert again["device_id"] == first["device_id"] and again["token"] != first["token"]
    assert raw_db.devices.count_documents({}) == 1
    call("offers", token=again["token"])
    assert "invalid device token" in call("offers", token=first["token"], expect=401)["error"]
    other = call("register", {"info": KIND_A, "idempotency_key": KEY.replace("k", "j")})
    assert other["device_id"] != first["device_id"]  # another key: another device
    assert "idempotency_key" not in call("devices")["devices"][0]  # never shown


def test_concurrent_retries_of_one_register_make_one_device(store, raw_db):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call("register", {"info": KIND_A, "idempotency_key": KEY}), range(8)))
    assert len({a["device_id"] for a in answers}) == 1 and raw_db.devices.count_documents({}) == 1


def test_a_retried_subscribe_gets_the_same_place_even_once_the_job_is_full(store, raw_db):
    job_id = new_job()  # 3 places
    first = call("subscribe", {"job_id": job_id, "idempotency_key": KEY})
    others = [call("subscribe", {"job_id": job_id}) for _ in range(2)]
    assert store.get_job(job_id)["state"] == "running"  # full: it started
    again = call("subscribe", {"job_id": job_id, "idempotency_key": KEY})
    assert (again["client_id"], again["index"]) == (first["client_id"], first["index"])
    assert again["token"] != first["token"] and raw_db.clients.count_documents({"job_id": job_id}) == 3
    call("poll", token=again["token"])
    call("poll", token=first["token"], expect=401)
    assert {o["client_id"] for o in others} | {first["client_id"]} == {
        d["_id"] for d in raw_db.clients.find({"job_id": job_id})
    }


def test_concurrent_retries_of_one_subscribe_take_one_place(store, raw_db):
    job_id = new_job(num_clients=5)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: call("subscribe", {"job_id": job_id, "idempotency_key": KEY}), range(6)))
    assert len({a["client_id"] for a in answers}) == 1
    assert raw_db.clients.count_documents({"job_id": job_id}) == 1


@pytest.mark.parametrize("key", ["short", "x" * 129, "spaces are not allowed!", 12345678901234567, ["k" * 20]])
def test_a_bad_idempotency_key_is_refused_and_changes_nothing(store, raw_db, key):
    job_id = new_job()
    before = snapshot(raw_db)
    for action, body in (("register", {"info": KIND_A}), ("subscribe", {"job_id": job_id})):
        status, reply = api.handle(action, {**body, "idempotency_key": key}, {})
        assert status == 400 and "idempotency_key" in reply["error"]
    assert snapshot(raw_db) == before


def test_a_picked_client_gone_silent_is_replaced_and_a_heartbeat_keeps_one_picked(store, clock):
    job_id = new_job(num_clients=4, clients_per_round=2, client_timeout_s=60, round_timeout_s=600)
    subs = {s["client_id"]: s for s in (call("subscribe", {"job_id": job_id}) for _ in range(4))}
    silent, beating = store.get_job(job_id)["picked"]
    spares = [c for c in subs if c not in (silent, beating)]
    clock.advance(45)
    call("heartbeat", token=subs[beating]["token"])  # training, and saying so
    for c in spares:
        call("poll", token=subs[c]["token"])  # waiting, and polling
    clock.advance(20)  # 65 s after the silent one was last heard from; 20 s after the others
    call("poll", token=subs[spares[0]]["token"])  # any call moves the job: the silent pick is replaced
    picked = store.get_job(job_id)["picked"]
    assert silent not in picked and beating in picked and len(picked) == 2
    assert store.get_job(job_id)["round"] == 1 and store.get_job(job_id)["deadline"] > clock.now() + 500
    assert "was not picked" in submit(subs[silent], 1, seed=1, expect=409)["error"]
    for i, c in enumerate(picked):  # the round completes with the replacement, long before its deadline
        submit(subs[c], 1, seed=10 + i)
    call("aggregate", {"job_id": job_id})
    entry = store.get_job(job_id, history=True)["history"][0]
    assert entry["closed"] == "complete" and sorted(entry["client_ids"]) == sorted(picked)
