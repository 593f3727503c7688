"""Platform-neutral request handling: the one place adapters call into.

Adapters turn their platform's event into ``(action, body, headers)`` and turn
``(status, payload)`` back into their platform's response; everything between
(size limits, JSON parsing, errors, database faults) happens here once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from pymongo.errors import PyMongoError

from flcore import store as store_mod
from flcore.actions import ACTIONS, close_ready
from flcore.errors import ApiError

log = logging.getLogger("flcore")

# A synchronous Lambda payload is at most 6 MB; refuse larger bodies up front.
MAX_BODY_BYTES = 6 * 1024 * 1024

JSON_HEADERS = {"Content-Type": "application/json"}


def parse_body(raw: object) -> dict:
    """A JSON object from a body given as bytes, text, a dict or nothing."""
    if raw is None or raw == "" or raw == b"":
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, (bytes, bytearray)):
        raise ApiError(400, "request body must be a JSON object")
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def handle(action: str, raw_body: object, headers: Mapping[str, str] | None = None) -> tuple[int, dict]:
    """Run one action and map every outcome to an HTTP status and a JSON object."""
    headers = headers or {}
    try:
        fn = ACTIONS.get(action)
        if fn is None:
            raise ApiError(404, f"unknown action {action!r}; one of {sorted(ACTIONS)}")
        body = parse_body(raw_body)
        return 200, fn(store_mod.connect(), body, headers)
    except ApiError as exc:
        return exc.status, {"error": exc.message}
    except PyMongoError as exc:
        log.warning("database error in %s: %s", action, exc)
        return 503, {"error": "the database is unavailable; nothing was changed, retry later"}
    except Exception:  # the function must answer, never crash its runtime
        log.exception("unexpected error in %s", action)
        return 500, {"error": "internal error"}


def scheduled_tick() -> dict:
    """What a timer (EventBridge schedule, OpenWhisk alarm) runs: close rounds nobody pokes."""
    try:
        return close_ready(store_mod.connect())
    except PyMongoError as exc:
        log.warning("database error in scheduled tick: %s", exc)
        return {"error": "database unavailable"}


def to_json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str)
