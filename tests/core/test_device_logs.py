"""What devices tell the operator: log lines sent with polls, checked, capped per client, and read back
by job, device, level and time."""

from __future__ import annotations

import time

from flcore.domain.logs import KEEP_PER_CLIENT
from helpers import call, snapshot, subscribe_all


def _line(text: str, level: str = "info", at: float | None = None, **extra) -> dict:
    return {"at": at or time.time(), "level": level, "text": text, **extra}


def test_lines_sent_with_polls_are_read_back_by_level_and_time(store):
    job_id = call("start_training", {"num_clients": 2, "clients_per_round": 2})["job_id"]
    a, b = subscribe_all(job_id, 2)
    t0 = time.time()
    call("poll", {"log": [_line("round 1 trained", at=t0, round=1), _line("disk nearly full", "warning", t0 + 1)]},
         a["token"])  # fmt: skip
    call("poll", {"log": [_line("out of memory", "error", t0 + 2)]}, b["token"])
    lines = call("logs", {"job_id": job_id})["lines"]
    assert [x["text"] for x in lines] == ["round 1 trained", "disk nearly full", "out of memory"]
    assert lines[0]["client_id"] == a["client_id"] and lines[0]["round"] == 1
    bad = call("logs", {"job_id": job_id, "levels": ["warning", "error"]})["lines"]
    assert [x["level"] for x in bad] == ["warning", "error"]
    assert [x["text"] for x in call("logs", {"job_id": job_id, "since": t0 + 1.5})["lines"]] == ["out of memory"]
    mine = call("logs", {"job_id": job_id, "client_id": b["client_id"]})["lines"]
    assert [x["text"] for x in mine] == ["out of memory"]


def test_bad_lines_are_refused_and_change_nothing(store, raw_db):
    job_id = call("start_training", {"num_clients": 2, "clients_per_round": 2})["job_id"]
    sub = subscribe_all(job_id, 1)[0]
    before = snapshot(raw_db)
    for log, said in (
        ([_line("x", "debug")], "level must be one of"),
        ([_line("x" * 501)], "at most 500 characters"),
        ([_line("x")] * 21, "at most 20 lines"),
        ([{"text": "x", "level": "info"}], "at must be a time"),
        ([{**_line("x"), "html": "<b>"}], "must be an object of at, level, text"),
    ):
        assert said in call("poll", {"log": log}, sub["token"], expect=400)["error"]
    assert snapshot(raw_db) == before


def test_each_client_keeps_only_its_last_lines(store, raw_db):
    job_id = call("start_training", {"num_clients": 2, "clients_per_round": 2})["job_id"]
    sub = subscribe_all(job_id, 1)[0]
    t0 = time.time()
    for batch in range(KEEP_PER_CLIENT // 20 + 2):
        call("poll", {"log": [_line(f"line {batch * 20 + i}", at=t0 + batch * 20 + i) for i in range(20)]},
             sub["token"])  # fmt: skip
    kept = raw_db.logs.count_documents({"job_id": job_id})
    assert kept == KEEP_PER_CLIENT
    lines = call("logs", {"job_id": job_id, "limit": 1000})["lines"]
    assert lines[-1]["text"] == f"line {(KEEP_PER_CLIENT // 20 + 2) * 20 - 1}"


def test_a_devices_lines_from_every_job(store):
    from helpers import KIND_A, register

    device = register(KIND_A)
    said = []
    for text in ("first job", "second job"):
        job_id = call("create_job", {"num_clients": 1, "clients_per_round": 1})["job_id"]
        client = call("join", {"job_id": job_id}, token=device["token"])
        call("poll", {"log": [_line(text)]}, client["token"])
        said.append(job_id)
    lines = call("logs", {"device_id": device["device_id"]})["lines"]
    assert [(x["text"], x["job_id"]) for x in lines] == [("first job", said[0]), ("second job", said[1])]
    assert "job_id must be a string" in call("logs", {}, expect=400)["error"]
