"""Clone, delete and archive a job: a clone takes another's settings with its changes and overrides,
delete removes a finished job's updates, clients and models (refused while it runs), keep_model keeps
the final model usable, and archived jobs leave the default list."""

from __future__ import annotations

from flcore.shared import weights as wcodec
from helpers import call, random_weights, snapshot, submit, subscribe_all


def _finished_job(**cfg) -> str:
    body = {"num_clients": 2, "clients_per_round": 2, "rounds": 1, "name": "first", "tags": ["a"],
            "weights": wcodec.to_b64(random_weights()), **cfg}  # fmt: skip
    job_id = call("start_training", body)["job_id"]
    for i, sub in enumerate(subscribe_all(job_id, 2)):
        submit(sub, 1, seed=i + 1)
    call("aggregate", {"job_id": job_id})
    assert call("status", {"job_id": job_id})["state"] == "done"
    return job_id


def test_a_clone_takes_the_settings_with_their_changes_and_the_overrides(store):
    source = call("create_job", {"num_clients": 4, "clients_per_round": 2, "name": "src", "tags": ["x"],
                                 "criteria": {"info.labels.site": "a"}, "start": False})["job_id"]  # fmt: skip
    call("update_job", {"job_id": source, "set": {"lr": 0.02}})
    made = call("clone_job", {"job_id": source, "set": {"rounds": 7}, "name": "copy", "start": False})
    st = call("status", {"job_id": made["job_id"]})
    assert made["cloned_from"] == source and st["name"] == "copy" and st["tags"] == ["x"]
    assert st["config"]["lr"] == 0.02 and st["config"]["rounds"] == 7 and st["config"]["num_clients"] == 4
    assert st["criteria"] == {"info.labels.site": "a"} and st["state"] == "created"
    listed = {j["job_id"]: j for j in call("list_jobs", {})["jobs"]}
    assert listed[made["job_id"]]["cloned_from"] == source
    assert "lr must be between" in call("clone_job", {"job_id": source, "set": {"lr": -1}}, expect=400)["error"]


def test_delete_is_refused_while_a_job_runs_and_removes_everything_after(store, raw_db):
    running = call("start_training", {"num_clients": 2, "clients_per_round": 2})["job_id"]
    before = snapshot(raw_db)
    assert "stop it first" in call("delete_job", {"job_id": running}, expect=409)["error"]
    assert snapshot(raw_db) == before
    job_id = _finished_job()
    assert raw_db.updates.count_documents({"job_id": job_id}) == 2
    gone = call("delete_job", {"job_id": job_id})
    assert gone["deleted"] == {"updates": 2, "clients": 2, "models": 2} and gone["kept_model_round"] is None
    for name in ("jobs", "updates", "clients", "models"):
        field = "_id" if name == "jobs" else "job_id"
        assert raw_db[name].count_documents({field: job_id}) == 0, name
    assert call("status", {"job_id": job_id}, expect=404)


def test_keep_model_keeps_the_final_model_usable_and_the_job_archived(store, raw_db):
    job_id = _finished_job()
    final = call("get_model", {"job_id": job_id})
    gone = call("delete_job", {"job_id": job_id, "keep_model": True})
    assert gone["kept_model_round"] == 1 and gone["deleted"]["models"] == 1  # the initial one went
    again = call("get_model", {"job_id": job_id})
    assert again["model_round"] == 1 and again["weights"] == final["weights"]
    assert raw_db.updates.count_documents({"job_id": job_id}) == 0
    assert job_id not in [j["job_id"] for j in call("list_jobs", {})["jobs"]]


def test_archived_jobs_leave_the_default_list(store):
    job_id = _finished_job()
    running = call("start_training", {"num_clients": 2, "clients_per_round": 2})["job_id"]
    assert "only a done or stopped job" in call("archive_job", {"job_id": running}, expect=409)["error"]
    call("archive_job", {"job_id": job_id})
    assert job_id not in [j["job_id"] for j in call("list_jobs", {})["jobs"]]
    only = call("list_jobs", {"archived": True})["jobs"]
    assert [j["job_id"] for j in only] == [job_id] and only[0]["archived"]
    assert {j["job_id"] for j in call("list_jobs", {"archived": "all"})["jobs"]} == {job_id, running}
    call("archive_job", {"job_id": job_id, "archived": False})
    assert job_id in [j["job_id"] for j in call("list_jobs", {})["jobs"]]
