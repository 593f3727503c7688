"""A job as the actions use it: its document, its parsed config and its strategy, loaded once."""

from __future__ import annotations

from dataclasses import dataclass

from flcore.config import JobConfig
from flcore.errors import ApiError
from flcore.store import Store
from flcore.strategies import Strategy


@dataclass(frozen=True)
class Job:
    doc: dict
    config: JobConfig
    strategy: Strategy

    @classmethod
    def of(cls, doc: dict) -> "Job":
        config = JobConfig.from_doc(doc["config"])
        return cls(doc, config, config.build_strategy())

    @classmethod
    def load(cls, store: Store, job_id: str, history: bool = False) -> "Job":
        """The job, or a 404 naming it."""
        doc = store.get_job(job_id, history=history)
        if doc is None:
            raise ApiError(404, f"no job {job_id!r}")
        return cls.of(doc)

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

    def model_owner(self, rnd: int) -> str | None:
        """Which aggregation wrote round ``rnd``'s model (``init`` for the operator's initial one).

        The latest round's owner is on the job; older ones are in the history,
        so pass a job loaded with ``history=True`` for those.
        """
        if rnd == self.doc.get("model_round"):
            return self.doc.get("model_owner")
        for entry in self.doc.get("history", []):
            if entry["round"] == rnd:
                return entry.get("model_owner")
        return None
