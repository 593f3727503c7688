"""The ``jobs`` collection: every read and every write of a job document, in one file.

A job moves only by the named transitions below (create, open, start, repick,
replace a pick, change settings, take or renew the lease, commit a round,
stop), each one conditional update that names the state it expects, so
concurrent invocations cannot move a job twice. :data:`SCHEMA` says what each
field of the document is, who writes it and what it means in each round mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection

# Fields never needed when a job document is read for routing decisions.
LIGHT = {"history": False}

# created: defined, takes no devices yet; waiting: open, round 1 not started;
# running: rounds under way; done: ran its rounds or reached its target; stopped: by operator or rule
STATES = ("created", "waiting", "running", "done", "stopped")
UNFINISHED = ("created", "waiting", "running")
FINISHED = ("done", "stopped")


@dataclass(frozen=True)
class Field:
    """One field of a job document: its type, the transitions that write it, and what it means
    (in each round mode, where they differ)."""

    name: str
    type: str
    written_by: str
    meaning: str


# fmt: off
SCHEMA: tuple[Field, ...] = (
    Field("_id", "str", "create", "the job's id, job-<12 hex>"),
    Field("created_at", "float", "create", "when the job was created (epoch seconds)"),
    Field("config", "dict", "create", "the settings it was created with (JobConfig.to_dict)"),
    Field("changes", "list[dict]", "change_settings, commit_round", "settings changes, each from its round on"),
    Field("name", "str | None", "create", "a name for people"),
    Field("tags", "list[str]", "create", "labels to filter lists by"),
    Field("priority", "int", "create", "higher: offered to devices first"),
    Field("criteria", "dict | None", "create", "the filter devices must meet to join and be picked"),
    Field("rules", "list[dict]", "create", "automation rules, evaluated as rounds close"),
    Field("public_predict", "bool", "create", "whether anyone may call predict"),
    Field("state", "str", "open, start, commit_round, stop", "one of STATES"),
    Field("opened_at", "float", "create, open", "when it began to take devices"),
    Field("places_taken", "int", "create, take_place", "places handed out to joiners"),
    Field("started_at", "float", "start", "when round 1 (version 1) began"),
    Field("round", "int", "start, commit_round", "sync: the round under way; FedBuff: the version being built"),
    Field("picked", "list[str]", "start, repick, replace_pick, slots, stop", "sync: the picks; FedBuff: who trains"),
    Field("in_flight", "dict", "claim_slot, release_slot, commit, stop", "FedBuff: each trainer's [base, since]"),
    Field("round_started_at", "float", "start, commit_round", "when the round (version) began"),
    Field("deadline", "float", "start, repick, commit_round", "when it closes with what arrived (sync: or re-picks)"),
    Field("attempt", "int", "repick, commit_round", "how often the round was re-picked (seeds the picks)"),
    Field("lease_owner", "str", "acquire_lease, commit_round, release", "the aggregation that may commit now"),
    Field("lease_until", "float", "acquire, renew, commit_round, release", "when that lease expires unless renewed"),
    Field("model_round", "int | None", "create, commit_round", "the newest model (0: the operator's initial one)"),
    Field("model_owner", "str | None", "create, commit_round", "which aggregation wrote that model"),
    Field("history", "list[dict]", "commit_round", "one entry per closed round (flcore.engine.history)"),
    Field("recent_round_s", "list[float]", "commit_round", "the last few rounds' durations (wait hints)"),
    Field("latest", "dict", "commit_round", "the newest round's metrics"),
    Field("best", "dict | None", "commit_round", "the best round so far by federated accuracy"),
    Field("rules_fired", "list[int]", "commit_round", "rules that fired and do not repeat"),
    Field("starts_pending", "list[str]", "commit_round, clear_pending", "jobs a rule starts, until opened"),
    Field("buffer_last", "list[list]", "commit_round", "FedBuff: the updates the newest version took"),
    Field("schema", "dict", "fix_schema", "tabular: the features and their kinds, fixed by the first device"),
    Field("encoding", "dict", "set_encoding", "tabular: how every row is encoded, from the statistics step"),
    Field("retrain_from", "int", "retrain", "tabular: the last round of the version a retraining starts from"),
    Field("retrained_at", "float", "retrain", "tabular: when the latest retraining began"),
    Field("retrains", "list[dict]", "retrain", "tabular: each retraining: when, from which round, why"),
    Field("reported", "dict", "record_report", "the operator's own measurements, by round"),
    Field("finished_at", "float", "commit_round, stop", "when it ended"),
    Field("stopped_because", "str", "commit_round, stop", "why it ended"),
)
# fmt: on


def ending(state: str, reason: str, now: float) -> dict:
    """What every way of ending a job sets: nobody is picked or training any more."""
    return {"state": state, "stopped_because": reason, "finished_at": now, "picked": [], "in_flight": {}}


def lease_free(now: float) -> dict:
    """The query condition that no aggregation holds a job's lease at ``now`` (none, or expired)."""
    return {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}


class JobRepository:
    """Reads and named transitions of job documents; the store mixes this in."""

    jobs: Collection

    def _job_indexes(self) -> None:
        self.jobs.create_index([("state", ASCENDING), ("created_at", DESCENDING)])
        self.jobs.create_index([("created_at", DESCENDING), ("_id", DESCENDING)])

    # reads --------------------------------------------------------------
    def get_job(self, job_id: str, history: bool = False) -> dict | None:
        return self.jobs.find_one({"_id": job_id}, None if history else LIGHT)

    def newest_job(self, states: Iterable[str], query: dict | None = None) -> dict | None:
        return self.jobs.find_one(
            {"state": {"$in": list(states)}, **(query or {})}, LIGHT, sort=[("created_at", DESCENDING)]
        )

    def running_job_ids(self) -> list[str]:
        return [d["_id"] for d in self.jobs.find({"state": "running"}, {"_id": True})]

    def list_jobs(self, query: dict, limit: int) -> list[dict]:
        """Jobs matching ``query``, newest first (ties broken by id, so pages never overlap)."""
        cursor = self.jobs.find(query, LIGHT).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        return list(cursor.limit(limit))

    def open_jobs(self, limit: int) -> list[dict]:
        """Jobs that take devices now, best first: highest priority, then oldest."""
        cursor = self.jobs.find({"state": {"$in": ["waiting", "running"]}}, LIGHT)
        return list(cursor.sort([("priority", DESCENDING), ("created_at", ASCENDING)]).limit(limit))

    def jobs_with_pending_starts(self) -> list[dict]:
        return list(self.jobs.find({"starts_pending": {"$exists": True}}, {"starts_pending": True}))

    # transitions --------------------------------------------------------
    def _move(self, job_id: str, expect: dict, update: dict) -> dict | None:
        """Apply ``update`` only if the job still matches ``expect``; the new document, or None."""
        return self.jobs.find_one_and_update(
            {"_id": job_id, **expect}, update, projection=LIGHT, return_document=ReturnDocument.AFTER
        )

    def create_job(self, doc: dict) -> None:
        self.jobs.insert_one({**doc, "places_taken": 0})

    def open_job(self, job_id: str, now: float) -> dict | None:
        """``created`` -> ``waiting`` (takes devices); None if the job was not ``created``."""
        return self._move(job_id, {"state": "created"}, {"$set": {"state": "waiting", "opened_at": now}})

    def fix_schema(self, job_id: str, schema: dict) -> dict | None:
        """A tabular job's schema, set once by its first device; None if another device set it first."""
        return self._move(job_id, {"schema": {"$exists": False}}, {"$set": {"schema": schema}})

    def set_encoding(self, job_id: str, encoding: dict) -> dict | None:
        """A waiting tabular job's encoding, with the model's input width and outputs; set once."""
        derived = {"config.data.input_width": encoding["width"], "config.data.outputs": encoding["outputs"]}
        return self._move(
            job_id, {"state": "waiting", "encoding": {"$exists": False}}, {"$set": {"encoding": encoding, **derived}}
        )

    def retrain(self, job_id: str, finished_at: float, change: dict, entry: dict, now: float) -> dict | None:
        """``done`` -> ``waiting`` for more rounds from its final model (``change`` raises ``rounds``); only
        from the ending seen (``finished_at``), so concurrent reports of changed data retrain it once."""
        return self._move(
            job_id,
            {"state": "done", "finished_at": finished_at},
            {
                "$set": {"state": "waiting", "retrain_from": change["round"] - 1, "retrained_at": now},
                "$unset": {"finished_at": "", "stopped_because": ""},
                "$push": {"changes": change, "retrains": entry},
            },
        )

    def start_job(self, job_id: str, round_fields: dict, now: float) -> dict | None:
        """``waiting`` -> ``running``, with round 1's fields; None if another invocation started it."""
        return self._move(
            job_id, {"state": "waiting"}, {"$set": {"state": "running", "started_at": now, **round_fields}}
        )

    def repick(
        self, job_id: str, rnd: int, old_deadline: float, picked: list[str], deadline: float, attempt: int
    ) -> dict | None:
        """A round past its deadline gets fresh picks and time; None if it moved meanwhile."""
        return self._move(
            job_id,
            {"state": "running", "round": rnd, "deadline": old_deadline},
            {"$set": {"picked": picked, "deadline": deadline, "attempt": attempt}},
        )

    def archive_job(self, job_id: str, archived: bool, now: float) -> dict | None:
        """Hide a finished job from the default list (or show it again); None if it is not finished."""
        change = {"$set": {"archived_at": now}} if archived else {"$unset": {"archived_at": ""}}
        return self._move(job_id, {"state": {"$in": list(FINISHED)}}, change)

    def set_job_fields(self, job_id: str, fields: dict) -> None:
        """Annotate a job (what it was cloned from); not a state change."""
        self.jobs.update_one({"_id": job_id}, {"$set": fields})

    def delete_job_doc(self, job_id: str) -> bool:
        """Remove a finished job's document; False if it is not (or no longer) finished."""
        return self.jobs.delete_one({"_id": job_id, "state": {"$in": list(FINISHED)}}).deleted_count == 1

    def move_secure(self, job_id: str, rnd: int, expect: dict, update: dict) -> dict | None:
        """A secure round's protocol moves on (see flcore.engine.secure); None if it moved meanwhile."""
        return self._move(job_id, {"state": "running", "round": rnd, **expect}, update)

    def replace_pick(self, job_id: str, rnd: int, old: list[str], picked: list[str]) -> dict | None:
        """The round's picks changed while it runs (one left); None if the round or its picks moved."""
        return self._move(job_id, {"state": "running", "round": rnd, "picked": old}, {"$set": {"picked": picked}})

    def change_settings(self, job_id: str, state: str, rnd: int, change: dict, now: float) -> dict | None:
        """Record a settings change, only while no aggregation holds the lease (it reads the settings)."""
        return self._move(job_id, {"state": state, "round": rnd, **lease_free(now)}, {"$push": {"changes": change}})

    def record_report(self, job_id: str, rnd: int, metrics: dict[str, float]) -> None:
        """The operator's own measurements of a closed round."""
        self._move(job_id, {}, {"$set": {f"reported.{rnd}.{k}": v for k, v in metrics.items()}})

    def stop_job(self, job_id: str, reason: str, now: float) -> dict | None:
        """Any unfinished job -> ``stopped``; an aggregation under way then cannot commit."""
        return self._move(job_id, {"state": {"$in": list(UNFINISHED)}}, {"$set": ending("stopped", reason, now)})

    def acquire_lease(self, job_id: str, rnd: int, owner: str, now: float, until: float) -> dict | None:
        """The right to aggregate round ``rnd``, if it is free or expired; the job, or None."""
        return self._move(
            job_id,
            {"state": "running", "round": rnd, **lease_free(now)},
            {"$set": {"lease_owner": owner, "lease_until": until}},
        )

    def renew_lease(self, job_id: str, rnd: int, owner: str, until: float) -> bool:
        """Extend a held aggregation lease; False once it is no longer this owner's."""
        res = self.jobs.update_one(
            {"_id": job_id, "round": rnd, "lease_owner": owner}, {"$set": {"lease_until": until}}
        )
        return res.matched_count == 1

    def release_lease(self, job_id: str, rnd: int, owner: str) -> None:
        self._move(job_id, {"round": rnd, "lease_owner": owner}, {"$unset": {"lease_owner": "", "lease_until": ""}})

    def commit_round(self, job_id: str, rnd: int, owner: str, update: dict) -> dict | None:
        """Close round ``rnd`` with ``update`` (see flcore.engine.closing), only for the lease holder of a
        job still running that round; clears the lease."""
        update = {**update, "$unset": {"lease_owner": "", "lease_until": ""}}
        return self._move(job_id, {"state": "running", "round": rnd, "lease_owner": owner}, update)

    def take_place(self, job_id: str, capacity: int) -> int | None:
        """The next place (partition slot) the job hands out, counting ``places_taken``; None once all
        ``capacity`` are handed out (joins then look for a place a failed join left)."""
        job = self.jobs.find_one_and_update(
            {"_id": job_id, "places_taken": {"$lt": capacity}},
            {"$inc": {"places_taken": 1}},
            {"places_taken": True},
            return_document=ReturnDocument.AFTER,
        )
        return None if job is None else job["places_taken"] - 1

    def clear_pending_starts(self, job_id: str) -> None:
        self.jobs.update_one({"_id": job_id}, {"$unset": {"starts_pending": ""}})

    def claim_slot(self, job_id: str, client_id: str, base: int, limit: int, now: float) -> bool:
        """FedBuff: let a client train on version ``base`` if fewer than ``limit`` train now."""
        return (
            self._move(
                job_id,
                {"state": "running", "picked": {"$ne": client_id}, f"picked.{limit - 1}": {"$exists": False}},
                {"$push": {"picked": client_id}, "$set": {f"in_flight.{client_id}": [base, now]}},
            )
            is not None
        )

    def release_slot(self, job_id: str, client_id: str, slot: list | None = None) -> None:
        """FedBuff: give a client's training slot back (only if it is still ``slot``, when given)."""
        query: dict = {"_id": job_id}
        if slot is not None:
            query[f"in_flight.{client_id}"] = slot
        self.jobs.update_one(query, {"$pull": {"picked": client_id}, "$unset": {f"in_flight.{client_id}": ""}})
