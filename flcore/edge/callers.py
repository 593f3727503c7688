"""Who may call an action, and proving it: the edge does this once, before the action runs.

Each route names one :class:`Who`; :func:`identify` checks the request's
bearer token against it and hands the action a :class:`Caller`, so an action's
first line is about federated learning, never about tokens.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping

from flcore.actions.request import Caller
from flcore.domain import roles, tokens
from flcore.edge import auth
from flcore.edge.settings import Settings
from flcore.errors import DomainError, Forbidden, Unauthenticated
from flcore.storage.store import Store


class Who(enum.Enum):
    """The callers a route admits."""

    VIEWER = "operator (any role)"  # reads: the root token (FL_ADMIN_TOKEN) or a named operator token
    OPERATOR = "operator (operator or admin role)"  # drives jobs and devices; anyone while no root token is set
    ADMIN = "operator (admin role)"  # manages operator tokens
    CLIENT = "client"  # a client token, from subscribe or join
    DEVICE = "device"  # a device token, from register
    MEMBER = "operator or client"  # a client sees only its own job (the actions check which job)
    ENROLLING = "enrolment token"  # FL_ENROL_TOKEN or the operator token; anyone while none is set
    PUBLIC_OR_MEMBER = "anyone for a public job, else operator or client"  # the action reads the job
    ANYONE = "anyone"


def identify(who: Who, headers: Mapping[str, str], settings: Settings, store: Store) -> Caller:
    """The caller a route admits, or the refusal (401 without a token, 403 with a wrong one)."""
    if who is Who.ANYONE:
        return Caller()
    if who in NEEDS:
        return _operator(headers, settings, store, NEEDS[who])
    if who is Who.CLIENT:
        return Caller(client=_holder("client", "subscribe", headers, store.get_client))
    if who is Who.DEVICE:
        return Caller(device=_holder("device", "register", headers, lambda i: _device(store, i)))
    if who is Who.ENROLLING:
        return _enrolling(headers, settings)
    if who is Who.MEMBER:
        return _member(headers, settings, store)
    try:  # PUBLIC_OR_MEMBER
        return _member(headers, settings, store)
    except DomainError as exc:
        return Caller(refusal=exc)


NEEDS = {Who.VIEWER: "viewer", Who.OPERATOR: "operator", Who.ADMIN: "admin"}


def _operator(headers: Mapping[str, str], settings: Settings, store: Store, needed: str) -> Caller:
    """The root operator (the settings' token; anyone while none is set), or a named operator whose role
    covers ``needed``; a revoked or unknown token is refused (401), a role too small too (403)."""
    admin, token = settings.admin_token, auth.bearer(headers)
    if not admin or (token is not None and auth.presents(headers, admin)):
        return Caller(operator=True, name=roles.ROOT, role="admin")
    if token is not None and token.startswith(OPERATOR_PREFIX):
        held = _holder("operator", "flctl tokens create", headers, store.get_operator)
        if held.get("revoked_at") is not None:
            raise Unauthenticated(f"the operator token of {held['name']} was revoked")
        if not roles.allows(held["role"], needed):
            article = "an" if held["role"][0] in "aeiou" else "a"
            raise Forbidden(f"{held['name']} is {article} {held['role']}: this action needs the {needed} role or above")
        return Caller(operator=True, name=held["name"], role=held["role"])
    auth.require_admin(headers, admin)  # no token (401), or one that is nobody's (403)
    raise AssertionError("require_admin refuses whoever is not the root operator")


OPERATOR_PREFIX = "o-"  # operator ids; clients' are c-..., devices' d-...


def _member(headers: Mapping[str, str], settings: Settings, store: Store) -> Caller:
    """An operator of any role, or a client; anyone else is refused."""
    token = auth.bearer(headers)
    if token is not None and "." in token and not token.startswith(OPERATOR_PREFIX):
        if not (settings.admin_token and auth.presents(headers, settings.admin_token)):
            return Caller(client=_holder("client", "subscribe", headers, store.get_client))
    return _operator(headers, settings, store, "viewer")


def _enrolling(headers: Mapping[str, str], settings: Settings) -> Caller:
    enrol, admin = settings.enrol_token, settings.admin_token
    if admin and auth.presents(headers, admin):
        return Caller(operator=True)
    if enrol and not auth.presents(headers, enrol):
        if auth.bearer(headers) is None:
            raise Unauthenticated("registering needs the enrolment token (FL_ENROL_TOKEN): none was sent")
        raise Forbidden("the token sent was refused: registering needs the enrolment token (FL_ENROL_TOKEN)")
    return Caller()


def _device(store: Store, device_id: str) -> dict | None:
    return store.get_device(device_id) if device_id.startswith("d-") else None


def _holder(kind: str, given_by: str, headers: Mapping[str, str], lookup: Callable[[str], dict | None]) -> dict:
    """The document behind an ``<id>.<secret>`` bearer token, checked against its stored hash."""
    token = auth.bearer(headers)
    if token is None:
        raise Unauthenticated(f"missing {kind} token (Authorization: Bearer <token from {given_by}>)")
    holder_id, secret = tokens.split_token(token)
    doc = lookup(holder_id)
    if doc is None or not tokens.verify_secret(secret, doc["token_hash"]):
        raise Unauthenticated(f"invalid {kind} token")
    return doc
