"""selection: "fast": rounds pick fast, reliable devices, and nobody waits more than about a turn of the fleet."""

from __future__ import annotations

import math

import pytest

from flcore.domain.config import JobConfig
from flcore.engine.selection import overdue_after, score
from helpers import KIND_A, call, create, register, submit


def set_stats(raw_db, device_id, **stats):
    raw_db.devices.update_one({"_id": device_id}, {"$set": {f"stats.{k}": v for k, v in stats.items()}})


def test_score_is_speed_inflated_by_missed_deadlines():
    assert score({"mean_train_seconds": 10.0, "rounds_trained": 4, "deadlines_missed": 0}) == 10.0
    assert score({"mean_train_seconds": 10.0, "rounds_trained": 2, "deadlines_missed": 2}) == 20.0
    assert score({"mean_train_seconds": None, "rounds_trained": 0, "deadlines_missed": 0}) is None
    assert overdue_after(JobConfig(num_clients=20, clients_per_round=10)) == 3


def test_fast_picks_the_quick_reliable_devices_and_still_turns_to_every_one(store, raw_db):
    devs = [register(KIND_A) for _ in range(6)]
    # device i trains in 10 + i seconds; device 0 is the fastest but misses most of its deadlines
    for i, d in enumerate(devs):
        set_stats(
            raw_db,
            d["device_id"],
            train_seconds_total=10.0 + i,
            timed_updates=1,
            rounds_trained=1,
            deadlines_missed=3 if i == 0 else 0,
        )
    job_id = create(num_clients=6, clients_per_round=2, rounds=12, selection="fast")["job_id"]
    subs = [call("join", {"job_id": job_id}, token=d["token"]) for d in devs]
    by_client = {s["client_id"]: i for i, s in enumerate(subs)}
    picks = []
    for rnd in range(1, 13):
        picked = store.get_job(job_id)["picked"]
        picks.append(sorted(by_client[c] for c in picked))
        for sub in subs:
            if sub["client_id"] in picked:
                submit(sub, rnd, seed=rnd * 10 + by_client[sub["client_id"]])
        call("aggregate", {"job_id": job_id})
    assert picks[0] == [1, 2]  # the fastest reliable two; device 0 is fast but misses deadlines (score 10 x 2.5)
    # fairness: nobody waits more than K rounds plus one turn of the fleet (the overdue queue)
    bound = overdue_after(JobConfig(num_clients=6, clients_per_round=2)) + math.ceil(6 / 2)
    for device in range(6):
        rounds = [r + 1 for r, p in enumerate(picks) if device in p]
        gaps = [b - a for a, b in zip([0] + rounds, rounds + [13])]
        assert rounds and max(gaps) <= bound, (device, rounds)
    fast_share = sum(p.count(1) + p.count(2) for p in picks) / (2 * len(picks))
    assert fast_share > 2 / 6  # the quick ones are picked more often than their share under random picking


def test_random_stays_the_default_and_bad_values_are_refused(store):
    assert call("create_job", {"num_clients": 2, "clients_per_round": 1})["config"]["selection"] == "random"
    assert "selection must be one of" in call("create_job", {"selection": "slowest"}, expect=400)["error"]
    job_id = create()["job_id"]
    assert call("update_job", {"job_id": job_id, "set": {"selection": "fast"}})["set"] == {"selection": "fast"}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_slow_devices_take_their_turns_together_and_once(store, raw_db, seed):
    devs = [register(KIND_A) for _ in range(6)]
    slow = {0, 1}  # four devices train in about 10 s, two in about 40 s
    for i, d in enumerate(devs):
        set_stats(
            raw_db,
            d["device_id"],
            train_seconds_total=40.0 + i if i in slow else 10.0 + i,
            timed_updates=1,
            rounds_trained=1,
        )
    job_id = create(num_clients=6, clients_per_round=2, rounds=12, selection="fast", seed=seed)["job_id"]
    subs = [call("join", {"job_id": job_id}, token=d["token"]) for d in devs]
    by_client = {s["client_id"]: i for i, s in enumerate(subs)}
    slow_rounds = []
    for rnd in range(1, 13):
        picked = {by_client[c] for c in store.get_job(job_id)["picked"]}
        if picked & slow:
            slow_rounds.append((rnd, picked))
        for sub in subs:
            if by_client[sub["client_id"]] in picked:
                submit(sub, rnd, seed=rnd * 10 + by_client[sub["client_id"]])
        call("aggregate", {"job_id": job_id})
    assert slow_rounds and all(p == slow for _, p in slow_rounds)  # they come together, never one per round
    # a turn counts as soon as its round closes: the next round does not pick them again as overdue
    rounds = [r for r, _ in slow_rounds]
    assert all(b - a > 1 for a, b in zip(rounds, rounds[1:])), rounds
    assert len(rounds) <= 12 // (overdue_after(JobConfig(num_clients=6, clients_per_round=2)) + 1) + 1
