"""What the core raises to refuse a request: one class per kind of refusal, no HTTP in sight.

The edge (:mod:`flcore.edge.errors`) maps each kind to a status code; nothing
else in the core knows about status codes. Where an action may already have
written something when it raises, its docstring says so; otherwise a refused
request has changed nothing.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request the core refuses, with a message that says why (shown to the caller as it is)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Invalid(DomainError):
    """The request is malformed or asks for something impossible (a bad field, a value out of range)."""


class Unauthenticated(DomainError):
    """The request carries no credentials (or a malformed token) where the action needs them."""


class Forbidden(DomainError):
    """The caller is known but may not do this (a wrong token, another client's job, criteria not met)."""


class NotFound(DomainError):
    """What the request names does not exist (a job, a round's model, an action)."""


class Conflict(DomainError):
    """The request is valid but the state does not allow it now (round closed, job full, already finished)."""


class TooLarge(DomainError):
    """The request or a declared upload exceeds what the function accepts."""
