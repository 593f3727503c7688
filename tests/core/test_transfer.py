"""Models and updates larger than one request: chunked uploads and downloads through GridFS,
hostile chunks, and streaming aggregation equal to the in-memory computation."""

from __future__ import annotations

import base64
import hashlib
import json
import struct

import numpy as np
import pytest

from clients import transfer as client_transfer
from flcore.shared import aggregation, modeldef
from flcore.shared import weights as wcodec
from flcore.shared.datasets import CHUNK_BYTES
from helpers import ADMIN, call, snapshot, subscribe_all

# 143,110 parameters: 572,440 bytes, two chunks
WIDE = [
    {"type": "flatten"},
    {"type": "linear", "name": "fc1", "out": 180},
    {"type": "relu"},
    {"type": "linear", "name": "fc2", "out": 10},
]
MDEF = modeldef.resolve(WIDE, "mnist")


def weights(seed: int, scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in MDEF.spec.items()}


def as_client(sub):
    return lambda action, body=None: call(action, body, sub["token"])


def wide_job(**cfg) -> tuple[str, list[dict]]:
    job_id = call(
        "create_job",
        {"model": WIDE, "num_clients": 3, "clients_per_round": 3, "rounds": 2, "round_timeout_s": 600, **cfg},
    )["job_id"]
    subs = subscribe_all(job_id, cfg.get("num_clients", 3))
    return job_id, subs


def upload(sub, rnd: int, blob: bytes, indices=None, sha: str | None = None, expect=200):
    sha = sha or hashlib.sha256(blob).hexdigest()
    total = -(-len(blob) // CHUNK_BYTES)
    replies = []
    for i in range(total) if indices is None else indices:
        data = base64.b64encode(blob[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]).decode()
        replies.append(
            call(
                "upload_chunk",
                {"round": rnd, "size": len(blob), "sha256": sha, "index": i, "data": data},
                sub["token"],
                expect=expect,
            )
        )
    return replies


def finish(sub, rnd: int, blob: bytes, expect=200, n=100):
    declared = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    return call("submit", {"round": rnd, "upload": declared, "num_examples": n}, sub["token"], expect=expect)


def rounds_state(raw_db, job_id):
    job = raw_db.jobs.find_one({"_id": job_id})
    return job["round"], job.get("model_round"), raw_db.updates.count_documents({"job_id": job_id})


@pytest.fixture(autouse=True)
def operator(monkeypatch):
    monkeypatch.setenv("FL_ADMIN_TOKEN", ADMIN)


def test_large_updates_travel_in_chunks_and_the_model_comes_back_in_chunks(store, raw_db):
    job_id, subs = wide_job()
    sent = [weights(seed=i) for i in range(3)]
    for sub, w, n in zip(subs, sent, (100, 200, 300)):
        blob = wcodec.encode(w)
        assert len(blob) > CHUNK_BYTES  # too large for one request
        client_transfer.submit(as_client(sub), {"round": 1, "num_examples": n}, blob)
    call("aggregate", {"job_id": job_id})
    assert raw_db.jobs.find_one({"_id": job_id})["model_round"] == 1
    assert all(d["blob"].startswith("up:") for d in raw_db.updates.find({"job_id": job_id}))  # sealed uploads
    assert raw_db.uploads.count_documents({}) == 0
    reply = call("get_model", {"job_id": job_id}, ADMIN)
    assert reply["weights"] is None and reply["chunked"]["weights"]["chunks"] == 2
    got = wcodec.decode(client_transfer.model_part(lambda a, b: call(a, b, ADMIN), reply))
    total = 600.0
    for k in MDEF.spec:  # FedAvg by examples, computed here in float64
        expected = sum(w[k].astype(np.float64) * n / total for w, n in zip(sent, (100, 200, 300)))
        np.testing.assert_allclose(got[k], expected, atol=1e-6)


def test_chunks_in_any_order_and_sent_twice_change_nothing(store, raw_db):
    job_id, subs = wide_job()
    blob = wcodec.encode(weights(seed=1))
    upload(subs[0], 1, blob, indices=[1, 0])
    before = snapshot(raw_db)
    again = upload(subs[0], 1, blob, indices=[0])
    assert again[0]["duplicate"] is True
    assert {k: v for k, v in snapshot(raw_db).items() if k != "uploads"} == {
        k: v for k, v in before.items() if k != "uploads"
    }  # only the upload's last-touched time moved
    assert finish(subs[0], 1, blob)["accepted"] is True
    assert finish(subs[0], 1, blob)["duplicate"] is True  # the submit retried: still once


def test_a_chunk_resent_with_other_bytes_is_refused(store, raw_db):
    job_id, subs = wide_job()
    blob = wcodec.encode(weights(seed=1))
    upload(subs[0], 1, blob, indices=[0])
    other = bytearray(blob)
    other[100] ^= 0xFF
    body = {
        "round": 1,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "index": 0,
        "data": base64.b64encode(bytes(other[:CHUNK_BYTES])).decode(),
    }
    assert "different bytes" in call("upload_chunk", body, subs[0]["token"], expect=409)["error"]


def test_a_new_upload_replaces_the_one_a_client_left_unfinished(store, raw_db):
    """A client holds at most one update's worth of staging per round, however many it starts."""
    job_id, subs = wide_job()
    first, second = wcodec.encode(weights(seed=1)), wcodec.encode(weights(seed=2))
    upload(subs[0], 1, first, indices=[0])
    upload(subs[0], 1, second, indices=[0, 1])
    staged = raw_db["blobs.chunks"].count_documents({"files_id": {"$regex": "^up:"}})
    assert staged == 2 and raw_db.uploads.count_documents({}) == 1
    assert "missing chunks [0, 1]" in finish(subs[0], 1, first, expect=400)["error"]
    assert finish(subs[0], 1, second)["accepted"] is True


def test_missing_chunks_are_named_and_nothing_counts(store, raw_db):
    job_id, subs = wide_job()
    blob = wcodec.encode(weights(seed=1))
    upload(subs[0], 1, blob, indices=[1])
    state = rounds_state(raw_db, job_id)
    assert "missing chunks [0]" in finish(subs[0], 1, blob, expect=400)["error"]
    assert rounds_state(raw_db, job_id) == state
    upload(subs[0], 1, blob, indices=[0])  # resumed: the chunk already sent is kept
    assert finish(subs[0], 1, blob)["accepted"] is True


def test_wrong_sha256_discards_the_upload(store, raw_db):
    job_id, subs = wide_job()
    blob = wcodec.encode(weights(seed=1))
    lie = hashlib.sha256(b"something else").hexdigest()
    upload(subs[0], 1, blob, sha=lie)
    state = rounds_state(raw_db, job_id)
    body = {"round": 1, "upload": {"size": len(blob), "sha256": lie}, "num_examples": 100}
    assert "do not match the sha256" in call("submit", body, subs[0]["token"], expect=400)["error"]
    assert rounds_state(raw_db, job_id) == state
    assert raw_db["blobs.chunks"].count_documents({"files_id": {"$regex": "^up:"}}) == 0


def _lying_file(header: dict, data_len: int, claimed: int | None = None) -> bytes:
    """A safetensors file whose JSON header says what we like (and its length field, ``claimed``)."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", claimed or len(text)) + text + bytes(data_len)


@pytest.mark.parametrize(
    "lie, words",
    [
        ("offsets", "overlap or leave gaps"),
        ("shape", "has shape"),
        ("dtype", "expected float32"),
        ("nan", "NaN or infinite"),
        ("length", "header length"),
        ("trailing", "the tensors end at byte"),
    ],
)
def test_lying_headers_are_refused_across_chunks(store, raw_db, lie, words):
    """The header sits in the first chunk (an update's header is at most a few kB, checked first);
    its lies are about tensors whose bytes span the chunk boundary."""
    job_id, subs = wide_job()
    spec = MDEF.spec
    header, offset = {}, 0
    for name, shape in spec.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if lie == "offsets":
        header["fc2.bias"]["data_offsets"] = [0, 40]  # overlaps fc1's weights
    elif lie == "shape":
        header["fc1.weight"]["shape"] = [784, 180]
    elif lie == "dtype":
        header["fc1.bias"]["dtype"] = "F16"
    blob = bytearray(
        _lying_file(
            header, offset + (8 if lie == "trailing" else 0), claimed=CHUNK_BYTES + 10 if lie == "length" else None
        )
    )
    if lie == "nan":  # a value of fc1.weight in the second chunk
        start = 8 + struct.unpack("<Q", blob[:8])[0]
        at = start + 4 * ((CHUNK_BYTES - start) // 4 + 1)
        blob[at : at + 4] = np.array([np.nan], dtype=np.float32).tobytes()
    blob = bytes(blob)
    assert len(blob) > CHUNK_BYTES
    upload(subs[0], 1, blob)
    state = rounds_state(raw_db, job_id)
    reply = finish(subs[0], 1, blob, expect=400)
    assert words in reply["error"], reply
    assert rounds_state(raw_db, job_id) == state
    assert raw_db["blobs.chunks"].count_documents({"files_id": {"$regex": "^up:"}}) == 0  # discarded


def test_bad_chunks_are_refused_before_anything_is_stored(store, raw_db):
    job_id, subs = wide_job(num_clients=4, clients_per_round=3)
    blob = wcodec.encode(weights(seed=1))
    sha = hashlib.sha256(blob).hexdigest()
    picked = raw_db.jobs.find_one({"_id": job_id})["picked"]
    outsider = next(s for s in subs if s["client_id"] not in picked)
    sub = next(s for s in subs if s["client_id"] in picked)
    first = base64.b64encode(blob[:CHUNK_BYTES]).decode()
    base = {"round": 1, "size": len(blob), "sha256": sha, "index": 0, "data": first}
    before = snapshot(raw_db)
    cases = [
        (outsider, base, 409, "not picked"),
        (sub, {**base, "round": 2}, 409, "not open"),
        (sub, {**base, "index": 2}, 400, "index"),
        (sub, {**base, "index": -1}, 400, "index"),
        (sub, {**base, "data": first[:-8]}, 400, "must have"),
        (sub, {**base, "data": "not base64!"}, 400, "base64"),
        (sub, {**base, "sha256": "ABC"}, 400, "sha256"),
        (sub, {**base, "size": 10**10}, 413, "upload size"),
        (sub, {**base, "size": "big"}, 400, "upload size"),
    ]
    for who, body, status, words in cases:
        reply = call("upload_chunk", body, who["token"], expect=status)
        assert words in reply["error"], (body, reply)
    assert (
        "weights or upload"
        in call(
            "submit",
            {"round": 1, "num_examples": 10, "weights": "AAAA", "upload": {"size": 10, "sha256": sha}},
            sub["token"],
            expect=400,
        )["error"]
    )
    assert snapshot(raw_db) == before


def test_an_upload_never_finished_never_counts_and_is_deleted(store, raw_db, clock):
    job_id, subs = wide_job(min_updates=2, round_timeout_s=1)
    picked = raw_db.jobs.find_one({"_id": job_id})["picked"]
    subs = [s for s in subs if s["client_id"] in picked]
    upload(subs[0], 1, wcodec.encode(weights(seed=0)), indices=[0])  # and never the rest
    for i, sub in enumerate(subs[1:], start=1):
        client_transfer.submit(as_client(sub), {"round": 1, "num_examples": 100}, wcodec.encode(weights(seed=i)))
    clock.advance(1.1)
    call("aggregate", {"job_id": job_id})
    entry = raw_db.jobs.find_one({"_id": job_id})["history"][0]
    assert entry["clients"] == 2 and subs[0]["client_id"] not in entry["client_ids"]
    assert raw_db.uploads.count_documents({}) == 0
    assert raw_db["blobs.chunks"].count_documents({"files_id": {"$regex": f"^up:{subs[0]['client_id']}"}}) == 0


@pytest.mark.parametrize(
    "strategy, extra",
    [
        ("fedavg", {}),
        ("fedavgm", {}),
        ("fedadam", {}),
        ("scaffold", {}),
        ("median", {}),
        ("trimmed_mean", {"trim_fraction": 0.2}),
    ],
)
def test_streamed_aggregation_equals_the_in_memory_computation(store, raw_db, monkeypatch, strategy, extra):
    """Read one at a time from GridFS (the robust rules block by block, several blocks here) and
    folded, the result equals the strategy applied to the updates held in memory."""
    monkeypatch.setattr(aggregation, "BLOCK_BYTES", 300_000)
    x0 = weights(seed=50)
    n = 5
    job_id = call(
        "create_job",
        {
            "model": WIDE,
            "num_clients": n,
            "clients_per_round": n,
            "rounds": 2,
            "strategy": strategy,
            "weights": wcodec.to_b64(x0),
            **extra,
        },
    )["job_id"]
    subs = subscribe_all(job_id, n)
    updates = []
    for i, sub in enumerate(subs):
        w = weights(seed=i)
        if strategy == "scaffold":
            w.update({"control/" + k: v * 0.01 for k, v in weights(seed=100 + i).items()})
        examples = 50 * (i + 1)
        client_transfer.submit(as_client(sub), {"round": 1, "num_examples": examples}, wcodec.encode(w))
        updates.append((w, examples))
    call("aggregate", {"job_id": job_id})
    got = wcodec.decode(
        client_transfer.model_part(lambda a, b: call(a, b, ADMIN), call("get_model", {"job_id": job_id}, ADMIN))
    )
    from flcore.domain.config import parse_config

    rule = parse_config({"strategy": strategy, **extra}).build_strategy()
    expected, _ = rule.aggregate(x0, updates, {}, n)
    for k in MDEF.spec:
        np.testing.assert_allclose(got[k], expected[k], atol=1e-6)
