"""Bearer tokens as the edge reads them: the header, and the operator's token from the settings.

Clients' and devices' own tokens are minted and hashed in :mod:`flcore.domain.tokens`;
every comparison is constant-time.
"""

from __future__ import annotations

import hmac
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
    """Refuse a request without the operator token (401) or with another token (403), saying which."""
    if not is_admin(headers, admin_token):
        if bearer(headers) is None:
            raise Unauthenticated("this action needs the operator token (FL_ADMIN_TOKEN): none was sent")
        raise Forbidden("the token sent was refused: this action needs the operator token (FL_ADMIN_TOKEN)")
