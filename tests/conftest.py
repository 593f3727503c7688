"""Real parts for the tests: a SecantusDB server over TCP and the handler under serverless-offline."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from pymongo import MongoClient

from flcli.devstack import LocalStack, free_port_block
from flcore.storage import store as store_mod
from flcore.edge.settings import Settings
from flcore.shared import modeldef

ADMIN = "test-admin-token"


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    s = LocalStack(tmp_path_factory.mktemp("stack-logs"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def mongodb_url(stack) -> str:
    return stack.start_database(test_commands=True)


@pytest.fixture
def db_name(mongodb_url, monkeypatch) -> str:
    """A fresh database per test, used by in-process calls to the core."""
    name = "t_" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("MONGODB_URL", mongodb_url)
    monkeypatch.setenv("FL_DB_NAME", name)
    monkeypatch.delenv("FL_ADMIN_TOKEN", raising=False)
    return name


@pytest.fixture
def store(db_name):
    return store_mod.connect(Settings.from_env())


@pytest.fixture
def raw_db(mongodb_url, db_name):
    with MongoClient(mongodb_url) as client:
        yield client[db_name]


@pytest.fixture(scope="session")
def function_url(stack, mongodb_url) -> str:
    """The real handler behind serverless-offline, on its own database."""
    return stack.start_function(mongodb_url, extra_env={"FL_DB_NAME": "e2e", "FL_ADMIN_TOKEN": ADMIN})


@pytest.fixture
def fleet_env(tmp_path, function_url):
    """Environment for scripts/start_clients_aws.sh: n free ports, files under tmp_path."""

    def make(n: int) -> tuple[dict, int]:
        base_port = free_port_block(n)
        return {**os.environ, "BASE_URL_AWS": function_url, "FL_CLIENT_BASE_PORT": str(base_port),
                "FL_STATE_DIR": str(tmp_path / "state"), "FL_PRELOAD": "mnist",
                "FL_RUN_DIR": str(tmp_path / "run"), "FL_LOG_DIR": str(tmp_path / "logs")}, base_port

    return make


def mdef(model: str = "cnn_mnist", dataset: str | None = None) -> modeldef.ModelDef:
    """A preset checked for its usual data set (cnn_cifar10: CIFAR-10, the rest: MNIST)."""
    return modeldef.resolve(model, dataset or ("cifar10" if model == "cnn_cifar10" else "mnist"))


def tensor_spec(model: str = "cnn_mnist", dataset: str | None = None) -> dict[str, tuple[int, ...]]:
    return mdef(model, dataset).spec


def random_weights(model: str = "cnn_mnist", seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(shape) * scale).astype(np.float32) for k, shape in tensor_spec(model).items()}


def snapshot(db) -> dict:
    """Every document of every collection, to prove a request changed nothing."""
    return {name: sorted((repr(sorted(d.items())) for d in db[name].find()), key=str)
            for name in sorted(db.list_collection_names())}


os.environ.setdefault("FL_DATA_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "data"))
