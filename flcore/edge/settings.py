"""The function's own settings, read once per container into one typed object.

On AWS they come from the environment (``serverless.yml``); on OpenWhisk from
the action's bound parameters, which ``wsk`` parses as JSON, so a token typed as
``20251123`` arrives as a number and ``true`` as a boolean. A setting is text:
numbers and booleans are taken as the text the operator typed; anything that
has no single text form (null, a fraction, a list) is refused, and every
request then answers 500 naming the setting. A configured secret can therefore
never switch security off by its type.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# FL_LOG_LEVEL is the adapters' own (logging is set up before any request); it is
# listed so that OpenWhisk never takes it for a request field.
NAMES = ("MONGODB_URL", "FL_DB_NAME", "FL_ADMIN_TOKEN", "FL_ENROL_TOKEN", "FL_DB_TIMEOUT_MS", "FL_LOG_LEVEL")


class SettingsError(Exception):
    """A bound setting that cannot be used; the function refuses to serve until it is fixed."""


@dataclass(frozen=True)
class Settings:
    """What the function is configured with; the store and auth receive this object."""

    mongodb_url: str = "mongodb://127.0.0.1:27017"
    db_name: str = "fl"
    # empty: no operator check (local runs only; the deploy scripts refuse to deploy without one)
    admin_token: str = ""
    db_timeout_ms: int = 5000
    # set: registering a device needs it (or the operator token); empty: anyone may register
    enrol_token: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Settings:
        """Settings from environment-style names; absent or empty values keep their defaults."""
        # an empty value means "not set": the default applies
        text = {name: _as_text(name, values[name]) for name in NAMES if values.get(name, "") != ""}
        for name in ("FL_ADMIN_TOKEN", "FL_ENROL_TOKEN"):
            if any(ord(ch) < 33 or ord(ch) > 126 for ch in text.get(name, "")):
                raise SettingsError(f"{name} must be printable ASCII without spaces")
        timeout = text.get("FL_DB_TIMEOUT_MS", str(cls.db_timeout_ms))
        if not timeout.isdigit() or not 1 <= int(timeout) <= 600_000:
            raise SettingsError(f"FL_DB_TIMEOUT_MS must be a whole number of milliseconds, not {timeout!r}")
        return cls(
            mongodb_url=text.get("MONGODB_URL", cls.mongodb_url),
            db_name=_db_name(text.get("FL_DB_NAME", cls.db_name)),
            admin_token=text.get("FL_ADMIN_TOKEN", ""),
            db_timeout_ms=int(timeout),
            enrol_token=text.get("FL_ENROL_TOKEN", ""),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls.from_mapping(os.environ if environ is None else environ)


def _as_text(name: str, value: object) -> str:
    """A bound value as the text the operator typed; refuse values with no single text form."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int in Python
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise SettingsError(
        f"setting {name} is bound to a {kind}; bind it as a string (e.g. wsk action update ... -p {name} '\"...\"')"
    )


def _db_name(name: str) -> str:
    if len(name) > 63 or any(ch in name for ch in '/\\. "$\0'):
        raise SettingsError(f"FL_DB_NAME {name!r} is not a valid database name")
    return name


def once(load: Callable[[], Settings]) -> Callable[[], Settings]:
    """``load`` run on first use and kept for the container's life (a bad setting
    raises its :class:`SettingsError` on every call, so every request reports it)."""
    kept: list = []

    def get() -> Settings:
        if not kept:
            try:
                kept.append(load())
            except SettingsError as exc:
                kept.append(exc)
        if isinstance(kept[0], SettingsError):
            raise kept[0]
        return kept[0]

    return get


def from_params(params: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Settings:
    """OpenWhisk: the action's bound parameters over the environment, parsed once per distinct set.

    A warm container gets the same bound parameters on every invocation, so this
    parses them once; nothing is written to the environment.
    """
    environ = os.environ if environ is None else environ
    merged = {k: params[k] if k in params else environ[k] for k in NAMES if k in params or k in environ}
    return _from_json(json.dumps(merged, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _from_json(merged: str) -> Settings:
    return Settings.from_mapping(json.loads(merged))
