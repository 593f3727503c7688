"""Several jobs end to end at once, with real client processes on their own local stack:
``make demo-jobs`` as a user runs it, checked from what it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)
def test_three_jobs_devices_criteria_a_rule_and_a_failing_device(tmp_path):
    env = {**os.environ, "FL_RESULTS_DIR": str(tmp_path), "MONGODB_URL": "", "FL_ADMIN_TOKEN": ""}
    out = subprocess.run(
        [sys.executable, "-m", "flcli.demo_jobs"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "demo-jobs" / "summary.json").read_text())
    assert (tmp_path / "demo-jobs" / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    jobs = summary["jobs"]
    # A ran on devices of kind a only, until its rule stopped it; the same rule started C
    assert jobs["A"]["state"] == "stopped" and jobs["A"]["stopped_because"].startswith("rule: federated accuracy")
    assert jobs["A"]["best"]["eval_accuracy"] >= 0.9
    assert [fired for _, fired in jobs["A"]["rules_fired"]] == [[0, 1]]
    assert jobs["C"]["state"] == "done" and jobs["C"]["rounds_closed"] == 3
    assert jobs["B"]["state"] == "stopped" and jobs["B"]["stopped_because"] == "demo: the operator stops B"
    kinds = {d["device_id"]: d["info"]["labels"]["kind"] for d in summary["devices"]}
    assert sorted(kinds.values()) == ["a"] * 4 + ["b"] * 4
    joined = {d["device_id"]: d["jobs"] for d in summary["devices"]}
    a_id, b_id = jobs["A"]["job_id"], jobs["B"]["job_id"]
    assert {kinds[d] for d, js in joined.items() if a_id in js} == {"a"}
    assert {kinds[d] for d, js in joined.items() if b_id in js} == {"b"}
    # the device whose training failed in B left it, once, and took another job
    failed = [d for d in summary["devices"] if d["stats"]["failures_reported"]]
    assert len(failed) == 1 and failed[0]["left_jobs"] == [b_id] and len(failed[0]["jobs"]) == 2
    assert jobs["B"]["clients_per_round"][0] == 3  # its round went on without it
    for step in (
        "create",
        "offers",
        "register",
        "join (A)",
        "join (B)",
        "first round closed (A)",
        "leave (failing device)",
        "start (rule: A stopped, C opened)",
        "stop",
    ):
        assert step in summary["steps_seconds"], step
    assert "first round closed (C)" in out.stdout
