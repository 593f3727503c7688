"""This machine as a device: what it reports about itself, and its lasting identity.

A device registers once; its ``device_id`` and token live in a state file beside
the job identity, so a restarted client is the same device with the same
statistics. Settings (all optional):

- ``FL_DEVICE_LABELS``: ``key=value,key=value`` labels that job criteria can select on;
- ``FL_DEVICE_DATASETS``: comma-separated built-in data sets to offer (default: every one found locally);
- ``FL_DATA_CONFIG``: a file declaring the device's own data sets (:mod:`fllocal.tables`), reported
  as rows, columns and their kinds, never a value;
- ``FL_ENROL_TOKEN``: the token the function asks for when it restricts registering;
- ``FL_JOB_ID``: join this job only, instead of the best offer; ``FL_JOB_ID_FILE``: the same, with the
  id read from a file once it is written (clients started before their job is created);
- ``FL_FAIL_JOBS``: ``<client name>@<job name or tag>,...``: that client's training fails in
  those jobs (to see a device leave a job and move on).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
import sys
from pathlib import Path

from clients import files
from clients.settings import ClientSettings
from clients.transport import Transport
from fllocal import data, tables

log = logging.getLogger(__name__)


def info(settings: ClientSettings) -> dict:
    """What this machine says about itself when it registers."""
    datasets: dict = data.available()
    if settings.device_datasets:
        datasets = {k: v for k, v in datasets.items() if k in settings.device_datasets}
    datasets.update(declared_info(settings))
    labels = dict(settings.device_labels)
    return {
        "platform": f"{sys.platform}/{platform.machine() or 'unknown'}",
        "cpus": os.cpu_count() or 1,
        "memory_mb": _memory_mb(),
        "datasets": datasets,
        "labels": labels,
    }


def declared_info(settings: ClientSettings) -> dict[str, dict]:
    """What the device says about each data set it declares: rows, column kinds, fingerprint."""
    return {name: tables.describe(source) for name, source in settings.declared().items()}


def _memory_mb() -> int:
    try:
        return max(1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError, AttributeError):
        return 1


def fails_in(name: str, job: dict, settings: ClientSettings) -> bool:
    """Whether ``FL_FAIL_JOBS`` says this client's training fails in this job."""
    marks = {job.get("job_id"), job.get("name"), *job.get("tags", [])} - {None}
    return any(who == name and what in marks for who, what in settings.fail_jobs)


class Device:
    """The registered identity, loaded from (and saved to) ``path``."""

    def __init__(self, transport: Transport, path: Path, settings: ClientSettings):
        self.transport = transport
        self.path = path
        self.settings = settings
        try:
            self.identity: dict | None = json.loads(path.read_text())
        except (OSError, ValueError):
            self.identity = None
        self._reported: dict | None = None  # declared data sets' (rows, fingerprint) as last reported

    @property
    def token(self) -> str:
        if self.identity is None:
            # the same key for every try until one answer arrives, kept across restarts: a retry
            # whose first answer was lost gets this device back instead of registering a second one
            body = {"info": info(self.settings), "idempotency_key": self._key()}
            log.info("registering as a device (key %s...)", body["idempotency_key"][:6])
            self.identity = self.transport.call("register", body, token=self.settings.enrol_token or None)
            self._reported = {
                n: (d["rows"], d["fingerprint"]) for n, d in body["info"]["datasets"].items() if isinstance(d, dict)
            }
            files.write_atomic(self.path, json.dumps(self.identity).encode())
            log.info("registered as device %s", self.identity["device_id"])
        return self.identity["token"]

    def report_if_changed(self) -> list[str]:
        """Tell the function when a declared data set changed (rows or schema), so jobs that retrain on
        change can; the names of those that changed since the last report (nothing is sent otherwise)."""
        if self.identity is None or not self.settings.data_config:
            return []
        now = {name: (d["rows"], d["fingerprint"]) for name, d in declared_info(self.settings).items()}
        if self._reported is None:  # the first look after a start: the baseline
            self._reported = now
            return []
        changed = sorted(name for name in now if self._reported.get(name) != now[name])
        if changed:
            self.transport.call("update_device", {"info": info(self.settings)}, token=self.token)
            log.info("data set(s) %s changed: reported", ", ".join(changed))
            self._reported = now
        return changed

    def _key(self) -> str:
        path = self.path.with_suffix(".key")
        try:
            return path.read_text().strip()
        except OSError:
            key = secrets.token_urlsafe(24)
            files.write_atomic(path, key.encode())
            return key

    def forget(self) -> None:
        """Drop an identity the function no longer knows (a new database); register again next time,
        with a new key."""
        self.identity = None
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".key").unlink(missing_ok=True)
