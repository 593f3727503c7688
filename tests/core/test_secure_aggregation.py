"""Secure aggregation (SecAgg+) through the function: devices (the client's own protocol code, calling
the real handler) mask their updates in four stages; the function gets the survivors' weighted mean
and nothing it stores gives any one update back; dropouts at each stage, replays, both kinds of share,
vectors of the wrong length and strategies that need single updates are handled or refused."""

from __future__ import annotations

import numpy as np
import pytest

from clients.secure import SecureClient, Trained
from flcore.shared import weights as wcodec
from flcore.shared.aggregation import fedavg
from flcore.shared.secagg import channel, masking, shamir
from helpers import call, random_weights, snapshot, subscribe_all

BASE = random_weights(seed=5)


class Device:
    """One subscribed device running the client's SecureClient against the handler, in process."""

    def __init__(self, sub: dict, weights: dict, examples: int):
        self.sub, self.weights, self.examples = sub, weights, examples
        self.name = sub["client_id"]
        self.secure = SecureClient(lambda action, body=None: call(action, body or {}, sub["token"]), lambda: self.name)
        self.stop_at: str | None = None  # the stage at which it vanishes
        self.gone = False

    def tick(self) -> str:
        if self.gone:
            return "gone"
        reply = call("poll", {}, self.sub["token"])
        st = reply.get("secure") or {}
        stage = "keys" if reply["action"] == "train" else st.get("stage")
        if self.stop_at is not None and stage == self.stop_at:
            self.gone = True
            return "gone"
        if reply["action"] == "train":
            if not self.secure.holds(reply["job_id"], reply["round"]):
                self.secure.keep(Trained(reply["job_id"], reply["round"], self.weights, self.examples,
                                         {"train_loss": 0.1}, True, {}))  # fmt: skip
            self.secure.advertise(reply["job_id"], reply["round"], st["attempt"])
        elif reply["action"] == "secure":
            self.secure.step(reply["job_id"], st)
        return reply["action"]


def _job(**cfg) -> str:
    body = {"num_clients": 6, "clients_per_round": 6, "rounds": 2, "secure_aggregation": {}, **cfg}
    return call("start_training", {**body, "weights": wcodec.to_b64(BASE)})["job_id"]


def _devices(job_id: str, n: int) -> list[Device]:
    subs = subscribe_all(job_id, n)
    rng = np.random.default_rng(7)
    return [
        Device(s, {k: (v + rng.normal(0, 0.05, v.shape)).astype(np.float32) for k, v in BASE.items()}, 100 + 50 * i)
        for i, s in enumerate(subs)
    ]


def _run_round(job_id: str, devices: list[Device], clock=None, timeout_s: float = 31.0, ticks: int = 30) -> dict:
    start = call("status", {"job_id": job_id})
    for _ in range(ticks):
        for d in devices:
            d.tick()
        st = call("status", {"job_id": job_id})
        if st["round"] != start["round"] or st["state"] != "running":
            return st
        if clock is not None and all(d.gone or d.tick() == "wait" for d in devices):
            clock.advance(timeout_s)  # the stage waits for those gone until its deadline
            call("aggregate", {"job_id": job_id})
    raise AssertionError(f"round did not close: {call('status', {'job_id': job_id}).get('secure')}")


def _model(job_id: str) -> dict:
    return wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])


def _assert_fedavg_of(job_id: str, survivors: list[Device]) -> None:
    model = _model(job_id)
    expected = fedavg([(d.weights, d.examples) for d in survivors])
    for name in BASE:
        np.testing.assert_allclose(model[name], expected[name], atol=2e-3)
    err = max(float(np.abs(model[n] - expected[n]).max()) for n in BASE)
    assert err < 2e-3, err


def test_the_function_gets_the_weighted_mean_and_the_database_no_single_update(store, raw_db):
    job_id = _job()
    devices = _devices(job_id, 6)
    st = _run_round(job_id, devices)
    assert st["round"] == 2 and st["history"][0]["secure"]["survivors"] == 6
    _assert_fedavg_of(job_id, devices)
    # what is stored once the round closed: its masked vectors only (the keys and shares relayed are
    # deleted), and none of them looks like its device's update
    assert raw_db.secure.count_documents({"job_id": job_id, "round": 1}) == 0
    cfg = st["config"]["secure_aggregation"]
    name = max(BASE, key=lambda k: BASE[k].size)
    for doc in raw_db.updates.find({"job_id": job_id}):
        vector = wcodec.decode(store.update_weights(doc))[name]
        assert vector.dtype == np.uint32
        looks = masking.dequantise(vector, 1, cfg["clip_range"], cfg["bits"])
        own = next(d for d in devices if d.name == doc["client_id"]).weights[name]
        assert abs(np.corrcoef(looks.ravel(), own.ravel())[0, 1]) < 0.1 and looks.std() > cfg["clip_range"] / 2
    for doc in raw_db.secure.find({"job_id": job_id}):
        assert set(doc) <= {"_id", "job_id", "round", "attempt", "stage", "client_id", "c", "s", "commit", "to",
                            "seeds", "keys"}  # fmt: skip


def test_masked_vectors_say_nothing_without_all_the_masks(store, raw_db):
    """Stop before unmasking: what the database holds then cannot be turned into a device's update."""
    job_id = _job()
    devices = _devices(job_id, 6)
    for d in devices:
        d.stop_at = "unmask"
    for _ in range(6):
        for d in devices:
            d.tick()
    docs = list(raw_db.updates.find({"job_id": job_id}))
    assert len(docs) == 6
    cfg = call("status", {"job_id": job_id})["config"]["secure_aggregation"]
    name = max(BASE, key=lambda k: BASE[k].size)  # enough values for a correlation to mean something
    for doc, d in zip(sorted(docs, key=lambda x: x["client_id"]), sorted(devices, key=lambda x: x.name)):
        masked = wcodec.decode(store.update_weights(doc))[name].astype(np.float64)
        looks = masking.dequantise(masked, 1, cfg["clip_range"], cfg["bits"])
        # uniformly spread over the whole range, uncorrelated with the device's weights
        assert abs(np.corrcoef(looks.ravel(), d.weights[name].ravel())[0, 1]) < 0.1
        assert looks.std() > cfg["clip_range"] / 2


@pytest.mark.parametrize("stage", ["keys", "shares", "masked", "unmask"])
def test_a_device_that_vanishes_at_any_stage_leaves_the_mean_of_the_survivors(store, clock, stage):
    job_id = _job(min_updates=3)
    devices = _devices(job_id, 6)
    devices[2].stop_at = stage
    st = _run_round(job_id, devices, clock)
    assert st["round"] == 2, st
    survivors = [d for d in devices if not d.gone]
    if stage == "unmask":  # it sent its masked vector: it counts, its seed rebuilt from its neighbours
        survivors = devices
    _assert_fedavg_of(job_id, survivors)


def test_too_few_survivors_fail_the_attempt_cleanly_and_retry_with_fresh_keys(store, clock):
    job_id = _job(min_updates=5, secure_aggregation={"max_attempts": 2})
    devices = _devices(job_id, 6)
    devices[0].stop_at = devices[1].stop_at = "masked"  # 4 of 6 mask: below min_updates 5
    for _ in range(8):
        for d in devices:
            d.tick()
        clock.advance(31)
        call("aggregate", {"job_id": job_id})
    st = call("status", {"job_id": job_id})
    assert st["state"] == "stopped" and "secure aggregation failed 2 times" in st["stopped_because"]
    assert st["model_round"] is None or st["model_round"] == 0  # no model from a failed sum


def test_messages_out_of_turn_are_refused_and_change_nothing(store, raw_db):
    job_id = _job()
    devices = _devices(job_id, 6)
    for d in devices:
        d.tick()  # everyone trained and advertised keys: the shares stage is open
    me = devices[0]
    before = snapshot(raw_db)
    replay = {"round": 1, "attempt": 0, "stage": "keys", "c": channel.public(channel.new_key()),
              "s": channel.public(channel.new_key()), "commit": "0" * 64}  # fmt: skip
    assert "not open" in call("secure", replay, me.sub["token"], expect=409)["error"]
    bad = {"round": 1, "attempt": 0, "stage": "shares", "to": {devices[1].name: "x"}}
    assert "exactly this device's" in call("secure", bad, me.sub["token"], expect=400)["error"]
    assert snapshot(raw_db) == before
    me.tick()  # its real shares
    assert "already sent its shares" in call("secure", _shares_of(me, job_id), me.sub["token"], expect=400)["error"]


def _shares_of(device: Device, job_id: str) -> dict:
    links = {d: "AAAA" for d in device.secure.attempt.neighbours}
    return {"round": 1, "attempt": 0, "stage": "shares", "to": links}


def test_both_kinds_of_share_for_one_device_and_a_wrong_length_vector_are_refused(store, raw_db, clock):
    job_id = _job(min_updates=3)
    devices = _devices(job_id, 6)
    devices[5].stop_at = "masked"
    for _ in range(3):
        for d in devices:
            d.tick()
    clock.advance(31)
    call("aggregate", {"job_id": job_id})  # the masked stage closes without device 5: unmask opens
    me = next(d for d in devices[:5])
    reply = call("poll", {}, me.sub["token"])
    assert reply["secure"]["stage"] == "unmask", reply
    st = reply["secure"]
    survivors, dropped = st["survivors"], st["dropped"]
    assert dropped == [devices[5].name] or devices[5].name not in me.secure.attempt.neighbours
    before = snapshot(raw_db)
    share = format(shamir.split(1, [1, 2], 2)[1], "x")
    seeds = {v: share for v in [*survivors, *dropped]}
    keys = {v: share for v in dropped or survivors[:1]}
    both = {"round": st["round"], "attempt": st["attempt"], "stage": "unmask", "seeds": seeds, "keys": keys}
    assert "never both" in call("secure", both, me.sub["token"], expect=400)["error"]
    assert snapshot(raw_db) == before
    # a vector of the wrong length, from a device that is asked for none now
    short = {k: np.zeros(3, np.uint32) for k in BASE}
    body = {"round": 1, "attempt": 0, "num_examples": 100, "weights": wcodec.to_b64(short)}
    call("submit", body, devices[5].sub["token"], expect=409)
    assert snapshot(raw_db) == before


def test_a_masked_vector_of_the_wrong_shape_is_refused(store, raw_db):
    job_id = _job()
    devices = _devices(job_id, 6)
    for _ in range(2):
        for d in devices:
            d.tick()  # keys, then shares
    me = devices[0]
    assert call("poll", {}, me.sub["token"])["secure"]["stage"] == "masked"
    before = snapshot(raw_db)
    wrong = {k: np.zeros(v.size + 1, np.uint32) for k, v in BASE.items()}
    wrong.update({n: np.zeros(1, np.uint32) for n in (masking.WEIGHT, masking.UNCLIPPED)})
    body = {"round": 1, "attempt": 0, "num_examples": 100, "weights": wcodec.to_b64(wrong)}
    assert "shape" in call("submit", body, me.sub["token"], expect=400)["error"]
    plain = {"round": 1, "attempt": 0, "num_examples": 100, "weights": wcodec.to_b64(BASE)}
    assert "masked" in call("submit", plain, me.sub["token"], expect=400)["error"]
    assert snapshot(raw_db) == before


@pytest.mark.parametrize(
    ("cfg", "says"),
    [
        ({"strategy": "median"}, "cannot run with secure_aggregation"),
        ({"strategy": "trimmed_mean"}, "cannot run with secure_aggregation"),
        ({"strategy": "scaffold"}, "control variates"),
        ({"mode": "async"}, "synchronous rounds"),
        ({"update_encoding": "int8"}, "leave update_encoding"),
        ({"clients_per_round": 2, "num_clients": 2}, "at least 3"),
        ({"secure_aggregation": {"threshold": 1, "degree": 4}}, "above half the degree"),
        ({"secure_aggregation": {"bits": 30}}, "secure_aggregation.bits must be"),
        ({"secure_aggregation": {"neighbors": 3}}, "unknown secure_aggregation settings"),
    ],
)
def test_what_cannot_work_is_refused(store, raw_db, cfg, says):
    before = snapshot(raw_db)
    body = {"num_clients": 6, "clients_per_round": 6, "secure_aggregation": {}, **cfg}
    assert says in call("start_training", body, expect=400)["error"]
    assert snapshot(raw_db) == before


def test_shamir_textbook_cases():
    # any threshold of the shares gives the secret back; one fewer gives something else
    secret = int.from_bytes(b"\x07" * 32, "big")
    shares = shamir.split(secret, [1, 2, 3, 4, 5], 3)
    for subset in ([1, 2, 3], [2, 4, 5], [1, 3, 5], [1, 2, 3, 4, 5]):
        assert shamir.combine([(x, shares[x]) for x in subset]) == secret
    assert shamir.combine([(1, shares[1]), (2, shares[2])]) != secret
    # a known polynomial: f(x) = 1234 + 166x + 94x^2 (the classic example) at x = 1..6
    points = [(1, 1494), (2, 1942), (3, 2578), (4, 3402), (5, 4414), (6, 5614)]
    assert shamir.combine(points[:3]) == 1234 and shamir.combine(points[3:]) == 1234
    with pytest.raises(ValueError):
        shamir.split(secret, [1, 1, 2], 2)


def test_masks_cancel_in_the_sum_and_quantisation_is_unbiased():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, 10_000)
    q = [masking.quantise(values, 8.0, 22, rng) for _ in range(4)]
    a, b = channel.new_key(), channel.new_key()
    pair = channel.agree(a, channel.public(b), "m")
    assert pair == channel.agree(b, channel.public(a), "m")
    first, second = {"t": q[0].copy()}, {"t": q[1].copy()}
    masking.apply_masks(first, [(pair, masking.pair_sign("a", "b"))])
    masking.apply_masks(second, [(pair, masking.pair_sign("b", "a"))])
    assert not np.array_equal(first["t"], q[0])
    total = first["t"] + second["t"]  # uint32: wraps modulo 2**32
    np.testing.assert_array_equal(total, q[0] + q[1])
    back = masking.dequantise(q[0] + q[1] + q[2] + q[3], 4, 8.0, 22)
    assert np.abs(back - 4 * values).max() <= 4 * masking.step(8.0, 22)
