"""Bearer tokens: an operator token from the settings, and a secret per client.

Client tokens are ``<client_id>.<secret>``; only a SHA-256 of the secret is
stored (the secret is 256 random bits, so a plain hash is enough), and every
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from flcore.errors import Forbidden, Unauthenticated


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, whatever the header's case."""
    for key, value in headers.items():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def presents(headers: Mapping[str, str], secret: str) -> bool:
    """Whether the request's bearer token is ``secret`` (compared in constant time)."""
    given = bearer(headers) or ""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), secret.encode())


def is_admin(headers: Mapping[str, str], admin_token: str) -> bool:
    """True when no operator token is configured, or the request carries it."""
    return not admin_token or presents(headers, admin_token)


def require_admin(headers: Mapping[str, str], admin_token: str) -> None:
    if not is_admin(headers, admin_token):
        kind = Unauthenticated if bearer(headers) is None else Forbidden
        raise kind("this action needs the operator token (FL_ADMIN_TOKEN)")


def new_client_token(client_id: str) -> tuple[str, str]:
    """A fresh token for a client and the hash to store."""
    secret = secrets.token_urlsafe(32)
    return f"{client_id}.{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_client_token(token: str) -> tuple[str, str]:
    client_id, dot, secret = token.partition(".")
    if not dot or not client_id or not secret or len(token) > 256:
        raise Unauthenticated("malformed client token")
    return client_id, secret


def verify_secret(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())
