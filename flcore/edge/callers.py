"""Who may call an action, and proving it: the edge does this once, before the action runs.

Each route names one :class:`Who`; :func:`identify` checks the request's
bearer token against it and hands the action a :class:`Caller`, so an action's
first line is about federated learning, never about tokens.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping

from flcore.actions.request import Caller
from flcore.domain import tokens
from flcore.edge import auth
from flcore.edge.settings import Settings
from flcore.errors import DomainError, Forbidden, Unauthenticated
from flcore.storage.store import Store


class Who(enum.Enum):
    """The callers a route admits."""

    OPERATOR = "operator"  # the operator token (FL_ADMIN_TOKEN); anyone while none is set
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
    if who is Who.OPERATOR:
        auth.require_admin(headers, settings.admin_token)
        return Caller(operator=True)
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


def _member(headers: Mapping[str, str], settings: Settings, store: Store) -> Caller:
    """The operator, or a client; anyone else is refused."""
    token = auth.bearer(headers)
    admin = settings.admin_token
    if token is not None and admin and auth.is_admin(headers, admin):
        return Caller(operator=True)
    if token is not None and "." in token:
        return Caller(client=_holder("client", "subscribe", headers, store.get_client))
    auth.require_admin(headers, admin)
    return Caller(operator=True)


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
