"""How a job's rounds run, behind one interface: the one place the round mode varies.

A job's ``mode`` setting picks its :class:`RoundMode` once, when the job is
loaded (:attr:`flcore.domain.job.Job.mode`); the lifecycle, the closing of a
round and the protocol's actions call it where synchronous rounds
(:class:`flcore.engine.sync.SyncRounds`) and buffered asynchronous versions
(:class:`flcore.engine.fedbuff.FedBuff`) differ, and nothing else asks which
mode a job runs in. The round engine registers its modes here when it is
imported (``flcore/engine/__init__.py``), so the domain needs no import of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from flcore.shared.aggregation import Updates
from flcore.shared.weights import Weights
from flcore.storage.store import Store

if TYPE_CHECKING:
    from flcore.domain.config import JobConfig
    from flcore.domain.job import Job


class RoundMode(Protocol):
    """What differs between the ways a job's rounds run."""

    # the aggregation reads the newest global model, whatever the strategy needs
    needs_current_model: bool

    def first_picks(self, store: Store, job: Job) -> list[str]:
        """Who trains first when the job starts."""

    def advance(self, store: Store, job: Job, now: float) -> Job:
        """Move a running job as far as it can go now (close what is ready, handle deadlines)."""

    def assign(self, store: Store, job: Job, client_id: str, now: float) -> int | None:
        """The model version a polling client should train on now, or None: it waits."""

    def task(self, store: Store, job: Job, client_id: str, now: float) -> dict | None:
        """A step of the round's protocol this client is to take now, beside training (secure aggregation's
        stages), as poll answers it with ``action: secure``; None: nothing of the kind."""

    def reply_fields(self, job: Job, base: int | None) -> dict:
        """What poll answers beside the action, for a client told to train on ``base`` (None: to wait)."""

    def wait_hint(self, job: Job, now: float) -> float:
        """Seconds a waiting client should sleep before it polls again."""

    def check_submit(self, store: Store, job: Job, client: dict, rnd: int) -> None:
        """Refuse (Conflict), with the reason, an update for ``rnd`` that could not count; writes nothing
        except a slot that can no longer be used (FedBuff's too-stale update)."""

    def stored(self, store: Store, job: Job, client_id: str, now: float) -> float:
        """After a client's update is stored: what the mode frees; returns when it should poll again."""

    def leave(self, store: Store, job: Job, client_id: str, now: float) -> None:
        """A client that trains now (``picked``) left the job."""

    def waiting_updates(self, store: Store, job: Job) -> int:
        """Updates stored and not yet in a model (what status calls ``submitted``)."""

    def status(self, job: Job) -> dict:
        """Mode-specific fields of status, for people to read."""

    def collect(
        self, store: Store, leased: Job, current: Weights | None, now: float
    ) -> tuple[list[dict], Updates, dict]:
        """The updates an aggregation folds: their documents, the stream the strategy folds, and
        extra history fields; no documents: nothing to fold after all."""

    def missed(self, leased: Job) -> dict[str, dict[str, float]]:
        """Device statistics for the clients that trained now and sent nothing (deadlines missed)."""

    def next_round(self, store: Store, leased: Job, entry: dict, cfg: JobConfig, now: float) -> dict:
        """What the commit sets when the job goes on: the next round's (or version's) fields."""

    def committed(self, store: Store, job: Job) -> None:
        """After a commit: the mode's own bookkeeping (FedBuff marks the updates it took)."""

    def upload_round(self, job: Job) -> int | None:
        """Unfinished uploads of rounds before this one can no longer count (None: only by age)."""


MODES: dict[str, RoundMode] = {}


def register(name: str, mode: RoundMode) -> None:
    """Make ``mode`` what jobs with ``mode: name`` run (the engine's modes register on import)."""
    MODES[name] = mode


def of(config: JobConfig) -> RoundMode:
    """The round mode a job's settings name (checked against the setting's choices when the job was created)."""
    name = "secure" if config.secure_aggregation else config.mode  # secure aggregation: sync rounds in stages
    if name not in MODES:
        raise RuntimeError(f"no round mode {name!r} is registered: import flcore.engine first")
    return MODES[name]
