"""Simulation mode (clients/fleet.py): many client identities per process, started by the same scripts.

Each identity must still be its own client of the function (its own device,
token, partition and call log); and the job must run to the end through the real function.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pymongo import MongoClient

from flcli.devstack import ROOT
from flcli.operator import Operator
from helpers import ADMIN

N, PER_PROCESS = 12, 5  # three processes: 5, 5 and 2 identities


def test_twelve_identities_in_three_processes_run_a_job(function_url, mongodb_url, fleet_env, tmp_path):
    env, _ = fleet_env(1)
    op = Operator(function_url, ADMIN)
    job_id = op.start_job(
        {"num_clients": N, "clients_per_round": 4, "rounds": 3, "local_epochs": 1, "max_train_examples": 200}
    )["job_id"]
    sim = {**env, "FL_JOB_ID": job_id, "FL_CLIENTS_PER_PROCESS": str(PER_PROCESS), "FL_TRAINERS": "1"}
    out = subprocess.run(
        [str(ROOT / "scripts" / "start_clients_aws.sh"), str(N)],
        env=sim,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert f"started {N} clients in 3 processes of up to {PER_PROCESS}" in out
    pids = [int(p) for p in Path(env["FL_RUN_DIR"], "clients_aws.pid").read_text().split()]
    assert len(pids) == 1 + 3  # the launcher and three processes, not twelve
    try:
        final = op.follow(job_id, timeout=240, interval=0.5)
    finally:
        subprocess.run([str(ROOT / "scripts" / "stop_clients_aws.sh")], env=env, cwd=ROOT, check=True)
    assert final["state"] == "done" and [h["clients"] for h in final["history"]] == [4, 4, 4]

    with MongoClient(mongodb_url) as mc:
        db = mc["e2e"]
        clients = list(db.clients.find({"job_id": job_id}))
        devices = {c["device_id"] for c in clients}
    assert len(clients) == N and len(devices) == N  # twelve devices, twelve places
    assert sorted(c["index"] for c in clients) == list(range(N))  # each its own partition

    states = Path(env["FL_STATE_DIR"]) / "aws"
    own_devices = {json.loads(p.read_text())["device_id"] for p in states.glob("client-*.device.json")}
    assert own_devices == devices  # each identity registered as its own device, and kept it
    logs = [json.loads(p.read_text()) for p in sorted(states.glob("client-*.calls.json"))]
    fleet_logs = "\n".join(p.read_text()[-3000:] for p in sorted(Path(env["FL_LOG_DIR"], "aws").glob("*.log")))
    assert len(logs) == N and all(log["seconds"] for log in logs), fleet_logs  # each wrote its own call log
    trained = sum(entry["trained"] for log in logs for entry in log["rounds"].values())
    assert trained == 12  # 4 a round for 3 rounds, each counted by the identity that trained

    # the three processes' logs: one line per training, by the identity that trained
    lines = [
        line
        for path in Path(env["FL_LOG_DIR"], "aws").glob("fleet-*.log")
        for line in path.read_text().splitlines()
        if "trained in" in line
    ]
    assert len(lines) == 12


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"FL_CLIENTS_PER_PROCESS": "many"}, "FL_CLIENTS_PER_PROCESS='many' is not a whole number"),
        ({"FL_CLIENTS_PER_PROCESS": "-3"}, "must be at least 1, not -3"),
        ({"FL_FLEET_WORKERS": "-2"}, "FL_FLEET_WORKERS must be at least 1"),
        (
            {"FL_CLIENTS_PER_PROCESS": "5", "FL_SLOW_FRACTION": "0.5", "FL_SLOWDOWN": "3"},
            "FL_SLOWDOWN is for one process",
        ),
    ],
)
def test_bad_simulation_settings_stop_the_launcher_with_their_name(fleet_env, setting, message):
    env, _ = fleet_env(1)
    out = subprocess.run(
        [str(ROOT / "scripts" / "start_clients_aws.sh"), "4"],
        env={**env, **setting},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and message in out.stderr + out.stdout
    assert not Path(env["FL_RUN_DIR"], "clients_aws.pid").exists()  # nothing was started
