"""Run one client: the APScheduler loop in the background, the Flask app in front."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import torch
from werkzeug.serving import make_server

from clients.app import create_app
from clients.federated_client import FederatedClient
from clients.fleet import Fleet
from clients.settings import ClientSettings
from clients.slots import TrainerSlots
from clients.transport import make_transport


def run_client(
    name: str,
    host: str,
    port: int,
    base_url: str,
    state_dir: Path,
    settings: ClientSettings,
    slowdown: float = 1.0,
    slots: TrainerSlots | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; the identity in ``state_dir`` survives restarts."""
    torch.set_num_threads(1)  # many clients share few cores: one thread each
    transport = make_transport(base_url, lambda_endpoint=settings.lambda_endpoint)
    client = FederatedClient(
        transport, state_dir / f"{name}.json", name, slowdown=slowdown, slots=slots, settings=settings
    )
    server = make_server(host, port, create_app(client), threaded=True)

    def stop(signum, frame):
        client.stop()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client.start()
    logging.getLogger("clients").info("%s listening on http://%s:%d, function at %s", name, host, port, base_url)
    try:
        server.serve_forever()
    finally:
        client.stop()
        server.server_close()


def run_fleet(
    names: list[str],
    base_url: str,
    state_dir: Path,
    workers: int,
    settings: ClientSettings,
    slots: TrainerSlots | None = None,
) -> None:
    """Simulation mode: the identities ``names`` in this process (clients/fleet.py), until SIGTERM/SIGINT."""
    torch.set_num_threads(1)
    # one connection pool for the process's identities
    transport = make_transport(base_url, lambda_endpoint=settings.lambda_endpoint)
    fleet = Fleet(
        [
            FederatedClient(
                transport, state_dir / f"{name}.json", name, slots=slots, serves_predictions=False, settings=settings
            )
            for name in names
        ],
        workers,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopped.set())
    fleet.start()
    logging.getLogger("clients").info(
        "%d clients (%s..%s) in one process, %d steps at once, function at %s",
        len(names),
        names[0],
        names[-1],
        workers,
        base_url,
    )
    while not stopped.wait(1.0):
        pass
    fleet.stop()


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # "skipped: maximum number of running instances" is expected while a round trains
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
