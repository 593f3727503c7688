"""A job as the actions use it: its document, its parsed config and its strategy, loaded once.

A job's settings are the config it was created with plus the changes made since
(``update_job``, rules), each effective from a round on. ``config`` is the job
with every change applied: what decides its next round. ``config_at(r)`` is what
round ``r`` trains with, so a change made during a round never alters that round.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from flcore.domain import modes
from flcore.domain.config import JobConfig, with_changes
from flcore.domain.modes import RoundMode
from flcore.errors import NotFound
from flcore.shared.strategies import Strategy
from flcore.storage.jobs import FINISHED
from flcore.storage.store import Store


def config_at(doc: dict, rnd: int | None) -> JobConfig:
    """A job document's settings with its changes up to round ``rnd`` (None: all of them)."""
    cfg = JobConfig.from_doc(doc["config"])
    merged: dict = {}
    for change in doc.get("changes", []):
        if rnd is None or change["round"] <= rnd:
            merged.update(change["set"])
    return with_changes(cfg, merged) if merged else cfg


@dataclass(frozen=True)
class Job:
    doc: dict
    config: JobConfig
    strategy: Strategy

    @classmethod
    def of(cls, doc: dict) -> Job:
        config = config_at(doc, None)
        return cls(doc, config, config.build_strategy())

    def config_at(self, rnd: int) -> JobConfig:
        """The settings round ``rnd`` runs with: the changes effective from it or earlier."""
        return config_at(self.doc, rnd)

    @classmethod
    def load(cls, store: Store, job_id: str, history: bool = False) -> Job:
        """The job, or a 404 naming it."""
        doc = store.get_job(job_id, history=history)
        if doc is None:
            raise NotFound(f"no job {job_id!r}")
        return cls.of(doc)

    @functools.cached_property
    def mode(self) -> RoundMode:
        """How this job's rounds run, chosen once from its settings (the engine registers the modes)."""
        return modes.of(self.config)

    @property
    def id(self) -> str:
        return self.doc["_id"]

    @property
    def state(self) -> str:
        return self.doc["state"]

    @property
    def round(self) -> int:
        return self.doc["round"]

    @property
    def picked(self) -> list[str]:
        return self.doc.get("picked", [])

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def takes_clients(self) -> bool:
        """Open to newcomers: waiting, or running with slots it did not wait for (``min_clients``)."""
        cfg = self.config
        return self.state == "waiting" or (self.state == "running" and cfg.clients_to_start < cfg.num_clients)

    def model_owner(self, rnd: int) -> str | None:
        """Which aggregation wrote round ``rnd``'s model (``init`` for the operator's initial one).

        The latest round's owner is on the job; older ones are in the history,
        so pass a job loaded with ``history=True`` for those.
        """
        if rnd == self.doc.get("model_round"):
            return self.doc.get("model_owner")
        if rnd == 0:
            return "init"  # the operator's initial model, before any aggregation
        for entry in self.doc.get("history", []):
            if entry["round"] == rnd:
                return entry.get("model_owner")
        return None
