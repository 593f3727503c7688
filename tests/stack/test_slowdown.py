"""Uneven clients on one machine: which are slow, exactly and reproducibly, and how much slower they train."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.federated_client import FederatedClient
from clients.settings import ClientSettings, ClientSettingsError
from clients.slowdown import factors, slow_indices
from clients.transport import make_transport
from flcli.operator import Operator
from helpers import ADMIN


def test_the_slow_clients_are_an_exact_reproducible_fraction():
    assert len(slow_indices(20, 0.25, seed=0)) == 5
    assert slow_indices(20, 0.25, seed=0) == slow_indices(20, 0.25, seed=0)
    assert slow_indices(20, 0.25, seed=0) != slow_indices(20, 0.25, seed=1)
    assert slow_indices(20, 0.0, seed=0) == set() and slow_indices(3, 1.0, seed=5) == {0, 1, 2}
    got = factors(4, ClientSettings.from_env({"FL_SLOW_FRACTION": "0.5", "FL_SLOWDOWN": "3"}))
    assert sorted(got) == [1.0, 1.0, 3.0, 3.0]


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("FL_SLOW_FRACTION", "1.5", "between 0 and 1"),
        ("FL_SLOWDOWN", "0.5", "at least 1"),
        ("FL_SLOWDOWN", "fast", "FL_SLOWDOWN='fast' is not a number"),
        ("FL_SLOW_SEED", "1.5", "FL_SLOW_SEED='1.5' is not a whole number"),
    ],
)
def test_bad_settings_are_refused_with_their_name(name, value, message):
    with pytest.raises(ClientSettingsError, match=message):
        ClientSettings.from_env({name: value})


def test_a_slow_client_takes_its_factor_times_longer(function_url, tmp_path, monkeypatch):
    op = Operator(function_url, ADMIN)
    seconds = {}
    for factor in (1.0, 1.0, 3.0):  # the first loads the data set into this process: a warm-up
        job_id = op.start_job(
            {"num_clients": 1, "clients_per_round": 1, "rounds": 1, "local_epochs": 4, "max_train_examples": 600}
        )["job_id"]
        monkeypatch.setenv("FL_JOB_ID", job_id)
        client = FederatedClient(make_transport(function_url), Path(tmp_path / f"c{job_id}.json"), "c", slowdown=factor)
        for _ in range(10):
            client.tick()
            if op.status(job_id)["state"] == "done":
                break
        seconds[factor] = op.status(job_id)["history"][0]["metrics"]["train_seconds"]
    assert seconds[3.0] > 2.0 * seconds[1.0], seconds  # the training part triples; fetching the model does not
