"""One request as actions see it: the body, who called (proven by the edge, :mod:`flcore.edge.callers`),
and the checks of the fields every action shares (``job_id``, integers within range)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flcore.domain.job import Job
from flcore.errors import DomainError, Forbidden, Invalid, NotFound
from flcore.shared.checks import is_int
from flcore.storage.jobs import STATES
from flcore.storage.store import Store

MAX_ID_CHARS = 64
MAX_ROUND = 2**31 - 1  # the largest round number a request may name


@dataclass(frozen=True)
class Caller:
    """Who made a request, as the edge proved it.

    ``client`` and ``device`` are the stored documents behind their tokens;
    ``refusal`` is kept for :attr:`Who.PUBLIC_OR_MEMBER`, where only the job
    (read by the action) says whether an anonymous caller may go on.
    """

    operator: bool = False
    name: str = ""  # the operator's name (root: the settings' token), for the audit trail and "by"
    role: str = ""  # the operator's role (flcore.domain.roles)
    client: dict | None = None
    device: dict | None = None
    refusal: DomainError | None = None

    def member(self) -> Caller:
        """This caller, if it is the operator or a client; else the refusal the edge found."""
        if self.refusal is not None:
            raise self.refusal
        return self


@dataclass(frozen=True)
class Request:
    store: Store
    body: dict
    headers: Mapping[str, str]
    caller: Caller = Caller()

    def job_id(self, required: bool = True) -> str | None:
        job_id = self.body.get("job_id")
        if job_id is None and not required:
            return None
        if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_ID_CHARS:
            raise Invalid("job_id must be a string")
        return job_id

    def integer(self, name: str, low: int, high: int, required: bool = True) -> int | None:
        value = self.body.get(name)
        if value is None and not required:
            return None
        if not is_int(value) or not low <= value <= high:
            raise Invalid(f"{name} must be an integer between {low} and {high}")
        return value

    @property
    def client(self) -> dict:
        """The client that called: proven by the edge on routes for clients (None for the operator)."""
        return self.caller.client  # type: ignore[return-value]

    @property
    def device(self) -> dict:
        """The device that called: proven by the edge on routes for devices."""
        return self.caller.device  # type: ignore[return-value]

    def visible_job(self, history: bool = False) -> Job:
        """The job a request may see: the client's own, or any job (default: newest) for the operator."""
        client = self.caller.client
        job_id = self.job_id(required=False)
        if client is not None:
            if job_id not in (None, client["job_id"]):
                raise Forbidden("a client can only see its own job")
            job_id = client["job_id"]
        elif job_id is None:
            newest = self.store.newest_job(STATES)
            if newest is None:
                raise NotFound("no jobs yet")
            job_id = newest["_id"]
        return Job.load(self.store, job_id, history=history)
