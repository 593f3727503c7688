"""Clients that die mid-training: they are replaced in their round once silent for client_timeout_s,
the round completes long before its deadline, the job finishes, and the dead are not picked again.
Real client processes, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import requests

from flcli.devstack import ROOT
from flcli.operator import Operator
from helpers import ADMIN, wait_until

N = 6


def test_killing_a_third_of_the_clients(function_url, fleet_env, capsys):
    env, base_port = fleet_env(N)
    op = Operator(function_url, ADMIN)
    job_id = op.start_job(
        {
            "num_clients": N,
            "clients_per_round": 3,
            "rounds": 4,
            "local_epochs": 10,
            "max_train_examples": 600,
            "lr": 0.05,
            "round_timeout_s": 60,
            "client_timeout_s": 4,
            "min_updates": 1,
        }
    )["job_id"]
    subprocess.run(
        [str(ROOT / "scripts" / "start_clients_aws.sh"), str(N)], env={**env, "FL_JOB_ID": job_id}, cwd=ROOT, check=True
    )
    pids = [int(p) for p in Path(env["FL_RUN_DIR"], "clients_aws.pid").read_text().split()][1:]
    killed: set[str] = set()
    try:
        wait_until(lambda: op.status(job_id)["round"] >= 1, "round 1 to open", 60, every=0.1)
        picked = set(op.status(job_id)["picked"])
        # kill two of round 1's picked clients while they train
        for i in range(N):
            st = requests.get(f"http://127.0.0.1:{base_port + i}/status", timeout=5).json()
            if st.get("client_id") in picked and len(killed) < N // 3:
                os.kill(pids[i], signal.SIGKILL)
                killed.add(st["client_id"])
        assert len(killed) == N // 3
        final = op.follow(job_id, timeout=180, interval=0.5)
    finally:
        subprocess.run([str(ROOT / "scripts" / "stop_clients_aws.sh")], env=env, cwd=ROOT, check=True)
    history = final["history"]
    with capsys.disabled():
        print(
            f"\nkilled {len(killed)} of {N} clients in round 1; rounds completed {len(history)}/4; "
            f"closed: {[h['closed'] for h in history]}; updates per round: {[h['clients'] for h in history]}"
        )
    assert final["state"] == "done" and [h["round"] for h in history] == [1, 2, 3, 4]
    # the two were replaced after 4 s of silence: round 1 completed with three updates, not at its deadline
    assert history[0]["closed"] == "complete" and history[0]["clients"] == 3 and history[0]["seconds"] < 60
    assert not killed & set(history[0]["client_ids"])
    for h in history[1:]:
        assert not killed & set(h["client_ids"]), "a dead client was counted"
        assert h["closed"] == "complete", "a dead client was picked again"
