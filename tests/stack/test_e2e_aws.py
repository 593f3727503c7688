"""The whole loop on the AWS path: serverless-offline running the real handler,
the embedded database, and real client processes started by the scripts."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import requests
from PIL import Image
from pymongo import MongoClient

from clients.federated_client import FederatedClient
from clients.transport import HttpTransport
from flcli.devstack import ROOT
from flcli.operator import Operator
from flcli.report import evaluate_on_test_set
from fllocal import data, models
from helpers import ADMIN, clients_running, wait_until

N = 3


def _alive(pids: list[int]) -> list[int]:
    out = []
    for p in pids:
        try:
            if "clients.launcher" in Path(f"/proc/{p}/cmdline").read_text():
                out.append(p)
        except OSError:
            pass
    return out


def test_three_clients_two_rounds(function_url, mongodb_url, fleet_env):
    env, base_port = fleet_env(N)
    op = Operator(function_url, ADMIN)
    job_id = op.start_job(
        {
            "num_clients": N,
            "clients_per_round": N,
            "rounds": 2,
            "local_epochs": 2,
            "lr": 0.05,
            "max_train_examples": 1500,
        }
    )["job_id"]
    subprocess.run(
        [str(ROOT / "scripts" / "start_clients_aws.sh"), str(N)], env={**env, "FL_JOB_ID": job_id}, cwd=ROOT, check=True
    )
    pids = [int(p) for p in Path(env["FL_RUN_DIR"], "clients_aws.pid").read_text().split()]
    try:
        final = op.follow(job_id, timeout=240, interval=0.5)
        # each client's Flask app answers, and predicts with the final global model
        health = requests.get(f"http://127.0.0.1:{base_port}/health", timeout=5).json()
        assert health["ok"] is True
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{base_port}/status", timeout=5).json().get("model_round") == 2,
            "the client to fetch the final model",
            20,
            every=0.3,
        )
        x, y = data.load_raw("mnist", train=False)
        png = io.BytesIO()
        Image.fromarray(x[0, 0]).save(png, format="PNG")
        pred = requests.post(
            f"http://127.0.0.1:{base_port}/predict",
            files={"image": ("digit.png", png.getvalue(), "image/png")},
            timeout=10,
        ).json()
    finally:
        subprocess.run([str(ROOT / "scripts" / "stop_clients_aws.sh")], env=env, cwd=ROOT, check=True)
    assert not _alive(pids), "stop_clients_aws.sh left client processes behind"

    history = final["history"]
    assert [h["round"] for h in history] == [1, 2]
    with MongoClient(mongodb_url) as mc:
        db = mc["e2e"]
        clients = sorted(d["_id"] for d in db.clients.find({"job_id": job_id}))
        for h in history:
            # every picked client's update was aggregated, exactly once
            assert h["client_ids"] == clients and h["clients"] == N and h["closed"] == "complete"
            ups = [d["client_id"] for d in db.updates.find({"job_id": job_id, "round": h["round"]})]
            assert sorted(ups) == clients
        digests = [db.models.find_one({"job_id": job_id, "round": r})["weights"]["sha256"] for r in (0, 1, 2)]
    assert len(set(digests)) == 3, "the global weights did not change every round"

    final_weights = op.weights(job_id)
    acc = evaluate_on_test_set("mnist", final_weights)["accuracy"]
    assert acc > 0.8, f"test accuracy {acc:.3f} is not far above chance"

    model = models.build("cnn_mnist")
    models.set_weights(model, final_weights)
    xt, _ = data.to_tensors("mnist", x[:1], y[:1])
    assert pred["prediction"] == int(model(xt).argmax()) and pred["model_round"] == 2


def test_a_restarted_client_keeps_its_identity(function_url, tmp_path, monkeypatch):
    op = Operator(function_url, ADMIN)
    job_id = op.start_job({"num_clients": 2, "clients_per_round": 1, "rounds": 1})["job_id"]
    monkeypatch.setenv("FL_JOB_ID", job_id)
    state = tmp_path / "client-x.json"
    first = FederatedClient(HttpTransport(function_url), state, "client-x")
    first.tick()  # registers as a device and joins
    assert first.identity["job_id"] == job_id and state.exists()
    device = first.device.identity
    again = FederatedClient(HttpTransport(function_url), state, "client-x")
    assert again.identity == first.identity and again.device.identity == device
    again.tick()  # polls as the same client: no second subscription
    assert op.status(job_id)["subscribed"] == 1
    joined = [d for d in op.call("devices", {"job_id": job_id})["devices"]]
    assert [d["device_id"] for d in joined] == [device["device_id"]] and joined[0]["info"]["datasets"]["mnist"] > 0


def test_a_non_iid_job_with_scaffold(function_url, fleet_env):
    env, _ = fleet_env(4)
    op = Operator(function_url, ADMIN)
    job_id = op.start_job(
        {
            "num_clients": 4,
            "clients_per_round": 4,
            "rounds": 2,
            "local_epochs": 2,
            "lr": 0.05,
            "partition": "shards:2",
            "strategy": "scaffold",
            "max_train_examples": 800,
        }
    )["job_id"]
    with clients_running(env, 4, job_id):
        final = op.follow(job_id, timeout=240, interval=0.5)
    assert final["config"]["partition"] == "shards" and final["config"]["strategy"] == "scaffold"
    assert [h["clients"] for h in final["history"]] == [4, 4]
    # SCAFFOLD rejects updates without their control part, so two full rounds show the clients send it.
    # Each client saw about two labels, so its own held-out accuracy of the first (untrained) model is
    # near chance while the averaged model learns all ten classes
    acc = evaluate_on_test_set("mnist", op.weights(job_id))["accuracy"]
    assert acc > 0.3, f"non-IID job did not learn: test accuracy {acc:.3f}"


def test_a_resnet18_job_whose_updates_travel_in_chunks(function_url, mongodb_url, fleet_env):
    """ResNet-18 (45 MB a model) through serverless-offline with real clients: every update is
    uploaded in chunks and the model is downloaded in chunks."""
    env, _ = fleet_env(2)
    op = Operator(function_url, ADMIN)
    job_id = op.start_job(
        {
            "model": "resnet18",
            "num_clients": 2,
            "clients_per_round": 2,
            "rounds": 1,
            "local_epochs": 1,
            "max_train_examples": 200,
        }
    )["job_id"]
    with clients_running(env, 2, job_id):
        final = op.follow(job_id, timeout=400, interval=1.0)
    assert final["state"] == "done" and final["history"][0]["clients"] == 2
    with MongoClient(mongodb_url) as mc:
        ups = list(mc["e2e"].updates.find({"job_id": job_id}))
    assert len(ups) == 2 and all(u["blob"].startswith("up:") and u["size"] > 44_000_000 for u in ups)
    weights = op.weights(job_id)  # downloaded in chunks, checked by its sha256
    assert weights["layer4_1.conv2.weight"].shape == (512, 512, 3, 3)
    assert "layer1_0.bn1.num_batches_tracked" not in weights


def test_int8_updates_with_error_feedback_from_real_clients(function_url, mongodb_url, fleet_env):
    """Round 1 starts from the seeded model the function does not hold, so clients send float16
    weights; from round 2 they send int8 changes, a quarter of float32's bytes, and the job learns."""
    env, _ = fleet_env(N)
    op = Operator(function_url, ADMIN)
    cfg = {
        "num_clients": N,
        "clients_per_round": N,
        "rounds": 3,
        "local_epochs": 2,
        "lr": 0.05,
        "max_train_examples": 1500,
        "update_encoding": "int8",
        "error_feedback": 1,
    }
    job_id = op.start_job(cfg, initial_weights=False)["job_id"]  # the clients' seeded model: the function has none
    with clients_running(env, N, job_id):
        final = op.follow(job_id, timeout=240, interval=0.5)
    assert final["state"] == "done" and [h["clients"] for h in final["history"]] == [N, N, N]
    with MongoClient(mongodb_url) as mc:
        sizes = {r: [d["size"] for d in mc["e2e"].updates.find({"job_id": job_id, "round": r})] for r in (1, 2, 3)}
    full = 4 * 46_730  # cnn_mnist's float32 values
    assert all(0.45 * full < s < 0.55 * full for s in sizes[1]), sizes  # float16 weights
    assert all(s < 0.3 * full for s in sizes[2] + sizes[3])  # int8 changes and their scales
    acc = evaluate_on_test_set("mnist", op.weights(job_id))["accuracy"]
    assert acc > 0.85, f"int8 job did not learn: test accuracy {acc:.3f}"
