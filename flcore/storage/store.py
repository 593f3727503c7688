"""MongoDB persistence: one store over one repository per collection; every state change is one
atomic operation.

The function is stateless and may run as many instances at once, so nothing
here reads a value and writes it back in two steps where a race could matter:
uniqueness comes from unique indexes, transitions from conditional
``find_one_and_update`` calls that name the state they expect.
"""

from __future__ import annotations

import threading
from typing import Protocol

from pymongo import MongoClient
from pymongo.database import Database

from flcore.storage.blobs import Blobs
from flcore.storage.clients import ClientRepository
from flcore.storage.devices import DeviceRepository
from flcore.storage.jobs import JobRepository
from flcore.storage.logs import LogRepository
from flcore.storage.models import ModelRepository
from flcore.storage.operators import OperatorRepository
from flcore.storage.secure import SecureRepository
from flcore.storage.updates import UpdateRepository

_clients: dict[str, MongoClient] = {}
_lock = threading.Lock()


class DatabaseSettings(Protocol):
    """What the store needs of the function's settings (:class:`flcore.edge.settings.Settings`)."""

    mongodb_url: str
    db_name: str
    db_timeout_ms: int


def connect(settings: DatabaseSettings) -> Store:
    """A store on a pooled client, reused across warm invocations of the function."""
    key = f"{settings.mongodb_url}#{settings.db_timeout_ms}"
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = MongoClient(
                settings.mongodb_url,
                serverSelectionTimeoutMS=settings.db_timeout_ms,
                retryWrites=True,
                appname="serverless-fl",
            )
            _clients[key] = client
    return Store(client[settings.db_name])


class Store(
    JobRepository,
    ClientRepository,
    DeviceRepository,
    UpdateRepository,
    ModelRepository,
    SecureRepository,
    OperatorRepository,
    LogRepository,
):
    """The database as the function uses it: ``jobs`` (:mod:`flcore.storage.jobs`), ``clients``,
    ``devices``, ``updates``, ``models``, ``secure``, ``operators``, ``audit`` and ``logs``, each collection's
    reads and writes in its own module, and GridFS ``blobs``."""

    _indexed: set[str] = set()

    def __init__(self, db: Database):
        self.db = db
        self.jobs = db["jobs"]
        self.clients = db["clients"]
        self.updates = db["updates"]
        self.models = db["models"]
        self.devices = db["devices"]
        self.secure = db["secure"]
        self.operators = db["operators"]
        self.audit = db["audit"]
        self.logs = db["logs"]
        self.blobs = Blobs(db)
        self.ensure_indexes()

    def ensure_indexes(self) -> None:
        """Create the indexes the protocol relies on; once per process and database."""
        key = f"{id(self.db.client)}/{self.db.name}"
        if key in Store._indexed:
            return
        self._job_indexes()
        self._client_indexes()
        self._device_indexes()
        self._update_indexes()
        self._model_indexes()
        self._secure_indexes()
        self._operator_indexes()
        self._log_indexes()
        self.blobs.ensure_indexes()
        Store._indexed.add(key)
