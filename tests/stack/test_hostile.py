"""A corpus of hostile requests through serverless-offline: all 4xx, no 5xx, database unchanged."""

from __future__ import annotations

import base64
import json
import pickle
import struct
import zlib
from collections import Counter

import numpy as np
import requests
from pymongo import MongoClient

from flcore.domain.metrics import MAX_METRICS
from flcore.shared import weights as wcodec
from helpers import ADMIN, random_weights, snapshot, tensor_spec


def _b64(tensors: dict) -> str:
    return wcodec.to_b64(tensors)


def corpus(base: str, picked: dict, other: dict, old_round: int) -> list[tuple[str, dict]]:
    """(description, requests.post kwargs) for each hostile request."""
    good = random_weights()
    auth = {"Authorization": f"Bearer {picked['token']}"}
    cases: list[tuple[str, dict]] = []

    def add(desc, action, body=None, headers=None, data=None):
        kw = {
            "url": f"{base}/{action}",
            "headers": {"Content-Type": "application/json", **(headers or {})},
            "timeout": 30,
        }
        kw["data"] = data if data is not None else json.dumps(body if body is not None else {})
        cases.append((desc, kw))

    # malformed bodies, on every action
    for action in (
        "start_training",
        "subscribe",
        "partition",
        "poll",
        "get_model",
        "submit",
        "aggregate",
        "status",
        "create_job",
        "list_jobs",
        "register",
        "offers",
        "join",
        "leave",
        "update_job",
    ):
        for desc, data in [
            ("truncated", '{"a": '),
            ("array", "[1,2,3]"),
            ("string", '"hi"'),
            ("NaN", '{"x": NaN}'),
            ("binary", b"\x00\xff\xfe\x80"),
            ("deep", "[" * 5000 + "]" * 5000),
        ]:
            add(f"{action}: {desc} body", action, data=data, headers=auth if action != "start_training" else None)
    # operator actions without or with a wrong token
    add("start_training without token", "start_training", {"num_clients": 2})
    add("start_training with a client token", "start_training", {"num_clients": 2}, auth)
    add("start_training forged token", "start_training", {"num_clients": 2}, {"Authorization": "Bearer " + "A" * 40})
    # wrong types and ranges in a job (with the operator token: validation, not auth, refuses them)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for field, values in {
        "num_clients": [0, -1, "20", 1e400, 2**70, None, [20], {"$gt": 1}, True],
        "rounds": [0, 1.5, "10", 10**9],
        "lr": [-1, 0, "0.1", 1e400],
        "momentum": [1, -0.1, "x"],
        "batch_size": [0, 2**40, 2.5],
        "dataset": ["imagenet", 7, {"$ne": 1}, ""],
        "clients_per_round": [10**6],
        "seed": [-1, 2**80, "s"],
        "partition": [1, "evil"],
        "round_timeout_s": [0, -5, 1e12],
    }.items():
        for v in values:
            add(f"start_training {field}={v!r:.30}", "start_training", {field: v}, admin)
    add(
        "start_training NaN weights",
        "start_training",
        {"weights": _b64({**good, "fc1.bias": np.full(64, np.nan, np.float32)})},
        admin,
    )
    add(
        "start_training pickle weights",
        "start_training",
        {"weights": base64.b64encode(pickle.dumps(good)).decode()},
        admin,
    )
    # client actions without, with forged, malformed or other clients' tokens
    forged = [
        ("none", {}),
        ("empty", {"Authorization": "Bearer "}),
        ("basic", {"Authorization": "Basic dXNlcjpw"}),
        ("garbage", {"Authorization": "Bearer garbage"}),
        ("wrong secret", {"Authorization": f"Bearer {picked['client_id']}.not-the-secret"}),
        ("swapped", {"Authorization": f"Bearer {other['client_id']}.{picked['token'].split('.', 1)[1]}"}),
        ("injection", {"Authorization": 'Bearer {"$ne": null}.x'}),
        ("long", {"Authorization": "Bearer " + "x.y" * 5000}),
    ]
    for action in ("partition", "poll", "submit"):
        for desc, headers in forged:
            add(f"{action} token {desc}", action, {"round": 1}, headers)
    # tensors that do not fit the model
    spec = tensor_spec("cnn_mnist")
    bad_tensors = {
        "NaN": {**good, "conv1.weight": np.full(spec["conv1.weight"], np.nan, np.float32)},
        "+Inf": {**good, "fc2.weight": np.full(spec["fc2.weight"], np.inf, np.float32)},
        "-Inf": {**good, "fc2.bias": np.full(10, -np.inf, np.float32)},
        "wrong shape": {**good, "fc1.weight": np.zeros((64, 511), np.float32)},
        "transposed": {**good, "fc2.weight": good["fc2.weight"].T.copy()},
        "float64": {**good, "fc1.bias": good["fc1.bias"].astype(np.float64)},
        "float16": {**good, "fc1.bias": good["fc1.bias"].astype(np.float16)},
        "int32": {**good, "conv1.bias": np.zeros(16, np.int32)},
        "missing": {k: v for k, v in good.items() if k != "conv2.weight"},
        "extra": {**good, "backdoor": np.zeros(1, np.float32)},
        "empty": {},
        "scalar": {**good, "fc2.bias": np.float32(1.0).reshape(())},
    }
    for desc, tensors in bad_tensors.items():
        try:
            payload = _b64(tensors)
        except Exception:
            continue
        add(f"submit {desc} tensors", "submit", {"round": 1, "weights": payload, "num_examples": 10}, auth)
    for desc, payload in [
        ("pickle", base64.b64encode(pickle.dumps(good)).decode()),
        ("pickle RCE", base64.b64encode(b"cos\nsystem\n(S'echo pwned'\ntR.").decode()),
        ("not base64", "%%%%"),
        ("truncated", _b64(good)[:1000]),
        ("number", 12345),
        ("list", [1, 2]),
        ("header bomb", base64.b64encode(b"\xff" * 8 + b"{}").decode()),
    ]:
        add(f"submit {desc} weights", "submit", {"round": 1, "weights": payload, "num_examples": 10}, auth)
    # bad numbers and metrics with valid weights
    ok = _b64(good)
    for desc, extra in [
        ("num_examples 0", {"num_examples": 0}),
        ("num_examples -1", {"num_examples": -1}),
        ("num_examples huge", {"num_examples": 10**30}),
        ("num_examples str", {"num_examples": "10"}),
        ("num_examples float", {"num_examples": 10.5}),
        ("round str", {"round": "1"}),
        ("round float", {"round": 1.0}),
        ("round null", {"round": None}),
        ("metrics str", {"metrics": "x"}),
        ("metrics NaN-ish", {"metrics": {"loss": "nan"}}),
        ("metrics operator", {"metrics": {"$set": 1}}),
        ("metrics dotted", {"metrics": {"a.b": 1}}),
        ("metrics many", {"metrics": {f"m{i}": 1 for i in range(MAX_METRICS + 1)}}),
        ("metrics nested", {"metrics": {"a": {"b": 1}}}),
    ]:
        add(f"submit {desc}", "submit", {"round": 1, "weights": ok, "num_examples": 10, **extra}, auth)
    # replays and submits out of turn
    for rnd in (old_round, 0, 2, 99, -1, 10**12):
        add(f"submit replay round {rnd}", "submit", {"round": rnd, "weights": ok, "num_examples": 10}, auth)
    add(
        "submit by a client not picked",
        "submit",
        {"round": 1, "weights": ok, "num_examples": 10},
        {"Authorization": f"Bearer {other['token']}"},
    )
    add("subscribe to a full job", "subscribe", {"job_id": picked["job_id"]})
    add("subscribe job_id object", "subscribe", {"job_id": {"$ne": None}})
    add("subscribe unknown job", "subscribe", {"job_id": "job-doesnotexist"})
    add("status of unknown job", "status", {"job_id": "job-nope"}, admin)
    add("aggregate unknown job", "aggregate", {"job_id": "job-nope"}, admin)
    # values the database cannot hold, in every action (sent as raw JSON text)
    for action in ("subscribe", "status", "get_model", "aggregate"):
        add(f"{action} job_id lone surrogate", action, data='{"job_id": "\\ud800"}', headers=admin)
    for rnd in ("9223372036854775808", "1" + "0" * 30, "-9223372036854775809"):
        add(f"submit round {rnd[:8]}...", "submit", data='{"round": ' + rnd + ', "num_examples": 10}', headers=auth)
    for key in ("a\\u0000b", "\\udfff"):
        add(
            f"submit metrics key {key}",
            "submit",
            data='{"round": 1, "num_examples": 10, "weights": "' + ok + '", "metrics": {"' + key + '": 1}}',
            headers=auth,
        )
    # settings a job does not have: a typo, injection, a huge key, another strategy's setting
    for body in (
        {"num_client": 5},
        {"model": "resnet152"},
        {"$where": "1"},
        {"__proto__": {"x": 1}},
        {"k" * 100_000: 1},
        {"proximal_mu": 0.5},
    ):
        add(f"start_training unknown {str(body)[:30]}", "start_training", body, admin)
    # a client claiming far more data than its share
    add("submit claims 10^8 examples", "submit", {"round": 1, "weights": ok, "num_examples": 100_000_000}, auth)
    # the job control plane and the device registry
    for action in ("create_job", "start_job", "stop_job", "update_job", "list_jobs", "devices"):
        add(f"{action} without token", action, {"job_id": picked["job_id"]})
        add(f"{action} with a client token", action, {"job_id": picked["job_id"]}, auth)
    for desc, body in [
        ("criteria $where", {"criteria": {"$where": "sleep(1)"}}),
        ("criteria js in a value", {"criteria": {"info.cpus": {"$function": {"body": "x"}}}}),
        ("criteria deep", {"criteria": json.loads('{"$and": [' * 10 + "{}" + "]}" * 10)}),
        ("criteria huge $in", {"criteria": {"info.cpus": {"$in": list(range(1000))}}}),
        ("criteria on tokens", {"criteria": {"token_hash": {"$exists": True}}}),
        ("rule with code", {"rules": [{"when": {"round": 1}, "then": {"exec": "import os"}}]}),
        ("rule when on config", {"rules": [{"when": {"config.lr": 1}, "then": {"stop": "x"}}]}),
        ("rule set num_clients", {"rules": [{"when": {}, "then": {"set": {"num_clients": 1}}}]}),
        ("rules not a list", {"rules": {"when": {}}}),
        ("priority 2^70", {"priority": 2**70}),
        ("tags of objects", {"tags": [{"$ne": 1}]}),
        ("name object", {"name": {"$gt": ""}}),
    ]:
        add(f"create_job {desc}", "create_job", body, admin)
    for desc, body in [
        ("set lr string", {"set": {"lr": "0.1"}}),
        ("set strategy", {"set": {"strategy": "median"}}),
        ("set operator", {"set": {"$set": {"state": "done"}}}),
        ("set not object", {"set": [1]}),
        ("no set", {}),
    ]:
        add(f"update_job {desc}", "update_job", {"job_id": picked["job_id"], **body}, admin)
    add("list_jobs state injection", "list_jobs", {"state": {"$ne": None}}, admin)
    add("list_jobs tag injection", "list_jobs", {"tag": {"$regex": ".*"}}, admin)
    add("list_jobs forged cursor", "list_jobs", {"after": {"$gt": 0}}, admin)
    for desc, info in [
        ("not object", "x"),
        ("unknown field", {"token": "x"}),
        ("labels injection", {"labels": {"$x": "y"}}),
        ("dataset count str", {"datasets": {"mnist": "all"}}),
        ("cpus huge", {"cpus": 10**9}),
    ]:
        add(f"register info {desc}", "register", {"info": info})
    for action in ("offers", "join", "update_device"):
        for desc, headers in forged[:5] + [("a client token", auth)]:
            add(f"{action} token {desc}", action, {"job_id": picked["job_id"], "info": {}}, headers)
    add("leave with an operator token", "leave", {"reason": "x"}, admin)
    add("leave reason object", "leave", {"reason": {"$set": 1}}, auth)
    add("predict without token", "predict", {"job_id": picked["job_id"], "inputs": [[[0] * 28] * 28]})
    add("predict other job as client", "predict", {"job_id": "job-nope", "inputs": [[[0] * 28] * 28]}, auth)
    add("predict pixels as text", "predict", {"job_id": picked["job_id"], "inputs": "AAAA"}, admin)
    add(
        "predict pickled image",
        "predict",
        {"job_id": picked["job_id"], "image": base64.b64encode(pickle.dumps(good)).decode()},
        admin,
    )
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 65536, 65536, 8, 0, 0, 0, 0)  # a valid header: 4 GB of pixels
    bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\r" + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    add(
        "predict image bomb header",
        "predict",
        {"job_id": picked["job_id"], "image": base64.b64encode(bomb).decode()},
        admin,
    )
    add("report with a client token", "report", {"job_id": picked["job_id"], "round": 1, "metrics": {"a": 1}}, auth)
    add("report metrics injection", "report", {"job_id": picked["job_id"], "round": 0, "metrics": {"$set": 1}}, admin)
    add("get_model bad round", "get_model", {"round": 5}, auth)
    add("get_model round object", "get_model", {"round": {"$gt": 0}}, auth)
    add("unknown action", "drop_database", {})
    add("oversized body", "submit", data="x" * (7 * 2**20), headers=auth)
    return cases


def test_hostile_requests_are_refused_and_change_nothing(function_url, mongodb_url, capsys):
    post = lambda action, body, token=None: requests.post(  # noqa: E731
        f"{function_url}/{action}", json=body, timeout=30, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    job_id = post("start_training", {"num_clients": 2, "clients_per_round": 1, "rounds": 3}, ADMIN).json()["job_id"]
    subs = [post("subscribe", {"job_id": job_id}).json() for _ in range(2)]
    picked_ids = post("status", {"job_id": job_id}, ADMIN).json()["picked"]
    picked = next(s for s in subs if s["client_id"] in picked_ids)
    other = next(s for s in subs if s["client_id"] not in picked_ids)

    with MongoClient(mongodb_url) as mc:
        db = mc["e2e"]
        before = snapshot(db)
        cases = corpus(function_url, picked, other, old_round=0)
        codes: Counter = Counter()
        bad = []
        for desc, kw in cases:
            resp = requests.post(**kw)
            codes[resp.status_code] += 1
            if not 400 <= resp.status_code < 500:
                bad.append((desc, resp.status_code, resp.text[:120]))
        after = snapshot(db)
    with capsys.disabled():
        print(f"\nhostile requests: {len(cases)} sent; status codes {dict(sorted(codes.items()))}")
    assert len(cases) >= 100
    assert not bad, bad
    assert after == before


def test_a_copied_update_over_http_is_409_and_does_not_count(function_url, mongodb_url):
    post = lambda action, body, token=None: requests.post(  # noqa: E731
        f"{function_url}/{action}", json=body, timeout=30, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    job_id = post("start_training", {"num_clients": 2, "clients_per_round": 2, "rounds": 2}, ADMIN).json()["job_id"]
    a, b = [post("subscribe", {"job_id": job_id}).json() for _ in range(2)]
    update = {"round": 1, "weights": _b64(random_weights(seed=5)), "num_examples": 100}
    assert post("submit", update, a["token"]).json()["accepted"] is True
    with MongoClient(mongodb_url) as mc:
        before = snapshot(mc["e2e"])
        resp = post("submit", update, b["token"])
        assert resp.status_code == 409 and "identical" in resp.json()["error"]
        assert snapshot(mc["e2e"]) == before
    assert post("status", {"job_id": job_id}, ADMIN).json()["submitted"] == 1
