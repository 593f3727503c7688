"""The default job's work in Flower's simulation, for ``make bench-default`` to set beside ours.

Same model, initialisation, data shares, picks, epochs, batch and learning rate as the
default job, and the very training loop of ``bench/floor.py`` (index batching, no
augmentation), run by Flower 1.x's Ray simulation with one CPU per client actor, as
many actors as cores, FedAvg weighted by examples. Nothing is evaluated between
rounds (the floor does not either); the final model is evaluated on the test set
after the clock stops.

It runs in the benchmark's own environment (``bench/.flower-venv``, made by
``bench/default_run.py``), never the product's: ``flwr[simulation]`` is not a
dependency of the product. Prints one JSON object: seconds, per-round seconds, test
accuracy and the peak PSS of the process tree (Ray's processes included).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import flwr as fl  # noqa: E402  (the benchmark's own environment)
from floor import _train_client, test_accuracy  # noqa: E402
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402

from flcli.memory import PeakMemory  # noqa: E402
from flcore.domain.config import parse_config  # noqa: E402
from flcore.engine.picking import pick_clients  # noqa: E402
from fllocal import data, models  # noqa: E402


class FloorClient(fl.client.NumPyClient):
    """One partition, trained by the floor's own loop."""

    def __init__(self, settings: dict, index: int, names: list[str]):
        self.settings, self.index, self.names = settings, index, names

    def fit(self, parameters, config):
        weights = dict(zip(self.names, parameters))
        trained, examples = _train_client((self.settings, self.index, weights, int(config["round"])))
        return [trained[n] for n in self.names], examples, {}


class SamePicks(FedAvg):
    """FedAvg that trains the clients the default job picks in each round, and times the rounds."""

    def __init__(self, settings: dict, **kwargs):
        super().__init__(**kwargs)
        self.cfg = parse_config(settings)
        self.started: dict[int, float] = {}
        self.round_seconds: list[float] = []
        self.final = None

    def configure_fit(self, server_round, parameters, client_manager):
        client_manager.wait_for(self.cfg.num_clients)
        picked = {int(i) for i in pick_clients([str(i) for i in range(self.cfg.num_clients)], self.cfg, server_round)}
        proxies = [p for p in client_manager.all().values() if int(p.partition_id) in picked]
        self.started[server_round] = time.perf_counter()
        return [(p, FitIns(parameters, {"round": server_round})) for p in proxies]

    def aggregate_fit(self, server_round, results, failures):
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} client(s) failed: {failures[:1]}")
        aggregated = super().aggregate_fit(server_round, results, failures)
        self.round_seconds.append(round(time.perf_counter() - self.started[server_round], 2))
        self.final = aggregated[0]
        return aggregated


def run(settings: dict | None = None) -> dict:
    settings = settings or {}
    cfg = parse_config(settings)
    data.prepare(cfg.dataset)
    initial = models.get_weights(models.build(cfg.model_def, seed=cfg.seed))
    names = list(initial)
    strategy = SamePicks(
        settings,
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=1,
        min_available_clients=cfg.num_clients,
        initial_parameters=ndarrays_to_parameters([initial[n] for n in names]),
    )
    cores = os.cpu_count() or 1
    with PeakMemory(lambda: [os.getpid()]) as mem:
        started = time.perf_counter()
        fl.simulation.start_simulation(
            client_fn=lambda ctx: FloorClient(settings, int(ctx.node_config["partition-id"]), names).to_client(),
            num_clients=cfg.num_clients,
            config=fl.server.ServerConfig(num_rounds=cfg.rounds),
            strategy=strategy,
            client_resources={"num_cpus": 1},
            ray_init_args={"num_cpus": cores, "include_dashboard": False, "log_to_driver": False},
        )
        seconds = time.perf_counter() - started
        mem.sample(force=True)
    final = dict(zip(names, parameters_to_ndarrays(strategy.final)))
    return {
        "seconds": round(seconds, 1),
        "round_seconds": strategy.round_seconds,
        "test_accuracy": test_accuracy(cfg, final),
        "peak_memory_mb": round(mem.peak_pss_mb, 1),
        "flwr": fl.__version__,
        "actors": cores,
    }


if __name__ == "__main__":  # one torch thread per actor: bench/default_run.py sets OMP_NUM_THREADS=1
    print(json.dumps(run(json.loads(sys.argv[1]) if len(sys.argv) > 1 else None)))
