"""Secure aggregation with distributed DP through the real local function and real client processes:
the devices run the four stages, add their share of the noise, and the job learns; what the database
keeps of the round is masked; epsilon is counted after every round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymongo import MongoClient

from flcli.operator import Operator
from flcore.shared import weights as wcodec
from helpers import ADMIN, clients_running

N = 6


def test_a_secure_private_job_runs_to_the_end_with_client_processes(function_url, mongodb_url, fleet_env):
    env, _ = fleet_env(1)
    op = Operator(function_url, ADMIN)
    job = {
        "num_clients": N, "clients_per_round": 5, "rounds": 3, "local_epochs": 1, "max_train_examples": 300,
        "min_updates": 3,
        "secure_aggregation": {"stage_timeout_s": 20},
        # noise this small protects little (epsilon is huge): the test shows the model still learns through it
        "dp": {"noise_multiplier": 0.001, "clip_norm": 5.0},
    }  # fmt: skip
    job_id = op.start_job(job)["job_id"]
    with clients_running({**env, "FL_CLIENTS_PER_PROCESS": "3", "FL_TRAINERS": "1"}, N, job_id):
        final = op.follow(job_id, timeout=300, interval=0.5)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(Path(env["FL_LOG_DIR"], "aws").glob("*.log")))
    assert final["state"] == "done", (final.get("stopped_because"), final.get("secure_failures"), logs)
    assert [h["secure"]["survivors"] for h in final["history"]] == [5, 5, 5]
    # round 3's devices evaluated round 2's model: learned through masks and noise (a wrong sum scores ~10 %)
    accuracy = [h["metrics"]["eval_accuracy"] for h in final["history"]]
    assert accuracy[0] < accuracy[1] < accuracy[2] and accuracy[2] > accuracy[0] + 0.15, accuracy  # 6 steps a round
    said = op.call("logs", {"job_id": job_id})["lines"]  # the client processes' lines, with their polls
    assert sum("trained in" in x["text"] and "sent masked" in x["text"] for x in said) == 15, said[-5:]
    spent = [h["privacy"]["epsilon"] for h in final["history"]]
    assert spent[0] < spent[1] < spent[2] and final["privacy"]["rounds"] == 3

    with MongoClient(mongodb_url) as mc:
        db = mc["e2e"]
        updates = list(db.updates.find({"job_id": job_id}))
        assert db.secure.count_documents({"job_id": job_id, "round": {"$lt": 3}}) == 0  # closed rounds' relay
    model = op.weights(job_id, 3)
    name = max(model, key=lambda k: model[k].size)
    from flcore.storage.blobs import Blobs

    with MongoClient(mongodb_url) as mc:
        blobs = Blobs(mc["e2e"])
        for doc in updates:
            stored = wcodec.decode(blobs.read(doc["blob"], doc["size"]))
            assert stored[name].dtype == np.uint32  # masked integers, never weights
