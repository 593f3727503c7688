"""Platform-neutral request handling: the one place adapters call into.

Adapters turn their platform's event into ``(action, body, headers)`` and turn
``(status, payload)`` back into their platform's response; everything between
(size limits, JSON parsing, errors, database faults) happens here once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping

from pymongo.errors import PyMongoError

from flcore.actions.request import Request
from flcore.edge import audit
from flcore.edge.callers import identify
from flcore.edge.routes import BY_NAME, SCHEDULED
from flcore.edge.settings import Settings, SettingsError
from flcore.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, TooLarge, Unauthenticated
from flcore.storage import store as store_mod

log = logging.getLogger("flcore")

# A synchronous Lambda payload is at most 6 MB; refuse larger bodies up front.
MAX_BODY_BYTES = 6 * 1024 * 1024
# What the database stores: 64-bit integers, and documents nested at most this deep here.
INT_RANGE = (-(2**63), 2**63 - 1)
MAX_DEPTH = 32

JSON_HEADERS = {"Content-Type": "application/json"}

# The one place where a refusal becomes an HTTP status.
STATUS: dict[type[DomainError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
}


def status_of(exc: DomainError) -> int:
    """The HTTP status of a refusal: its kind's, or 400 for a kind with none of its own."""
    return next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)


def parse_body(raw: object) -> dict:
    """A JSON object from a body given as bytes, text, a dict or nothing."""
    if raw is None or raw == "" or raw == b"":
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, (bytes, bytearray)):
        raise Invalid("request body must be a JSON object")
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise Invalid("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Invalid("request body must be a JSON object")
    check_values(body)
    return body


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _where(path: list) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "body"


def check_values(body: dict) -> None:
    """Refuse, once for every action, what the database could not store or a later step
    could not encode: integers beyond 64 bits, non-finite numbers, strings that are not
    valid Unicode (lone surrogates), keys with NUL, nesting deeper than ``MAX_DEPTH``."""
    stack: list[tuple[object, list]] = [(body, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise Invalid(f"request body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, path, is_key=True)
                stack.append((item, path + [key[:40]]))
        elif isinstance(value, list):
            stack.extend((item, path + [i]) for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise Invalid(f"{_where(path)}: integer out of the 64-bit range")
        elif isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"{_where(path)}: number out of range")


def _check_text(text: str, path: list, is_key: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(
            f"{_where(path)}: {'a key' if is_key else 'text'} is not valid Unicode (lone surrogate)"
        ) from None
    if is_key and "\0" in text:
        raise Invalid(f"{_where(path)}: a key contains a NUL character")


SettingsSource = Callable[[], Settings]


def handle(
    action: str,
    raw_body: object,
    headers: Mapping[str, str] | None = None,
    settings: SettingsSource = Settings.from_env,
) -> tuple[int, dict]:
    """Run one action and map every outcome to an HTTP status and a JSON object.

    ``settings`` gives the function's settings: adapters pass what they loaded
    once per container; direct calls (tests) read the environment each time.
    """
    headers = headers or {}
    try:
        config = settings()  # first: a misconfigured function says so on every call
        route = BY_NAME.get(action)
        if route is None:
            raise NotFound(f"unknown action {action!r}; one of {sorted(BY_NAME)}")
        body = parse_body(raw_body)
        store = store_mod.connect(config)
        caller = identify(route.who, headers, config, store)
        reply = route.action(Request(store, body, headers, caller))
        if route.audited:  # what changed, and who changed it (a refusal changed nothing: not recorded)
            audit.record(store, route.name, caller, body, reply)
        return 200, reply
    except DomainError as exc:
        return status_of(exc), {"error": exc.message}
    except SettingsError as exc:
        log.error("the function is misconfigured: %s", exc)
        return 500, {"error": f"the function is misconfigured: {exc}"}
    except PyMongoError as exc:
        log.warning("database error in %s: %s", action, exc)
        return 503, {"error": "the database is unavailable; nothing was changed, retry later"}
    except Exception:  # the function must answer, never crash its runtime
        log.exception("unexpected error in %s", action)
        return 500, {"error": "internal error"}


def scheduled_tick(settings: SettingsSource = Settings.from_env) -> dict:
    """What a timer (EventBridge schedule, OpenWhisk alarm) runs: close rounds nobody pokes."""
    try:
        return SCHEDULED(store_mod.connect(settings()))
    except SettingsError as exc:
        log.error("the function is misconfigured: %s", exc)
        return {"error": f"the function is misconfigured: {exc}"}
    except PyMongoError as exc:
        log.warning("database error in scheduled tick: %s", exc)
        return {"error": "database unavailable"}


def to_json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str)
