"""Operator roles: what each kind of operator token may do (viewer < operator < admin).

- ``viewer`` reads: jobs, devices, status, models, the audit trail;
- ``operator`` also drives jobs and devices (create, start, stop, update, disable, revoke);
- ``admin`` also manages operator tokens. The root token (``FL_ADMIN_TOKEN``) is an admin named ``root``.
"""

from __future__ import annotations

import re

from flcore.errors import Invalid

ROLES = ("viewer", "operator", "admin")
ROOT = "root"  # the name the settings' own operator token acts under
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` covers what ``needed`` may do."""
    return ROLES.index(role) >= ROLES.index(needed)


def checked_role(raw: object) -> str:
    if raw not in ROLES:
        raise Invalid(f"role must be one of {list(ROLES)}")
    return raw  # type: ignore[return-value]


def checked_name(raw: object) -> str:
    """An operator's name: 1 to 40 lowercase letters, digits, '.', '_' or '-' (not 'root')."""
    if not isinstance(raw, str) or not _NAME.match(raw) or raw == ROOT:
        raise Invalid("name must be 1 to 40 lowercase letters, digits, '.', '_' or '-', starting with a letter "
                      f"or digit, and not {ROOT!r}")  # fmt: skip
    return raw
