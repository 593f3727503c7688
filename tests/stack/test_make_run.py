"""``make run`` as a user runs it, on a small job: the summary it writes, checked figure by figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_run_writes_every_round_its_phases_processors_and_memory(tmp_path):
    env = {
        **os.environ,
        "FL_RESULTS_DIR": str(tmp_path),
        "MONGODB_URL": "",
        "FL_ADMIN_TOKEN": "",
        "FL_CLIENTS": "3",
        "FL_CLIENTS_PER_ROUND": "3",
        "FL_ROUNDS": "2",
        "FL_LOCAL_EPOCHS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "flcli.run"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "latest" / "summary.json").read_text())
    assert (tmp_path / "latest" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    # each round evaluated on the test set and reported to the function, the last one before the stack stopped
    assert [r["round"] for r in summary["per_round"]] == [1, 2]
    assert all(0.5 < r["test_accuracy"] <= 1 for r in summary["per_round"]) and summary["test_accuracy"] > 0.8
    phases = summary["phases"]
    assert phases["training"] > 0 and phases["stop_everything"] >= 0 and phases["evaluate_last_rounds"] >= 0
    spans = ("prepare_data", "start_stack", "create_job", "clients_until_first_round", "training")
    spans += ("after_last_round", "stop_everything", "evaluate_last_rounds")
    assert sum(phases[k] for k in spans) <= summary["wall_seconds"] + 0.1
    # the clients start beside the function, and are all up before the first round
    until_first_round = phases["start_stack"] + phases["create_job"] + phases["clients_until_first_round"]
    assert 0 < phases["start_clients"] <= until_first_round
    assert abs(phases["overhead"] + phases["training"] - summary["wall_seconds"]) < 1.0
    cpu = summary["cpu"]["core_seconds"]
    assert cpu["clients"] > cpu["function"] > 0 and cpu["operator"] > 0
    memory = summary["memory"]
    assert memory["peak_pss_mb"] > 100 and 1 <= memory["pss_readings"] and memory["peak_processes"] >= 5
