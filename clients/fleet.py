"""Many clients in one process: the simulation mode, for fleets larger than a machine has processes for.

Each identity is still a whole ``FederatedClient``: its own device, token,
shard, state file and call log, and its own calls to the function. What they
share is the process's torch, one connection pool to the function, and one
APScheduler job that hands the identities whose next step is due to a few
worker threads. Training still waits for one of the machine's trainer slots,
so no more identities compute at once than the machine has cores. A simulated
identity has no HTTP endpoint of its own (no ``/predict``, no ``/status``): its
log lines, state file and call log say what it did.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler

from clients.federated_client import TICK_S, FederatedClient

log = logging.getLogger("clients")


class Fleet:
    """Runs ``clients`` in this process; at most ``workers`` protocol steps at once (calls or training)."""

    def __init__(self, clients: list[FederatedClient], workers: int):
        self.clients = clients
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fleet")
        self._busy: set[int] = set()  # indexes of clients whose step is queued or running
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )

    def _dispatch(self) -> None:
        """Every TICK_S: queue the step of each client that is due and not already queued."""
        with self._lock:
            due = [i for i, c in enumerate(self.clients) if i not in self._busy and c.due()]
            self._busy.update(due)
        for i in due:
            self._pool.submit(self._step, i)

    def _step(self, i: int) -> None:
        try:
            self.clients[i].run_tick()  # never raises: a failure is logged and retried with backoff
        finally:
            with self._lock:
                self._busy.discard(i)

    def start(self) -> None:
        self._scheduler.add_job(self._dispatch, "interval", seconds=TICK_S, id="fleet", next_run_time=datetime.now())
        self._scheduler.start()

    def stop(self) -> None:
        """Stop dispatching, cancel queued steps, and have each client write its call log.

        One client that cannot write its log must not cost the others theirs: each is written on its own.
        """
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self.clients:
            try:
                client.stop()
            except Exception:
                log.exception("%s: could not write its call log", client.name)
