"""Operator accounts: named tokens with roles (viewer < operator < admin), stored only as hashes,
revocable at once; every operator action that changes something lands in the audit trail, attributed."""

from __future__ import annotations

import json

import pytest

from helpers import ADMIN, call, snapshot


@pytest.fixture(autouse=True)
def root_token(db_name, monkeypatch):
    """Accounts mean something only where the function has a root token (without one, anyone is root)."""
    monkeypatch.setenv("FL_ADMIN_TOKEN", ADMIN)


def _token(name: str, role: str) -> str:
    return call("create_operator_token", {"name": name, "role": role}, ADMIN)["token"]


def test_tokens_are_stored_only_as_hashes_and_names_are_not_reused(store, raw_db):
    token = _token("ana", "viewer")
    doc = raw_db.operators.find_one({"name": "ana"})
    assert doc["role"] == "viewer" and doc["created_by"] == "root"
    assert token not in json.dumps(doc, default=str) and token.split(".")[1] not in json.dumps(doc, default=str)
    listed = call("list_operator_tokens", {}, ADMIN)["operators"]
    assert [o["name"] for o in listed] == ["ana"] and "token_hash" not in listed[0]
    before = snapshot(raw_db)
    assert "exists" in call("create_operator_token", {"name": "ana", "role": "admin"}, ADMIN, expect=409)["error"]
    assert (
        "role must be one of"
        in call("create_operator_token", {"name": "bo", "role": "god"}, ADMIN, expect=400)["error"]
    )
    assert "name must be" in call("create_operator_token", {"name": "root"}, ADMIN, expect=400)["error"]
    after = snapshot(raw_db)
    assert {k: v for k, v in after.items() if k != "audit"} == {k: v for k, v in before.items() if k != "audit"}


def test_each_role_does_what_it_may_and_is_told_why_not(store):
    viewer, operator = _token("vera", "viewer"), _token("otto", "operator")
    job_id = call("create_job", {"num_clients": 2, "clients_per_round": 2, "name": "roles"}, operator)["job_id"]
    assert call("list_jobs", {}, viewer)["jobs"][0]["job_id"] == job_id
    assert call("status", {"job_id": job_id}, viewer)["state"] == "waiting"
    assert call("whoami", {}, viewer) == {"name": "vera", "role": "viewer"}
    said = call("stop_job", {"job_id": job_id, "reason": "no"}, viewer, expect=403)["error"]
    assert said == "vera is a viewer: this action needs the operator role or above"
    said = call("create_operator_token", {"name": "eve", "role": "admin"}, operator, expect=403)["error"]
    assert said == "otto is an operator: this action needs the admin role or above"
    call("update_job", {"job_id": job_id, "set": {"lr": 0.02}}, operator)
    assert call("status", {"job_id": job_id}, viewer)["changes"][0]["by"] == "otto"  # each change attributed


def test_a_revoked_token_stops_working_at_once(store):
    token = _token("tom", "operator")
    call("list_jobs", {}, token)
    assert call("revoke_operator_token", {"name": "tom"}, ADMIN)["name"] == "tom"
    assert call("list_jobs", {}, token, expect=401)["error"] == "the operator token of tom was revoked"
    assert "no active operator" in call("revoke_operator_token", {"name": "tom"}, ADMIN, expect=404)["error"]
    forged = token.split(".")[0] + ".not-the-secret"
    assert call("list_jobs", {}, forged, expect=401)["error"] == "invalid operator token"


def test_the_audit_trail_says_who_did_what_when_and_how_it_ended(store, raw_db):
    operator = _token("olga", "operator")
    job_id = call("create_job", {"num_clients": 2, "clients_per_round": 2}, operator)["job_id"]
    call("stop_job", {"job_id": job_id, "reason": "a test"}, operator)
    call("stop_job", {"job_id": job_id, "reason": "again"}, operator, expect=409)  # refused: changed nothing
    call("status", {"job_id": job_id}, operator)  # reading is not recorded
    trail = call("audit", {"job_id": job_id}, _token("val", "viewer"))["entries"]
    assert [(e["who"], e["action"]) for e in trail] == [("olga", "stop_job"), ("olga", "create_job")]
    assert trail[0]["detail"] == {"reason": "a test"}
    assert all(e["role"] == "operator" and e["at"] > 0 for e in trail)
    everything = call("audit", {}, ADMIN)["entries"]
    made = [e for e in everything if e["action"] == "create_operator_token"]
    assert [(e["who"], e["detail"]) for e in made] == [
        ("root", {"name": "val", "role": "viewer"}),
        ("root", {"name": "olga", "role": "operator"}),
    ]
    secrets = [operator.split(".")[1]]
    for e in raw_db.audit.find():  # never a token in the trail
        assert not any(secret in json.dumps(e, default=str) for secret in secrets)
