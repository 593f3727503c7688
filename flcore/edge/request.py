"""One request as actions see it, and the checks every action shares: who is
calling, and the common fields (``job_id``, integers within range)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flcore.edge import auth
from flcore.errors import ApiError
from flcore.domain.job import STATES, Job
from flcore.edge.settings import Settings
from flcore.storage.store import Store

MAX_ID_CHARS = 64
MAX_ROUND = 2**31 - 1  # the largest round number a request may name


@dataclass(frozen=True)
class Request:
    store: Store
    body: dict
    headers: Mapping[str, str]
    settings: Settings

    def job_id(self, required: bool = True) -> str | None:
        job_id = self.body.get("job_id")
        if job_id is None and not required:
            return None
        if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_ID_CHARS:
            raise ApiError(400, "job_id must be a string")
        return job_id

    def integer(self, name: str, low: int, high: int, required: bool = True) -> int | None:
        value = self.body.get(name)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ApiError(400, f"{name} must be an integer between {low} and {high}")
        return value

    def require_admin(self) -> None:
        auth.require_admin(self.headers, self.settings.admin_token)

    def client(self) -> dict:
        """The client a request's bearer token proves it is."""
        return self._holder("client", "subscribe", self.store.get_client)

    def device(self) -> dict:
        """The device a request's bearer token proves it is (the token ``register`` gave)."""
        return self._holder("device", "register",
                            lambda device_id: self.store.get_device(device_id) if device_id.startswith("d-") else None)

    def _holder(self, kind: str, given_by: str, lookup: Callable[[str], dict | None]) -> dict:
        """The document behind an ``<id>.<secret>`` bearer token, checked against its stored hash."""
        token = auth.bearer(self.headers)
        if token is None:
            raise ApiError(401, f"missing {kind} token (Authorization: Bearer <token from {given_by}>)")
        holder_id, secret = auth.split_client_token(token)
        doc = lookup(holder_id)
        if doc is None or not auth.verify_secret(secret, doc["token_hash"]):
            raise ApiError(401, f"invalid {kind} token")
        return doc

    def caller(self) -> dict | None:
        """The client making the request, or None for the operator; refuses anyone else."""
        token = auth.bearer(self.headers)
        admin = self.settings.admin_token
        if token is not None and admin and auth.is_admin(self.headers, admin):
            return None
        if token is not None and "." in token:
            return self.client()
        self.require_admin()
        return None

    def visible_job(self, history: bool = False) -> Job:
        """The job a request may see: the client's own, or any job (default: newest) for the operator."""
        client = self.caller()
        job_id = self.job_id(required=False)
        if client is not None:
            if job_id not in (None, client["job_id"]):
                raise ApiError(403, "a client can only see its own job")
            job_id = client["job_id"]
        elif job_id is None:
            newest = self.store.newest_job(STATES)
            if newest is None:
                raise ApiError(404, "no jobs yet")
            job_id = newest["_id"]
        return Job.load(self.store, job_id, history=history)
