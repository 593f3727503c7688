"""SCAFFOLD (Karimireddy et al., 2020): control variates that correct client drift.

With label skew each client's local optimum pulls away from the global one, and
after ten local epochs the average of those pulls is a poor model (FedAvg ends
near 91 % on MNIST's two-shards split, SCAFFOLD near 96 %). Every client keeps a
control variate c_i, an estimate of its own gradient's bias; the server keeps c,
their average. Clients follow the gradient plus (c - c_i), i.e. roughly the global
direction, and send the change of c_i with their weights as ``control/<tensor>``.
"""

from __future__ import annotations

import numpy as np

from flcore.shared.aggregation import Accumulator
from flcore.shared.strategies import Strategy, register

PREFIX = "control/"
_STATE = "c/"


@register
class Scaffold(Strategy):
    """Weights: weighted mean of the clients' models. Control: c <- c + sum(delta c_i) / N,
    N the job's number of clients (the paper's |S|/N times the mean change)."""

    name = "scaffold"
    update_prefixes = (PREFIX,)
    shares_state = True
    asynchronous = False
    why_not_async = "its control variates are corrected once per synchronous round"

    def client_config(self) -> dict:
        return {"control_variates": True}

    def client_tensors(self, state):
        """The server's control variate c, which every picked client trains with."""
        return {k[len(_STATE) :]: v for k, v in state.items() if k.startswith(_STATE)}

    def aggregate(self, current, updates, state, num_clients):
        models, changes = Accumulator(), Accumulator()  # one pass: each update is read once
        for weights, n in updates:
            models.add({k: v for k, v in weights.items() if not k.startswith(PREFIX)}, float(n))
            changes.add({k[len(PREFIX) :]: v for k, v in weights.items() if k.startswith(PREFIX)})
        if models.count == 0:
            raise ValueError("aggregation needs at least one update")
        new = models.result(models.weight)
        mean_change = changes.result(num_clients)
        control = {
            _STATE + name: (state.get(_STATE + name, 0.0) + mean_change[name]).astype(np.float32) for name in new
        }
        return new, control
