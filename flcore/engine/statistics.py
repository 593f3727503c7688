"""The statistics step of a tabular job: before round 1, the starting devices' sums become its encoding.

Runs where the job would start: once enough devices have joined *and* sent
their statistics, the function combines them (:func:`flcore.domain.data.combine`)
and stores the encoding with the job in one conditional write, so concurrent
invocations agree on one encoding. A job whose devices' data cannot make one
(a classification target with one class) stops, saying why.
"""

from __future__ import annotations

import logging

from flcore.domain.data import combine
from flcore.domain.job import Job
from flcore.storage.store import Store

log = logging.getLogger(__name__)


def needs_stats(job: Job) -> bool:
    """Whether the job still waits for its devices' statistics before it can start."""
    return job.config.data is not None and "encoding" not in job.doc


def fix_encoding(store: Store, job: Job, now: float) -> dict | None:
    """Make and store the job's encoding once every starting device sent its statistics.

    Returns the job document after a write (encoding set, or the job stopped), or None when it
    still waits, or another invocation wrote first.
    """
    stats = store.client_stats(job.id)
    if len(stats) < job.config.clients_to_start or "schema" not in job.doc:
        return None
    try:
        encoding = combine(job.config.task, job.doc["schema"], stats)
    except ValueError as exc:
        log.warning("job %s cannot start: %s", job.id, exc)
        return store.stop_job(job.id, f"no encoding: {exc}"[:300], now)
    return store.set_encoding(job.id, encoding)
