"""The audit trail: every operator action that changed something, attributed to who did it.

The edge records it after the action ran, so no action has to remember to; what is kept is who (the
operator's name and role), what (the action, and the fields that say what it changed: never a token),
when, and on which job or device. Reading actions are not recorded, nor refusals: a refused request
changes nothing, the trail included.
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


def record(store: Store, action: str, caller: Caller, body: dict, reply: dict) -> None:
    """Add one entry; a failure to write it is logged, never turned into a failed request."""
    entry = {
        "at": clock.now(),
        "who": caller.name,
        "role": caller.role,
        "action": action,
        "job_id": body.get("job_id") or reply.get("job_id"),
        "device_id": body.get("device_id"),
        "detail": {k: _short(body[k]) for k in DETAIL if k in body},
    }
    try:
        store.record(entry)
    except PyMongoError as exc:
        log.warning("audit entry for %s by %s not written: %s", action, caller.name, exc)


def _short(value: object) -> object:
    return value if not isinstance(value, str) else value[:MAX_TEXT]
