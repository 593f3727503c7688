"""The right to aggregate one round: short, renewed while its holder works.

A lease that lasted as long as the slowest aggregation would leave a crashed
aggregator's round stuck for that long. Instead the lease is short (``LEASE_S``)
and a heartbeat thread extends it every ``RENEW_S`` while the holder is alive,
so a dead holder's round is taken over within about ``LEASE_S``. Two holders
can still overlap (one stalled past its expiry), which is why every write the
holder makes is fenced by its owner id: the model is stored under the owner,
and the job moves on only by a conditional update naming the owner.
"""

from __future__ import annotations

import logging
import secrets
import threading

from flcore.shared import clock
from flcore.storage.store import Store

log = logging.getLogger(__name__)

LEASE_S = 15.0
RENEW_S = 5.0


class Lease:
    """Held from :meth:`acquire` until :meth:`stop`; renews itself in between.

    ``lost`` turns true once a renewal finds the lease taken over (or the round
    moved on): the holder then stops before writing anything more.
    """

    def __init__(self, store: Store, job_id: str, rnd: int):
        self.store, self.job_id, self.round = store, job_id, rnd
        self.owner = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def acquire(self, now: float) -> dict | None:
        """Take the round's lease if it is free or expired; the job document, or None."""
        doc = self.store.acquire_lease(self.job_id, self.round, self.owner, now, now + LEASE_S)
        if doc is not None:
            self._thread = threading.Thread(target=self._renew, name=f"lease-{self.job_id}", daemon=True)
            self._thread.start()
        return doc

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                if not self.store.renew_lease(self.job_id, self.round, self.owner, clock.now() + LEASE_S):
                    self.lost = True  # taken over, or the round moved on: our commit will not match
                    return
            except Exception as exc:  # the database hiccuped: try again next beat
                log.warning("could not renew the lease of job %s round %s: %s", self.job_id, self.round, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def release(self) -> None:
        """Give the round back at once, so a retry need not wait for the lease to expire.

        If the database is down this fails too, and the lease simply expires.
        """
        self.stop()
        try:
            self.store.release_lease(self.job_id, self.round, self.owner)
        except Exception:
            log.warning("could not release the lease of job %s round %s", self.job_id, self.round)
