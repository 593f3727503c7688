"""The compute floor of the default job: its training with no FL system at all.

Written as a user of any FL framework writes local training: a plain PyTorch
loop (SGD with momentum over shuffled mini-batches, the usual memory layout,
no augmentation), the default job's model, initialisation, data shares, picks,
epochs, batch and learning rate, FedAvg in between, and as many worker
processes as cores with one torch thread each. What it takes is what the
training alone costs on this machine; ``make bench-default`` divides the
default ``make run``'s wall time by it, measured in the same sitting.
``python bench/floor.py`` prints it alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.nn.functional as F

from flcli import report
from flcore.domain.config import JobConfig, parse_config
from flcore.engine.picking import pick_clients
from flcore.shared.aggregation import weighted_mean
from flcore.shared.partition import partition_indices, train_eval_split
from fllocal import data, models


def _train_client(args: tuple[dict, int, dict | None, int]) -> tuple[dict, int]:
    """One client's local training, the plain way; its weights and example count."""
    settings, index, weights, rnd = args
    torch.set_num_threads(1)
    cfg = parse_config(settings)
    spec = cfg.partition_spec(index)
    images, labels = data.load_raw(cfg.dataset)
    train_idx, _ = train_eval_split(partition_indices(labels, spec), spec["train_fraction"])
    x, y = data.to_tensors(cfg.dataset, images[train_idx], labels[train_idx])
    model = models.build(cfg.model_def, seed=cfg.seed)
    if weights is not None:
        models.set_weights(model, weights)
    model.train()
    lr = cfg.lr * cfg.lr_decay ** (rnd - 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(index * 1009 + rnd)
    for _ in range(cfg.local_epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return models.get_weights(model), len(x)


def test_accuracy(cfg: JobConfig, weights: dict) -> float:
    """The final model's accuracy on the data set's test split, computed as ``make run`` computes
    its own (the same figure for every contender)."""
    return round(report.evaluate_on_test_set(cfg.dataset, weights, cfg.model_def)["accuracy"], 4)


def run(settings: dict | None = None) -> dict:
    """Train the default job (or ``settings``) without FL; seconds, per round, and the final test accuracy."""
    settings = settings or {}
    cfg: JobConfig = parse_config(settings)
    data.prepare(cfg.dataset)
    weights = None
    started = time.perf_counter()
    rounds = []
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        for rnd in range(1, cfg.rounds + 1):
            t0 = time.perf_counter()
            picked = pick_clients([str(i) for i in range(cfg.num_clients)], cfg, rnd)
            updates = list(pool.map(_train_client, [(settings, int(i), weights, rnd) for i in picked]))
            weights = weighted_mean(updates)
            rounds.append(round(time.perf_counter() - t0, 2))
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "round_seconds": rounds,
        "test_accuracy": test_accuracy(cfg, weights),
        "processes": os.cpu_count(),
        "settings": cfg.to_dict(),
    }


if __name__ == "__main__":
    print(json.dumps({k: v for k, v in run().items() if k != "settings"}, indent=2))
    sys.exit(0)
