"""Real parts for the tests: a SecantusDB server over TCP and the handler under serverless-offline.

The tests come in tiers, one folder each, marked by the folder they are in: ``unit`` (no
database, no other process), ``core`` (the core in this process against a real database),
``stack`` (serverless-offline, client processes, the CLI) and ``browser`` (the dashboard in
headless chromium). ``make test`` runs them all; ``pytest -m unit`` runs one tier.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from flcli.devstack import LocalStack, free_port_block
from flcore.edge.settings import Settings
from flcore.shared import clock as core_clock
from flcore.storage import store as store_mod
from helpers import ADMIN

TIERS = ("unit", "core", "stack", "browser")


def pytest_collection_modifyitems(items):
    """Mark each test with its tier: the name of the folder it is in."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    s = LocalStack(tmp_path_factory.mktemp("stack-logs"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def mongodb_url(stack) -> str:
    return stack.start_database(test_commands=True)


@pytest.fixture
def db_name(mongodb_url, monkeypatch) -> Iterator[str]:
    """A fresh database per test, used by in-process calls to the core."""
    name = "t_" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("MONGODB_URL", mongodb_url)
    monkeypatch.setenv("FL_DB_NAME", name)
    monkeypatch.delenv("FL_ADMIN_TOKEN", raising=False)
    yield name
    with MongoClient(mongodb_url) as client:  # the session's one database server holds every test's data
        client.drop_database(name)


@pytest.fixture
def store(db_name):
    return store_mod.connect(Settings.from_env())


@pytest.fixture
def raw_db(mongodb_url, db_name):
    with MongoClient(mongodb_url) as client:
        yield client[db_name]


class FakeClock:
    """The core's clock, moved by the test: ``advance(s)`` instead of ``time.sleep(s)``."""

    def __init__(self, start: float):
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The core's clock for in-process calls, starting at the real time and moving only when told."""
    fake = FakeClock(time.time())
    monkeypatch.setattr(core_clock, "now", fake.now)
    return fake


@pytest.fixture(scope="session")
def function_url(stack, mongodb_url) -> str:
    """The real handler behind serverless-offline (the AWS path), on its own database."""
    return stack.start_function(
        mongodb_url, extra_env={"FL_DB_NAME": "e2e", "FL_ADMIN_TOKEN": ADMIN}, host="serverless-offline"
    )


@pytest.fixture
def fleet_env(tmp_path, function_url):
    """Environment for scripts/start_clients_aws.sh: n free ports, files under tmp_path."""

    def make(n: int) -> tuple[dict, int]:
        base_port = free_port_block(n)
        return {
            **os.environ,
            "BASE_URL_AWS": function_url,
            "FL_CLIENT_BASE_PORT": str(base_port),
            "FL_STATE_DIR": str(tmp_path / "state"),
            "FL_PRELOAD": "mnist",
            "FL_RUN_DIR": str(tmp_path / "run"),
            "FL_LOG_DIR": str(tmp_path / "logs"),
        }, base_port

    return make


os.environ.setdefault("FL_DATA_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "data"))
