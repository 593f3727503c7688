"""``flctl`` as an operator runs it: the installed console command, over HTTP, against the real function."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from clients.transport import FunctionError
from flcli.operator import Operator
from helpers import ADMIN, tensor_spec, two_versions_over_http

ROOT = Path(__file__).resolve().parents[2]
FLCTL = Path(sys.executable).parent / "flctl"


def flctl(function_url, *args, token=ADMIN, expect=0, cwd=None):
    env = {**os.environ, "BASE_URL_AWS": function_url, "FL_ADMIN_TOKEN": token}
    out = subprocess.run([str(FLCTL), *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert out.returncode == expect, (args, out.returncode, out.stdout, out.stderr)
    return out


def test_the_setup_installs_the_command_with_help_a_new_user_can_follow(function_url):
    assert FLCTL.exists(), "make setup installs flctl into the environment"
    text = flctl(function_url, "--help").stdout
    assert "jobs" in text and "devices" in text and "results" in text and "examples:" in text
    assert "--set" in flctl(function_url, "jobs", "create", "--help").stdout


def test_a_job_from_a_yaml_file_listed_shown_updated_and_stopped(function_url, tmp_path):
    (tmp_path / "job.yaml").write_text(
        "dataset: mnist\nnum_clients: 4\nclients_per_round: 2\n"
        "tags: [cli, yaml]\nrules:\n  - when: {round: 3}\n    then: {stop: third}\n"
    )
    made = json.loads(
        flctl(
            function_url,
            "jobs",
            "create",
            "-f",
            str(tmp_path / "job.yaml"),
            "--set",
            "lr=0.02",
            "--name",
            "from yaml",
            "--no-start",
            "--json",
        ).stdout
    )
    job_id = made["job_id"]
    assert made["state"] == "created" and made["config"]["lr"] == 0.02
    listed = json.loads(flctl(function_url, "jobs", "list", "--tag", "yaml", "--json").stdout)["jobs"]
    assert [j["job_id"] for j in listed][:1] == [job_id]
    table = flctl(function_url, "jobs", "list", "--state", "created").stdout
    assert table.splitlines()[0].split()[:3] == ["JOB", "NAME", "STATE"] and job_id in table
    assert "waiting" in flctl(function_url, "jobs", "start", job_id).stdout
    updated = flctl(function_url, "jobs", "update", job_id, "--set", "lr=0.005", "--set", "rounds=7").stdout
    assert "from round 1" in updated and "0.005" in updated
    shown = flctl(function_url, "jobs", "show", job_id).stdout
    assert "from yaml" in shown and "round 0/7" in shown and "ROUND" in shown
    assert "stopped in round 0" in flctl(function_url, "jobs", "stop", job_id, "--reason", "cli test").stdout
    watched = flctl(function_url, "jobs", "watch", job_id, expect=4).stdout
    assert "stopped: cli test" in watched


def test_results_download_the_model_summary_and_plot(function_url, tmp_path):
    op = Operator(function_url, ADMIN)
    job_id = op.start_job({"num_clients": 2, "clients_per_round": 1, "rounds": 1})["job_id"]
    ran = flctl(function_url, "results", job_id, "--out", str(tmp_path / "r"), "--json")
    out = json.loads(ran.stdout)
    assert out["model_round"] == 0  # the initial model, before any round
    tensors = load_file(out["model"])
    assert {k: v.shape for k, v in tensors.items()} == tensor_spec("cnn_mnist")
    assert json.loads(Path(out["summary"]).read_text())["job_id"] == job_id
    assert "plot" not in out and "no plot written" in ran.stderr  # no round closed: no empty plot


def test_devices_list_shows_registered_devices(function_url):
    op = Operator(function_url, ADMIN)
    dev = op.call("register", {"info": {"platform": "linux/riscv64", "cpus": 3, "datasets": {"mnist": 5}}})
    listed = json.loads(flctl(function_url, "devices", "list", "--json").stdout)["devices"]
    assert dev["device_id"] in [d["device_id"] for d in listed]
    assert "linux/riscv64" in flctl(function_url, "devices", "list").stdout
    # with --job: the device's figures in that job, not its totals
    job_id = op.call("create_job", {"num_clients": 3, "clients_per_round": 2, "criteria": {"info.cpus": 3}})["job_id"]
    joined = op.transport.call("join", {"job_id": job_id}, token=dev["token"])
    text = flctl(function_url, "devices", "list", "--job", job_id).stdout
    assert "ROUNDS COUNTED" in text and joined["client_id"] in text and "CONTRIB." not in text
    # named and labelled by the operator: shown, and read by criteria
    said = flctl(
        function_url, "devices", "label", dev["device_id"], "--name", "riscv board", "--label", "site=lab"
    ).stdout
    assert said.strip() == f"{dev['device_id']}: name riscv board; operator labels site=lab"
    row = next(line for line in flctl(function_url, "devices", "list").stdout.splitlines() if dev["device_id"] in line)
    assert "riscv board" in row and "site=lab" in row
    assert "needs --name and/or --label" in flctl(function_url, "devices", "label", dev["device_id"], expect=2).stderr
    # disabled, enabled, revoked: through the command
    assert "disabled" in flctl(function_url, "devices", "disable", dev["device_id"]).stdout
    assert json.loads(flctl(function_url, "devices", "list", "--json").stdout)["devices"]
    assert "enabled" in flctl(function_url, "devices", "enable", dev["device_id"]).stdout
    assert "revoked" in flctl(function_url, "devices", "revoke", dev["device_id"]).stdout
    with pytest.raises(FunctionError) as refused:  # the device's token no longer works
        op.transport.call("offers", {}, token=dev["token"])
    assert refused.value.status == 401


@pytest.mark.parametrize(
    "args, token, code, message",
    [
        (["jobs", "list"], "wrong-token", 1, "answered 403: the token sent was refused"),
        (["jobs", "create"], ADMIN, 2, "--defaults for the default job"),
        (["jobs", "create", "--set", "lr=-1"], ADMIN, 1, "lr must be between"),
        (["jobs", "create", "--set", "lr"], ADMIN, 2, "KEY=VALUE"),
        (["jobs", "create", "-f", "/nonexistent.json"], ADMIN, 2, "cannot read"),
        (["jobs", "show", "job-nope"], ADMIN, 1, "no job"),
        (["jobs", "frobnicate"], ADMIN, 2, "invalid choice"),
    ],
)
def test_errors_have_meaningful_exit_codes(function_url, args, token, code, message):
    out = flctl(function_url, *args, token=token, expect=code)
    assert message in out.stderr


def test_an_unreachable_function_exits_3_saying_how_to_start_one():
    out = flctl("http://127.0.0.1:9/dev", "jobs", "list", expect=3)
    assert "cannot reach the function at http://127.0.0.1:9/dev" in out.stderr and "make serve" in out.stderr


def test_results_of_a_job_without_rounds_write_nothing_and_say_why(function_url, tmp_path):
    job_id = json.loads(flctl(function_url, "jobs", "create", "--defaults", "--no-start", "--json").stdout)["job_id"]
    out = flctl(function_url, "results", job_id, "--out", str(tmp_path / "r"), expect=2)
    assert "has no model and no closed round yet" in out.stderr and not (tmp_path / "r").exists()


def test_a_url_without_the_stage_is_named(function_url):
    out = flctl(function_url.rsplit("/", 1)[0], "jobs", "list", expect=1)
    assert "answered 404" in out.stderr and "names no stage" in out.stderr and ".../dev" in out.stderr


def test_the_common_options_work_before_the_command_too(function_url):
    env = {k: v for k, v in os.environ.items() if k not in ("BASE_URL_AWS", "FL_ADMIN_TOKEN")}
    argv = [str(FLCTL), "--url", function_url, "--token", ADMIN, "--json", "jobs", "list", "--limit", "1"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "jobs" in json.loads(out.stdout)
    wrong = subprocess.run([*argv[:4], "wrong", *argv[5:]], env=env, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "token sent was refused" in wrong.stderr


def test_numbers_load_as_written_and_a_key_twice_is_refused(function_url, tmp_path):
    (tmp_path / "job.yaml").write_text("dataset: mnist\nlr: 1e-2\nmomentum: .9\nnum_clients: 4\nclients_per_round: 2\n")
    made = json.loads(
        flctl(function_url, "jobs", "create", "-f", str(tmp_path / "job.yaml"), "--no-start", "--json").stdout
    )
    assert made["config"]["lr"] == 0.01 and made["config"]["momentum"] == 0.9
    (tmp_path / "twice.yaml").write_text("dataset: mnist\nlr: 0.1\nlr: 0.2\n")
    out = flctl(function_url, "jobs", "create", "-f", str(tmp_path / "twice.yaml"), expect=2)
    assert "the key 'lr' is given twice" in out.stderr
    (tmp_path / "twice.json").write_text('{"rounds": 3, "rounds": 4}')
    assert "given twice" in flctl(function_url, "jobs", "create", "-f", str(tmp_path / "twice.json"), expect=2).stderr


def test_an_async_job_shows_versions_staleness_and_throughput(function_url):
    job_id = two_versions_over_http(function_url, "async cli")
    shown = flctl(function_url, "jobs", "show", job_id).stdout
    assert "version 3/5" in shown  # two versions made, the third under way and "2 updates per version" in shown
    header = shown.split("\n\n")[1].splitlines()[0].split()
    assert header[:4] == ["VERSION", "UPDATES", "SECONDS", "UPDATES/S"] and "STALENESS" in header
    rows = [line.split() for line in shown.split("\n\n")[1].splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "2"] and rows[1][4] == "0.5/1"  # version 2: one fresh, one stale update
    listed = json.loads(flctl(function_url, "jobs", "list", "--json").stdout)["jobs"]
    assert next(j for j in listed if j["job_id"] == job_id)["mode"] == "async"


def test_operator_tokens_with_roles_and_the_audit_trail(function_url):
    import uuid

    suffix = uuid.uuid4().hex[:6]  # names are never reused, and the stack's database lives for the session
    ops, viewer = f"ops-{suffix}", f"see-{suffix}"
    made = json.loads(flctl(function_url, "tokens", "create", ops, "--role", "operator", "--json").stdout)
    text = flctl(function_url, "tokens", "create", viewer).stdout
    assert text.startswith(f"operator {viewer} (viewer); its token, shown only now:")
    see = text.strip().splitlines()[-1]
    assert flctl(function_url, "whoami", token=made["token"]).stdout.strip() == f"{ops} (operator)"

    created = flctl(function_url, "jobs", "create", "--set", "num_clients=2", "--set", "clients_per_round=2",
                    "--no-start", "--json",
                    token=made["token"])  # fmt: skip
    job_id = json.loads(created.stdout)["job_id"]
    refused = flctl(function_url, "jobs", "stop", job_id, "--reason", "no", token=see, expect=1)
    assert f"{viewer} is a viewer: this action needs the operator role or above" in refused.stderr
    flctl(function_url, "jobs", "stop", job_id, "--reason", "audited", token=made["token"])

    trail = json.loads(flctl(function_url, "audit", "--job", job_id, "--json", token=see).stdout)
    assert [(e["who"], e["action"]) for e in trail] == [(ops, "stop_job"), (ops, "create_job")]
    table_text = flctl(function_url, "audit", "--who", ops, token=see).stdout
    assert f"{ops} (operator)" in table_text and '{"reason": "audited"}' in table_text

    flctl(function_url, "tokens", "revoke", ops)
    gone = flctl(function_url, "whoami", token=made["token"], expect=1)
    assert f"the operator token of {ops} was revoked" in gone.stderr
    listed = {o["name"]: o for o in json.loads(flctl(function_url, "tokens", "list", "--json").stdout)}
    assert listed[ops]["revoked_at"] and not listed[viewer]["revoked_at"] and "token_hash" not in listed[ops]
    assert "admin role" in flctl(function_url, "tokens", "list", token=see, expect=1).stderr


def test_clone_delete_and_archive_a_job(function_url):
    op = Operator(function_url, ADMIN)
    body = {"name": "to clone", "num_clients": 2, "clients_per_round": 2, "rounds": 3, "start": False}
    source = op.call("create_job", body)["job_id"]
    made = json.loads(flctl(function_url, "jobs", "clone", source, "--set", "rounds=9", "--name", "clone",
                            "--no-start", "--json").stdout)  # fmt: skip
    assert made["cloned_from"] == source and made["config"]["rounds"] == 9 and made["state"] == "created"
    refused = flctl(function_url, "jobs", "delete", source, expect=1)
    assert "stop it first" in refused.stderr
    flctl(function_url, "jobs", "stop", source, "--reason", "to delete")
    flctl(function_url, "jobs", "archive", source)
    listed = [j["job_id"] for j in json.loads(flctl(function_url, "jobs", "list", "--json").stdout)["jobs"]]
    hidden = json.loads(flctl(function_url, "jobs", "list", "--archived", "--json").stdout)["jobs"]
    archived = [j["job_id"] for j in hidden]
    assert source not in listed and made["job_id"] in listed and source in archived
    said = flctl(function_url, "jobs", "delete", source).stdout
    assert said.startswith(f"{source} deleted: 0 updates, 0 clients, 0 models")
    assert "no job" in flctl(function_url, "jobs", "show", source, expect=1).stderr


def test_logs_and_errors_from_the_devices(function_url):
    import time

    from clients.transport import make_transport

    op = Operator(function_url, ADMIN)
    job_id = op.call("create_job", {"num_clients": 2, "clients_per_round": 2})["job_id"]
    fn = make_transport(function_url)
    subs = [fn.call("subscribe", {"job_id": job_id}) for _ in range(2)]
    now = time.time()
    fn.call("poll", {"log": [{"at": now, "level": "info", "text": "round 1 trained in 3.0s", "round": 1}]},
            token=subs[0]["token"])  # fmt: skip
    fn.call("poll", {"log": [{"at": now + 1, "level": "error", "text": "CUDA out of memory"}]}, token=subs[1]["token"])
    text = flctl(function_url, "logs", job_id).stdout
    assert f"INFO    {subs[0]['client_id']} round 1: round 1 trained in 3.0s" in text and "CUDA out of memory" in text
    errors = flctl(function_url, "errors", job_id).stdout
    assert "CUDA out of memory" in errors and "trained" not in errors
    op.call("stop_job", {"job_id": job_id, "reason": "seen"})
    followed = flctl(function_url, "logs", job_id, "--follow", "--limit", "1")  # ends: the job has ended
    assert followed.stdout.strip().endswith("CUDA out of memory")


def test_export_to_tensorboard_and_mlflow(function_url, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from flcore.shared import weights as wcodec
    from helpers import random_weights

    op = Operator(function_url, ADMIN)
    job_id = op.call("create_job", {"name": "exported", "num_clients": 2, "clients_per_round": 2, "rounds": 2})[
        "job_id"
    ]
    op.call("update_job", {"job_id": job_id, "set": {"lr": 0.02}})
    subs = [op.transport.call("subscribe", {"job_id": job_id}) for _ in range(2)]
    for rnd in (1, 2):
        for i, sub in enumerate(subs):
            body = {"round": rnd, "num_examples": 100, "weights": wcodec.to_b64(random_weights(seed=10 * rnd + i)),
                    "metrics": {"eval_accuracy": 0.5 + 0.1 * rnd, "train_loss": 1.0 / rnd}}  # fmt: skip
            op.transport.call("submit", body, token=sub["token"])
        op.call("aggregate", {"job_id": job_id})
    said = flctl(function_url, "export", job_id, "--tensorboard", str(tmp_path / "tb"),
                 "--mlflow", str(tmp_path / "mlruns")).stdout  # fmt: skip
    assert said.startswith(f"{job_id}: 2 rounds; ") and "MLflow run" in said
    events = EventAccumulator(str(tmp_path / "tb" / job_id))
    events.Reload()
    acc = [(e.step, round(e.value, 4)) for e in events.Scalars("federated/eval_accuracy")]
    assert acc == [(1, 0.6), (2, 0.7)] and "round/seconds" in events.Tags()["scalars"]
    assert {"settings/text_summary", "changes/text_summary"} <= set(events.Tags()["tensors"])

    import mlflow

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = mlflow.tracking.MlflowClient(str(tmp_path / "mlruns"))
    run = client.search_runs([client.get_experiment_by_name("serverless-fl").experiment_id])[0]
    assert run.data.params["lr"] == "0.02" and run.data.tags["job_id"] == job_id and run.info.run_name == "exported"
    history = client.get_metric_history(run.info.run_id, "federated.eval_accuracy")
    assert [(m.step, round(m.value, 4)) for m in history] == [(1, 0.6), (2, 0.7)]
    assert "needs --tensorboard DIR and/or --mlflow URI" in flctl(function_url, "export", job_id, expect=2).stderr
