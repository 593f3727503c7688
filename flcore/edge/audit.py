"""The audit trail: every operator action that changes something, attributed to who did it.

The edge records it after the action ran (or refused), so no action has to remember to; what is kept
is who (the operator's name and role), what (the action, and the fields that say what it changed:
never a token), when, on which job or device, and how it ended (200, or the refusal's status and text).
Reading actions are not recorded.
"""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from flcore.actions.request import Caller
from flcore.shared import clock
from flcore.storage.store import Store

log = logging.getLogger(__name__)

DETAIL = ("set", "reason", "name", "role", "start", "keep_model", "state", "labels")  # what an entry shows
MAX_TEXT = 300


def record(
    store: Store, action: str, caller: Caller, body: dict, reply: dict | None, status: int, error: str = ""
) -> None:
    """Add one entry; a failure to write it is logged, never turned into a failed request."""
    entry = {
        "at": clock.now(),
        "who": caller.name,
        "role": caller.role,
        "action": action,
        "status": status,
        "job_id": body.get("job_id") or (reply or {}).get("job_id"),
        "device_id": body.get("device_id"),
        "detail": {k: _short(body[k]) for k in DETAIL if k in body},
    }
    if error:
        entry["error"] = error[:MAX_TEXT]
    try:
        store.record(entry)
    except PyMongoError as exc:
        log.warning("audit entry for %s by %s not written: %s", action, caller.name, exc)


def _short(value: object) -> object:
    return value if not isinstance(value, str) else value[:MAX_TEXT]
