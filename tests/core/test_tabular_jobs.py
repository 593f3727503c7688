"""Jobs over data the devices declare, through the core's entry point against a real database: the data
block at create, the schema at join, the statistics step, and predict for rows against torch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from flcore.shared import modeldef, tabular
from flcore.shared import weights as wcodec
from fllocal import models
from helpers import call, register, snapshot

COLUMNS = {"size": "numeric", "rooms": "numeric", "town": "categorical", "price": "numeric"}
DATA = {"name": "shop", "task": "regression", "target": "price", "transform": "log1p", "min_category_count": 1}


def device(rows=100, columns=None):
    info = {"datasets": {"shop": {"rows": rows, "columns": columns or COLUMNS, "fingerprint": "ab" * 8}}}
    return register(info)


def job(**extra):
    body = {"data": DATA, "num_clients": 2, "clients_per_round": 2, "rounds": 2, "model": "linear", **extra}
    return call("create_job", body)["job_id"]


def stats(rng, n, towns):
    table = {
        "size": [f"{v:.2f}" for v in rng.normal(100, 20, n)],
        "rooms": [str(int(v)) for v in rng.integers(1, 6, n)],
        "town": [towns[i % len(towns)] for i in range(n)],
        "price": [f"{v:.0f}" for v in rng.uniform(5e4, 5e5, n)],
    }
    return table


SCHEMA = {
    "features": [["size", "numeric"], ["rooms", "numeric"], ["town", "categorical"]],
    "target": "price",
    "task": "regression",
    "transform": "log1p",
}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"data": {**DATA, "task": "ranking"}}, "data.task must be one of"),
        ({"data": {**DATA, "features": ["price"]}}, "must not hold the target"),
        ({"data": {**DATA, "colour": 1}}, "unknown fields ['colour']"),
        ({"data": DATA, "dataset": "mnist"}, "leave dataset out"),
        ({"data": DATA, "model": "cnn_mnist"}, "needs channels x height x width"),
        ({"data": "shop"}, "data must be an object"),
    ],
)
def test_a_bad_data_block_gets_a_400_and_creates_nothing(store, raw_db, body, message):
    before = snapshot(raw_db)
    got = call("create_job", {"num_clients": 2, "clients_per_round": 2, **body}, expect=400)["error"]
    assert message in got
    assert snapshot(raw_db) == before


def test_the_first_device_fixes_the_schema_and_a_misfit_is_refused_and_not_offered(store):
    job_id = job()
    image_only = register({"datasets": {"mnist": 60000}})
    lacks = device(columns={"size": "numeric", "town": "categorical", "price": "numeric"})
    fits = device()
    assert call("offers", token=image_only["token"])["jobs"] == []
    assert [j["job_id"] for j in call("offers", token=fits["token"])["jobs"]] == [job_id]
    call("join", {"job_id": job_id}, token=fits["token"])
    schema = call("status", {"job_id": job_id})["schema"]
    assert schema["features"] == SCHEMA["features"]
    assert call("offers", token=lacks["token"])["jobs"] == []
    got = call("join", {"job_id": job_id}, token=lacks["token"], expect=403)["error"]
    assert got == "this device's data set 'shop' has no column 'rooms'"
    texty = device(columns={**COLUMNS, "size": "text"})
    got = call("join", {"job_id": job_id}, token=texty["token"], expect=403)["error"]
    assert got == "column 'size' is numeric in this job but text on this device"
    assert "register with FL_DATA_CONFIG" in call("subscribe", {"job_id": job_id}, expect=403)["error"]


def test_the_statistics_step_makes_one_encoding_and_then_round_1_starts(store, raw_db):
    job_id = job()
    rng = np.random.default_rng(0)
    clients = [call("join", {"job_id": job_id}, token=device()["token"]) for _ in range(2)]
    poll = call("poll", token=clients[0]["token"])
    assert poll["action"] == "statistics" and poll["schema"]["features"] == SCHEMA["features"]
    tables = [stats(rng, 80, ["north", "south"]), stats(rng, 60, ["south", "east"])]
    before = snapshot(raw_db)
    bad = tabular.local_stats(tables[0], SCHEMA)
    bad["rows"] = 101  # more than the 100 rows the device declared
    assert "up to the 100 rows" in call("statistics", {"stats": bad}, token=clients[0]["token"], expect=400)["error"]
    assert snapshot(raw_db) == before
    call("statistics", {"stats": tabular.local_stats(tables[0], SCHEMA)}, token=clients[0]["token"])
    assert call("status", {"job_id": job_id})["state"] == "waiting"  # one device's statistics are not enough
    assert call("poll", token=clients[0]["token"])["action"] == "wait"
    call("statistics", {"stats": tabular.local_stats(tables[1], SCHEMA)}, token=clients[1]["token"])
    st = call("status", {"job_id": job_id})
    assert st["state"] == "running" and st["round"] == 1
    enc = st["encoding"]
    sizes = np.array([float(v) for t in tables for v in t["size"]])
    assert enc["features"][0]["mean"] == pytest.approx(sizes.mean()) and enc["rows"] == 140
    assert enc["features"][2]["categories"] == ["south", "north", "east"]
    assert st["config"]["data"]["input_width"] == enc["width"] == 2 + 4
    late = tabular.local_stats(tables[1], SCHEMA)
    assert (
        "made its encoding already"
        in call("statistics", {"stats": late}, token=clients[1]["token"], expect=409)["error"]
    )
    reply = call("poll", token=clients[0]["token"])
    assert reply["action"] == "train" and reply["encoding"] == enc


def trained(store):
    """A tabular job whose round 1 closed with two clients' (different) linear models."""
    job_id = job(rounds=3)
    rng = np.random.default_rng(1)
    clients = [call("join", {"job_id": job_id}, token=device()["token"]) for _ in range(2)]
    for c, towns in zip(clients, (["north", "south"], ["east"])):
        call("statistics", {"stats": tabular.local_stats(stats(rng, 90, towns), SCHEMA)}, token=c["token"])
    st = call("status", {"job_id": job_id})
    spec = modeldef.for_job("linear", "shop", st["config"]["data"])
    own = []
    for i, c in enumerate(clients):
        model = models.build(spec, seed=10 + i)
        own.append(model)
        body = {"round": 1, "weights": wcodec.to_b64(models.get_weights(model)), "num_examples": 50}
        call("submit", body, c["token"])
    call("aggregate", {"job_id": job_id})
    return job_id, st["encoding"], own


ROWS = [
    {"size": 120.5, "rooms": 3, "town": "north"},
    {"size": "80", "rooms": None, "town": "east", "price": 100000},  # the target is ignored
    {"rooms": 2, "town": "nowhere"},  # a missing feature is filled, an unknown town is "other"
]


def torch_values(encoding, model, rows):
    x = torch.from_numpy(tabular.encode_rows(encoding, rows))
    with torch.inference_mode():
        return tabular.predictions(encoding, model(x).numpy())["values"]


def test_predict_for_rows_matches_the_devices_own_torch_models(store):
    job_id, enc, own = trained(store)
    st = call("status", {"job_id": job_id})
    assert st["round"] == 2
    glob = models.build(modeldef.for_job("linear", "shop", st["config"]["data"]))
    weights = wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])
    models.set_weights(glob, weights)
    got = call("predict", {"job_id": job_id, "rows": ROWS})
    np.testing.assert_allclose(got["predictions"], torch_values(enc, glob, ROWS), rtol=1e-4)
    ens = call("predict", {"job_id": job_id, "rows": ROWS, "mode": "ensemble", "round": 1})
    want = np.mean([tabular.predictions(enc, _out(enc, m))["learnt"] for m in own], axis=0)
    np.testing.assert_allclose(ens["learnt"], want, rtol=1e-4)
    assert ens["models"] == 2


def _out(enc, model):
    with torch.inference_mode():
        return model(torch.from_numpy(tabular.encode_rows(enc, ROWS))).numpy()


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"size": 1, "colour": "red"}], "row 0: unknown column 'colour'"),
        ([{"size": 1}, {"size": "big"}], "row 1: column 'size' takes a number, not 'big'"),
        ([{"size": float("nan")}], "row 0, column 'size': NaN and infinities are not values"),
        ([{"size": True}], "row 0, column 'size': a value must be a number"),
        ([{"size": 1}] * 1001, "rows must be a list of 1 to 1000"),
        ([], "rows must be a list of 1 to 1000"),
        (["size=1"], "row 0 must be an object"),
    ],
)
def test_bad_rows_get_a_400_naming_the_row_and_column(store, raw_db, rows, message):
    job_id, _, _ = trained(store)
    before = snapshot(raw_db)
    assert message in call("predict", {"job_id": job_id, "rows": rows}, expect=400)["error"]
    assert snapshot(raw_db) == before


def test_changed_data_on_enough_devices_retrains_a_done_job_exactly_once(store):
    rule = {"rounds": 2, "min_interval_s": 0, "min_devices": 2}
    job_id = call("create_job", {"data": {**DATA, "retrain_on_change": rule}, "num_clients": 2,
                                 "clients_per_round": 2, "rounds": 1, "model": "linear"})["job_id"]  # fmt: skip
    rng = np.random.default_rng(2)
    devs = [device() for _ in range(2)]
    clients = [call("join", {"job_id": job_id}, token=d["token"]) for d in devs]
    for c in clients:
        call("statistics", {"stats": tabular.local_stats(stats(rng, 90, ["north"]), SCHEMA)}, token=c["token"])
    spec = modeldef.for_job("linear", "shop", call("status", {"job_id": job_id})["config"]["data"])
    for i, c in enumerate(clients):
        weights = wcodec.to_b64(models.get_weights(models.build(spec, seed=i)))
        call("submit", {"round": 1, "weights": weights, "num_examples": 50}, c["token"])
    call("aggregate", {"job_id": job_id})
    assert call("status", {"job_id": job_id})["state"] == "done"
    same = {"datasets": {"shop": {"rows": 100, "columns": COLUMNS, "fingerprint": "ab" * 8}}}
    assert call("update_device", {"info": same}, token=devs[0]["token"])["changed"] == []  # nothing changed
    grown = {"datasets": {"shop": {"rows": 140, "columns": COLUMNS, "fingerprint": "ab" * 8}}}
    # one device's change is not enough (min_devices 2)
    assert call("update_device", {"info": grown}, token=devs[0]["token"])["retraining"] == []
    assert call("status", {"job_id": job_id})["state"] == "done"
    # the other device's reports, and the first's again, all at once: one retraining
    bigger = {"datasets": {"shop": {"rows": 150, "columns": COLUMNS, "fingerprint": "ab" * 8}}}
    with ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(lambda d: call("update_device", {"info": bigger}, token=d["token"]), [devs[1], devs[0]] * 3)
        )
    assert sum(len(r["retraining"]) for r in replies) == 1
    st = call("status", {"job_id": job_id})
    assert st["state"] == "waiting" and st["rounds"] == 3 and len(st["changes"]) == 1
    assert st["changes"][0]["round"] == 2 and st["changes"][0]["set"] == {"rounds": 3}
    # the devices are offered their job again and get their own places back; round 2 goes on from round 1's model
    assert [j["job_id"] for j in call("offers", token=devs[0]["token"])["jobs"]] == [job_id]
    again = [call("join", {"job_id": job_id}, token=d["token"]) for d in devs]
    assert [a["client_id"] for a in again] == [c["client_id"] for c in clients]
    reply = call("poll", token=again[0]["token"])
    assert reply["action"] == "train" and reply["round"] == 2 and reply["model_round"] == 1 and reply["retraining"]
    for i, c in enumerate(again):  # round 2 closes: predict still answers with round 1's, the last final model
        weights = wcodec.to_b64(models.get_weights(models.build(spec, seed=5 + i)))
        call("submit", {"round": 2, "weights": weights, "num_examples": 50}, c["token"])
    call("aggregate", {"job_id": job_id})
    st = call("status", {"job_id": job_id})
    assert st["model_round"] == 2 and st["state"] == "running"
    assert call("predict", {"job_id": job_id, "rows": ROWS})["model_round"] == 1
    assert call("predict", {"job_id": job_id, "rows": ROWS, "round": 2})["model_round"] == 2


def test_criteria_select_on_what_devices_declare_about_their_data(store):
    job_id = job(criteria={"info.datasets.shop.rows": {"$gte": 300}})
    small, big = device(rows=100), device(rows=400)
    assert call("offers", token=small["token"])["jobs"] == []
    assert "does not meet the criteria" in call("join", {"job_id": job_id}, token=small["token"], expect=403)["error"]
    assert [j["job_id"] for j in call("offers", token=big["token"])["jobs"]] == [job_id]
