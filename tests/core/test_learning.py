"""Job settings that shape learning, through the core's entry point and a real database."""

from __future__ import annotations

import numpy as np

from flcore.shared import weights as wcodec
from helpers import call, new_job, random_weights, snapshot, subscribe_all


def _submit_all(store, job_id, subs, rnd, value, metrics=None):
    """Every picked client sends ``value`` give or take 1e-3 (a copy of another's update is refused);
    with an even number of clients the mean is ``value``."""
    by_id = {s["client_id"]: s for s in subs}
    for i, cid in enumerate(store.get_job(job_id)["picked"]):
        weights = {k: np.full(v.shape, value + (-1) ** i * 1e-3, np.float32) for k, v in random_weights().items()}
        call(
            "submit",
            {"round": rnd, "weights": wcodec.to_b64(weights), "num_examples": 10, "metrics": metrics or {}},
            by_id[cid]["token"],
        )
    call("aggregate", {"job_id": job_id})


def test_target_accuracy_stops_early(store):
    job_id = new_job(num_clients=2, clients_per_round=2, rounds=10, target_accuracy=0.9)
    subs = subscribe_all(job_id, 2)
    _submit_all(store, job_id, subs, 1, 0.1, {"eval_accuracy": 0.5, "eval_examples": 100})
    assert call("status", {"job_id": job_id})["state"] == "running"
    _submit_all(store, job_id, subs, 2, 0.1, {"eval_accuracy": 0.95, "eval_examples": 100})
    st = call("status", {"job_id": job_id})
    assert st["state"] == "done" and len(st["history"]) == 2 and st["stopped_because"] == "target accuracy reached"


def test_min_clients_starts_early_and_late_clients_join(store):
    job_id = new_job(num_clients=4, clients_per_round=2, min_clients=2)
    subs = subscribe_all(job_id, 2)
    assert store.get_job(job_id)["state"] == "running"
    late = call("subscribe", {})  # no job id: joins the running job that still has room
    assert late["job_id"] == job_id and late["index"] == 2
    call("subscribe", {"job_id": job_id})
    call("subscribe", {"job_id": job_id}, expect=409)  # now full
    assert len(subs) == 2


def test_server_momentum_state_carries_across_rounds(store):
    job_id = new_job(
        num_clients=2,
        clients_per_round=2,
        rounds=3,
        strategy="fedavgm",
        server_momentum=0.5,
        weights=wcodec.to_b64({k: np.zeros(v.shape, np.float32) for k, v in random_weights().items()}),
    )
    subs = subscribe_all(job_id, 2)
    _submit_all(store, job_id, subs, 1, 1.0)  # delta 1, v = 1, w = 1
    _submit_all(store, job_id, subs, 2, 1.0)  # delta 0, v = 0.5, w = 1.5 (momentum remembered)
    w = wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])
    np.testing.assert_allclose(w["fc2.bias"], 1.5, rtol=1e-6)


def test_scaffold_control_variates_travel_both_ways(store, raw_db):
    """Clients send weights plus ``control/`` changes; the next model comes with c = sum / num_clients."""
    job_id = new_job(num_clients=2, clients_per_round=2, rounds=3, strategy="scaffold")
    subs = subscribe_all(job_id, 2)
    first = call("get_model", {}, subs[0]["token"])
    assert first["round_config"]["control_variates"] is True and "tensors" not in first  # c = 0 so far
    weights = random_weights()
    before = snapshot(raw_db)
    call(
        "submit", {"round": 1, "weights": wcodec.to_b64(weights), "num_examples": 10}, subs[0]["token"], expect=400
    )  # a SCAFFOLD update without its control part changes nothing
    assert snapshot(raw_db) == before
    for sub, change in zip(subs, (0.5, 0.1)):
        update = {**weights, **{"control/" + k: np.full(v.shape, change, np.float32) for k, v in weights.items()}}
        call("submit", {"round": 1, "weights": wcodec.to_b64(update), "num_examples": 10}, sub["token"])
    call("aggregate", {"job_id": job_id})
    reply = call("get_model", {}, subs[1]["token"])
    assert reply["model_round"] == 1 and wcodec.from_b64(reply["weights"]).keys() == weights.keys()
    c = wcodec.from_b64(reply["tensors"])
    assert c.keys() == weights.keys()
    np.testing.assert_allclose(c["fc2.bias"], (0.5 + 0.1) / 2, rtol=1e-6)


def test_round_config_carries_the_schedule_and_fedprox_mu(store):
    job_id = new_job(
        num_clients=2, clients_per_round=2, rounds=3, lr=0.1, lr_decay=0.5, strategy="fedprox", proximal_mu=0.2
    )
    subs = subscribe_all(job_id, 2)
    rc = call("get_model", {}, subs[0]["token"])["round_config"]
    assert rc == {
        "lr": 0.1,
        "momentum": 0.5,
        "local_epochs": 10,
        "batch_size": 50,
        "proximal_mu": 0.2,
        "restricted_softmax": 1.0,
        "control_variates": False,
        "augment_shift": 2,
        "augment_flip": False,
        "weight_decay": 0.0,
        "train_precision": "auto",  # each device: bfloat16 where its processor has it
    }  # MNIST's default shifts
    _submit_all(store, job_id, subs, 1, 0.0)
    assert call("get_model", {}, subs[0]["token"])["round_config"]["lr"] == 0.05


def test_federated_evaluation_is_weighted_by_evaluated_examples(store):
    job_id = new_job(num_clients=2, clients_per_round=2, rounds=2)
    subs = subscribe_all(job_id, 2)
    by_id = {s["client_id"]: s for s in subs}
    for i, (cid, (acc, n_eval)) in enumerate(zip(store.get_job(job_id)["picked"], [(1.0, 300), (0.0, 100)])):
        call(
            "submit",
            {
                "round": 1,
                "weights": wcodec.to_b64(random_weights(seed=i)),
                "num_examples": 10,
                "metrics": {"eval_accuracy": acc, "eval_examples": n_eval, "train_loss": acc},
            },
            by_id[cid]["token"],
        )
    call("aggregate", {"job_id": job_id})
    m = call("status", {"job_id": job_id})["history"][0]["metrics"]
    assert m["eval_accuracy"] == 0.75  # (1.0*300 + 0*100) / 400
    assert m["train_loss"] == 0.5  # by training examples: (1*10 + 0*10) / 20
