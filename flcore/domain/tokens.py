"""Client and device tokens: ``<id>.<secret>``, of which only a SHA-256 of the secret is stored.

The secret is 256 random bits, so a plain hash is enough, and every comparison
is constant-time. The core mints them (subscribe, join, register); the edge
checks them (:mod:`flcore.edge.callers`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from flcore.errors import Invalid, Unauthenticated

_KEY = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def new_token(client_id: str) -> tuple[str, str]:
    """A fresh token for a client or device and the hash to store."""
    secret = secrets.token_urlsafe(32)
    return f"{client_id}.{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    client_id, dot, secret = token.partition(".")
    if not dot or not client_id or not secret or len(token) > 256:
        raise Unauthenticated("malformed client token")
    return client_id, secret


def idempotency_key(raw: object) -> str | None:
    """What is stored of a request's ``idempotency_key`` (its hash), or None without one.

    ``subscribe`` and ``register`` take one so that a retried call (its answer lost) gets the
    same identity, with a fresh token, instead of a second one; the key works like a secret.
    """
    if raw is None:
        return None
    if not isinstance(raw, str) or not _KEY.match(raw):
        raise Invalid("idempotency_key must be 16 to 128 letters, digits, '-' or '_'")
    return hash_secret(raw)


def verify_secret(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())
