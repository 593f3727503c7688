"""Operator accounts: named tokens with a role, revocable; the audit trail of what operators did; and
what the devices said (their log lines).

A token is shown once, when it is created; only a hash of its secret is stored. Names are never
reused, so the audit trail's ``who`` always means one account.
"""

from __future__ import annotations

import secrets

from flcore.actions.request import MAX_ID_CHARS, Request
from flcore.domain import roles, tokens
from flcore.domain.logs import LEVELS
from flcore.errors import Conflict, Invalid, NotFound
from flcore.shared import clock
from flcore.shared.checks import is_number

MAX_AUDIT_LIMIT = 500
MAX_LOG_LIMIT = 1000


def create_operator_token(req: Request) -> dict:
    """A named operator token with a role (viewer, operator or admin); the token is shown only now."""
    name = roles.checked_name(req.body.get("name"))
    role = roles.checked_role(req.body.get("role", "viewer"))
    operator_id = "o-" + secrets.token_hex(6)
    token, token_hash = tokens.new_token(operator_id)
    now = clock.now()
    doc = {"_id": operator_id, "name": name, "role": role, "token_hash": token_hash, "created_at": now,
           "created_by": req.caller.name, "revoked_at": None}  # fmt: skip
    if not req.store.add_operator(doc):
        raise Conflict(f"an operator named {name!r} exists (or existed: names are not reused)")
    return {"name": name, "role": role, "token": token, "created_at": now}


def list_operator_tokens(req: Request) -> dict:
    """The operator accounts: name, role, who created them and when, whether revoked (never a token)."""
    return {"operators": [{k: v for k, v in d.items() if k != "_id"} for d in req.store.list_operators()]}


def revoke_operator_token(req: Request) -> dict:
    """Revoke a named operator's token: it is refused from the next request on."""
    name = roles.checked_name(req.body.get("name"))
    revoked = req.store.revoke_operator(name, clock.now())
    if revoked is None:
        raise NotFound(f"no active operator named {name!r}")
    return {"name": name, "revoked_at": revoked["revoked_at"]}


def audit(req: Request) -> dict:
    """The audit trail, newest first: who did what, when, on which job or device, and how it ended."""
    limit = req.integer("limit", 1, MAX_AUDIT_LIMIT, required=False) or 100
    query = {}
    for key in ("job_id", "device_id", "who"):
        value = req.body.get(key)
        if value is not None:
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
                raise Invalid(f"{key} must be a short string")
            query[key] = value
    return {"entries": req.store.audit_trail(query, limit)}


def whoami(req: Request) -> dict:
    """Who this operator token belongs to, and its role (what the dashboard shows)."""
    return {"name": req.caller.name, "role": req.caller.role}


def logs(req: Request) -> dict:
    """The lines a job's clients sent (warnings, errors, one a round), oldest first: of one ``device_id`` (of
    all its jobs, without ``job_id``) or ``client_id``, of some ``levels``, after ``since`` (seconds since
    1970, for following), the last ``limit``."""
    job = req.job_id(required=req.body.get("device_id") is None)
    query: dict = {"job_id": job} if job is not None else {}
    for key in ("device_id", "client_id"):
        value = req.body.get(key)
        if value is not None:
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
                raise Invalid(f"{key} must be a short string")
            query[key] = value
    levels = req.body.get("levels")
    if levels is not None:
        if not isinstance(levels, list) or not levels or any(v not in LEVELS for v in levels):
            raise Invalid(f"levels must be a list of {list(LEVELS)}")
        query["level"] = {"$in": levels}
    since = req.body.get("since")
    if since is not None:
        if not is_number(since):
            raise Invalid("since must be a time (seconds since 1970)")
        query["at"] = {"$gt": float(since)}
    limit = req.integer("limit", 1, MAX_LOG_LIMIT, required=False) or 200
    return {"job_id": job, "lines": req.store.log_lines(query, limit)}
