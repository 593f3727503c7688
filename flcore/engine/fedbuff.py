"""Buffered asynchronous FL (FedBuff, Nguyen et al., 2022): the round mode of jobs with ``mode: "async"``.

In a job with ``mode: "async"`` there is no round barrier. The job's ``round``
is the model version being built and ``model_round`` the newest one finished:

- **Slots.** A polling client may train when fewer than ``max_concurrency``
  clients train now and it has no update on the newest model yet. Taking a
  slot is one conditional update of the job: ``picked`` lists who trains now,
  ``in_flight.<client>`` on which version (its *base*) and since when. A slot
  not used within ``round_timeout_s`` is given back.
- **Updates.** A submit is stored under its base version (one per client and
  base, so a client has at most one update in flight) and stays uncounted
  until a version takes it. One staler than ``max_staleness`` versions is
  refused with the reason.
- **Versions.** Once ``buffer_size`` uncounted updates are stored (or at the
  version's deadline, whatever has arrived), the lease holder folds the oldest
  ``buffer_size`` into the next version. Update *i*, trained from version
  ``b_i`` when the newest is ``v``, has staleness ``s_i = v - b_i`` and enters
  as ``x_v + w(s_i) (y_i - x_{b_i})`` with ``w(s) = (1 + s) ** -staleness_exponent``
  (default 0.5: ``1/sqrt(1 + s)``), weighted by its examples. FedAvg then gives
  ``x_v + sum n_i w(s_i) (y_i - x_{b_i}) / sum n_i``: fresh updates count fully,
  stale ones are shrunk, and with no staleness it is FedAvg itself. FedAvgM and
  FedAdam take that mean's change as their pseudo-gradient.
- **Exactly once.** A version's commit is the same conditional update as a
  round's, and it lists the updates it took (``buffer_last``); they are marked
  counted right after the commit, and the next aggregation repeats that
  marking first (it is idempotent), so an update a crashed aggregator took is
  never taken twice and an update no committed version took is never lost.
"""

from __future__ import annotations

import numpy as np

from flcore.domain.config import JobConfig
from flcore.domain.job import Job
from flcore.engine import pacing
from flcore.engine.closing import close_round
from flcore.errors import Conflict
from flcore.shared import clock, encodings
from flcore.shared import weights as wcodec
from flcore.shared.weights import Weights
from flcore.storage.store import Store
from flcore.storage.stored_updates import StoredUpdates


def staleness_weight(staleness: int, exponent: float) -> float:
    """How much an update trained ``staleness`` versions ago counts: ``(1 + s) ** -exponent``."""
    return (1.0 + staleness) ** -exponent


def newest(job: Job) -> int:
    """The version clients train on now (0: the initial model, stored or the seeded one)."""
    return job.doc.get("model_round") or 0


def base_of(job: Job, client_id: str) -> int | None:
    """The version a client training now started from; None if it holds no slot."""
    slot = job.doc.get("in_flight", {}).get(client_id)
    return int(slot[0]) if slot else None


class FedBuff:
    """No round barrier: slots instead of picks, a version from every full buffer (see above)."""

    needs_current_model = True  # stale updates are applied to the newest model

    def first_picks(self, store: Store, job: Job) -> list[str]:
        return []  # clients take slots as they poll

    def advance(self, store: Store, job: Job, now: float, most: int = 8) -> Job:
        """Give back expired slots, then close versions while full buffers wait (a burst may fill several)."""
        self.expire_slots(store, job, now)
        for _ in range(most):
            if job.state != "running" or not self.ready(store, job, now):
                break
            closed = close_round(store, job, now)
            if closed is None:  # another invocation holds the lease: it will carry on
                break
            job = Job.of(closed)
        return job

    def assign(self, store: Store, job: Job, client_id: str, now: float) -> int | None:
        """The version this client should train on now, taking a slot if it has none; None: wait."""
        held = base_of(job, client_id)
        if held is not None:  # it polls again while training (or after a restart): the same base
            if not store.has_update(job.id, held, client_id):
                return held
            store.release_slot(job.id, client_id)  # delivered, but the submit died before giving the slot back
            return None
        base = newest(job)
        if store.has_update(job.id, base, client_id):
            return None  # it already trained on the newest model
        return base if store.claim_slot(job.id, client_id, base, job.config.concurrency, now) else None

    def task(self, store: Store, job: Job, client_id: str, now: float) -> dict | None:
        return None

    def reply_fields(self, job: Job, base: int | None) -> dict:
        """``round`` is the version to train on, ``version`` the one being built."""
        return {"mode": "async"} if base is None else {"round": base, "version": job.round, "mode": "async"}

    def wait_hint(self, job: Job, now: float) -> float:
        return pacing.poll_interval(job)

    def check_submit(self, store: Store, job: Job, client: dict, rnd: int) -> None:
        """Refuse, with the reason, an update that cannot count: no slot on that version, or too stale
        (whose slot is then given back)."""
        if job.state != "running" or client.get("left"):
            raise Conflict(f"job {job.id} is {job.state} and takes no updates")
        base = base_of(job, client["_id"])
        if base != rnd:
            raise Conflict(
                f"client {client['_id']} holds no training slot on version {rnd} "
                f"(its slot expired after round_timeout_s, or it never took one); poll again"
            )
        staleness = newest(job) - rnd
        if staleness > job.config.max_staleness:
            store.release_slot(job.id, client["_id"])
            raise Conflict(
                f"update is {staleness} versions old (trained on version {rnd}, newest is "
                f"{newest(job)}) and max_staleness is {job.config.max_staleness}; "
                f"poll again to train on the newest model"
            )

    def stored(self, store: Store, job: Job, client_id: str) -> None:
        """Its slot is free for the next client (or for itself, on a newer model)."""
        store.release_slot(job.id, client_id)

    def poll_after_submit(self, job: Job, now: float) -> float:
        return 0.0  # it may take a new slot at once

    def leave(self, store: Store, job: Job, client_id: str, now: float) -> None:
        store.release_slot(job.id, client_id)  # its training slot goes back to the pool

    def waiting_updates(self, store: Store, job: Job) -> int:
        return store.count_uncounted(job.id)

    def status(self, job: Job) -> dict:
        """The effective buffer settings and who trains now (defaults resolved)."""
        return {
            "buffer": {
                "size": job.config.buffer,
                "max_concurrency": job.config.concurrency,
                "training": len(job.picked),
                "in_flight": job.doc.get("in_flight", {}),
            }
        }

    def expire_slots(self, store: Store, job: Job, now: float) -> list[str]:
        """Give back the slots of clients that took one longer than ``round_timeout_s`` ago."""
        cutoff = now - job.config.round_timeout_s
        expired = {c: slot for c, slot in job.doc.get("in_flight", {}).items() if slot[1] < cutoff}
        for client_id, slot in expired.items():  # only that slot: not one the client took since this read
            store.release_slot(job.id, client_id, slot)
        return list(expired)

    def ready(self, store: Store, job: Job, now: float) -> bool:
        """A new version is due: a full buffer, or the version's deadline with anything arrived."""
        waiting = store.count_uncounted(job.id)
        return waiting >= job.config.buffer or (waiting > 0 and now >= job.doc["deadline"])

    def collect(
        self, store: Store, leased: Job, current: Weights | None, now: float
    ) -> tuple[list[dict], StoredUpdates, dict]:
        """The lease holder's buffer: the oldest uncounted updates, as staleness-scaled pseudo-models.

        Returns the update documents, the stream of ``(pseudo-model, examples)``
        the strategy folds (each read and scaled as it is folded, so memory holds
        the newest model, the stale updates' base versions and one update), and
        what the history entry records (staleness, what it took, how
        it closed); nothing at all when the buffer is not full before the deadline
        once the updates a committed version took are set aside.
        """
        self.committed(store, leased)
        docs = store.uncounted_updates(leased.id, leased.config.buffer)
        full = len(docs) >= leased.config.buffer
        if not full and now < leased.doc["deadline"]:
            return [], [], {}
        top = newest(leased)
        exponent = leased.config.staleness_exponent
        bases: dict[int, Weights | None] = {}
        with_history: list[Job] = []  # read once, when a stale update needs its base's owner

        def pseudo_model(doc: dict, trained: Weights) -> Weights:
            trained = encodings.restore(trained, None)  # float16 updates widened (int8 is refused here)
            s = top - int(doc["round"])
            if s == 0 or current is None:  # trained on the newest model: it enters as it is
                return trained
            if doc["round"] not in bases:
                if not with_history:
                    with_history.append(Job.load(store, leased.id, history=True))
                bases[doc["round"]] = _model(store, with_history[0], int(doc["round"]))
            return _scaled(current, trained, bases[doc["round"]], staleness_weight(s, exponent))

        staleness = [top - int(d["round"]) for d in docs]
        info = {
            "staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
            "staleness_max": max(staleness, default=0),
            "taken": [[d["client_id"], int(d["round"])] for d in docs],
            "closed": "buffer full" if full else "deadline",
            "picked": len(leased.picked),
        }
        return docs, StoredUpdates(store, docs, pseudo_model), info

    def missed(self, leased: Job) -> dict[str, dict[str, float]]:
        return {}  # no deadline to miss

    def next_round(self, store: Store, leased: Job, entry: dict, cfg: JobConfig, now: float) -> dict:
        """Who trains now keeps training: only the version moves on, recording what it took."""
        started = clock.now()
        return {
            "buffer_last": entry["taken"],
            "round": leased.round + 1,
            "round_started_at": started,
            "deadline": started + cfg.round_timeout_s,
        }

    def committed(self, store: Store, job: Job) -> None:
        """Mark the newest version's updates counted (again: idempotent), in case its aggregator died first."""
        taken = job.doc.get("buffer_last")
        if taken:
            store.mark_counted(job.id, [(c, b) for c, b in taken], job.doc.get("model_round"))

    def upload_round(self, job: Job) -> int | None:
        return None  # an upload dies with its slot, by age


def _model(store: Store, job: Job, version: int) -> Weights | None:
    """A past version's weights (None for the seeded initial model, which the function never sees);
    ``job`` loaded with its history, where older versions' owners are."""
    owner = job.model_owner(version)
    blob = store.get_model(job.id, version, owner) if owner else None
    return wcodec.decode(blob) if blob is not None else None


def _scaled(current: Weights, trained: Weights, base: Weights | None, weight: float) -> Weights:
    """``current + weight * (trained - base)``: a stale update's change, shrunk, applied to the newest model.

    Without its base (the seeded initial model) the update is mixed in instead:
    ``current + weight * (trained - current)``.
    """
    start = current if base is None else base
    return {
        name: (current[name] + weight * (trained[name] - start[name])).astype(trained[name].dtype) for name in trained
    }
