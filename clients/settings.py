"""A client process's settings, read once from its ``FL_*`` environment (``.env`` filling gaps).

Like the function's :class:`flcore.edge.settings.Settings`: the process's
entry point (``clients.launcher``, ``python -m clients``) builds one
:class:`ClientSettings` and hands it down; nothing below reads the
environment. A setting that cannot be used stops the process, naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from fllocal import env, tables


class ClientSettingsError(ValueError):
    """A client setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class ClientSettings:
    """What a client process is configured with (see .env.template for each variable)."""

    base_urls: Mapping[str, str] = field(default_factory=dict)  # BASE_URL_AWS, BASE_URL_OW
    client_base_port: int = 5001  # FL_CLIENT_BASE_PORT: the first client's Flask port
    state_dir: str = ".fl/state"  # FL_STATE_DIR: identities and models, so restarts resume
    dataset: str = ""  # FL_DATASET: the data set a launcher preloads before forking
    clients_per_process: int = 1  # FL_CLIENTS_PER_PROCESS: simulated identities per process
    fleet_workers: int = 0  # FL_FLEET_WORKERS: a fleet's calls in flight (0: from the cores)
    trainers: int | None = None  # FL_TRAINERS: clients of this machine training at once (0: no limit)
    slow_fraction: float = 0.0  # FL_SLOW_FRACTION: share of clients slowed down
    slowdown: float = 1.0  # FL_SLOWDOWN: how many times slower they train
    slow_seed: int = 0  # FL_SLOW_SEED: which ones
    device_datasets: tuple[str, ...] = ()  # FL_DEVICE_DATASETS: the data sets a device reports (empty: all)
    device_labels: Mapping[str, str] = field(default_factory=dict)  # FL_DEVICE_LABELS: key=value,...
    fail_jobs: tuple[tuple[str, str], ...] = ()  # FL_FAIL_JOBS: client@job pairs whose training fails (demos)
    enrol_token: str = ""  # FL_ENROL_TOKEN: what registering a device needs, if the function asks
    job_id: str = ""  # FL_JOB_ID: the one job to take part in
    job_id_file: str = ""  # FL_JOB_ID_FILE: a file that names it, once it exists
    lambda_endpoint: str = ""  # FL_LAMBDA_ENDPOINT: a local Lambda API for lambda:// URLs
    data_config: str = ""  # FL_DATA_CONFIG: the file declaring this device's own data sets (fllocal/tables.py)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """The settings from ``environ`` (default: the process's environment after ``.env``)."""
        if environ is None:
            env.load()
            environ = os.environ

        def text(name: str, default: str = "") -> str:
            return environ.get(name, "").strip() or default

        def number(name: str, kind: type, default):
            try:
                return env.number(name, text(name), kind, default)
            except ValueError as exc:
                raise ClientSettingsError(str(exc)) from None

        trainers = text("FL_TRAINERS")
        if trainers and not trainers.isdigit():
            raise ClientSettingsError(f"FL_TRAINERS={trainers!r} must be a whole number (0: no limit)")
        settings = cls(
            base_urls={t: text(f"BASE_URL_{t.upper()}") for t in ("aws", "ow") if text(f"BASE_URL_{t.upper()}")},
            client_base_port=number("FL_CLIENT_BASE_PORT", int, 5001),
            state_dir=text("FL_STATE_DIR", ".fl/state"),
            dataset=text("FL_DATASET").lower(),
            clients_per_process=number("FL_CLIENTS_PER_PROCESS", int, 1),
            fleet_workers=number("FL_FLEET_WORKERS", int, 0),
            trainers=int(trainers) if trainers else None,
            slow_fraction=number("FL_SLOW_FRACTION", float, 0.0),
            slowdown=number("FL_SLOWDOWN", float, 1.0),
            slow_seed=number("FL_SLOW_SEED", int, 0),
            device_datasets=tuple(d.strip().lower() for d in text("FL_DEVICE_DATASETS").split(",") if d.strip()),
            device_labels=dict(
                (k.strip(), v.strip())
                for k, _, v in (pair.partition("=") for pair in text("FL_DEVICE_LABELS").split(",") if "=" in pair)
            ),
            fail_jobs=tuple(
                (who, what)
                for who, _, what in (e.strip().partition("@") for e in text("FL_FAIL_JOBS").split(",") if e.strip())
            ),
            enrol_token=text("FL_ENROL_TOKEN"),
            job_id=text("FL_JOB_ID"),
            job_id_file=text("FL_JOB_ID_FILE"),
            lambda_endpoint=text("FL_LAMBDA_ENDPOINT"),
            data_config=text("FL_DATA_CONFIG"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that cannot work together, naming them."""
        if self.clients_per_process < 1:
            raise ClientSettingsError(
                f"--per-process / FL_CLIENTS_PER_PROCESS must be at least 1, not {self.clients_per_process}"
            )
        if self.fleet_workers < 0:
            raise ClientSettingsError(f"FL_FLEET_WORKERS must be at least 1 (or unset), not {self.fleet_workers}")
        if not 0.0 <= self.slow_fraction <= 1.0:
            raise ClientSettingsError(f"FL_SLOW_FRACTION must be between 0 and 1, not {self.slow_fraction}")
        if not self.slowdown >= 1.0:
            raise ClientSettingsError(f"FL_SLOWDOWN must be at least 1 (how many times slower), not {self.slowdown}")
        if self.data_config:
            self.declared()  # a data-set file that cannot be used stops the client now, saying why

    def declared(self) -> dict[str, tables.Source]:
        """The data sets ``FL_DATA_CONFIG`` declares (none when unset)."""
        if not self.data_config:
            return {}
        try:
            return tables.load_config(self.data_config)
        except tables.DataConfigError as exc:
            raise ClientSettingsError(str(exc)) from None

    def base_url(self, transport: str) -> str:
        """The function's URL for a transport (``aws``, ``ow``); empty when unset."""
        return self.base_urls.get(transport, "")
