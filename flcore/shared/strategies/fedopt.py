"""Server-side optimisers (Reddi et al., 2021; Hsu et al., 2019): the average client
change is treated as a pseudo-gradient and applied with momentum or Adam."""

from __future__ import annotations

import numpy as np

from flcore.shared.aggregation import weighted_mean
from flcore.shared.strategies import Strategy, register, setting


def _delta(current, updates):
    avg = weighted_mean(updates)
    return avg, {k: avg[k].astype(np.float64) - current[k] for k in avg}


@register
class FedAvgM(Strategy):
    """v <- beta·v + delta;  w <- w + server_lr·v."""

    name = "fedavgm"
    needs_current = True
    server_lr: float = setting(1.0, 0.0, 100.0, "step size of the server update")
    server_momentum: float = setting(0.9, 0.0, 0.999, "momentum of the server update")

    def aggregate(self, current, updates, state, num_clients):
        if current is None:  # nothing to step from yet: plain average
            return weighted_mean(updates), {}
        lr, beta = self.server_lr, self.server_momentum
        _, delta = _delta(current, updates)
        velocity = {k: beta * state.get(f"v/{k}", 0.0) + d for k, d in delta.items()}
        new = {k: (current[k] + lr * velocity[k]).astype(np.float32) for k in delta}
        return new, {f"v/{k}": v.astype(np.float32) for k, v in velocity.items()}


@register
class FedAdam(Strategy):
    """Adam on the pseudo-gradient: m, v moments; w <- w + server_lr·m / (sqrt(v) + tau)."""

    server_lr: float = setting(0.01, 0.0, 100.0, "step size of the server update")
    adam_beta1: float = setting(0.9, 0.0, 0.999, "decay of the first moment")
    adam_beta2: float = setting(0.99, 0.0, 0.99999, "decay of the second moment")
    adam_tau: float = setting(1e-3, 1e-9, 1.0, "adaptivity: added to the root of the second moment")
    name = "fedadam"
    needs_current = True

    def aggregate(self, current, updates, state, num_clients):
        if current is None:
            return weighted_mean(updates), {}
        lr, b1, b2, tau = self.server_lr, self.adam_beta1, self.adam_beta2, self.adam_tau
        _, delta = _delta(current, updates)
        new, kept = {}, {}
        for k, d in delta.items():
            m = b1 * state.get(f"m/{k}", 0.0) + (1 - b1) * d
            v = b2 * state.get(f"v/{k}", 0.0) + (1 - b2) * d * d
            new[k] = (current[k] + lr * m / (np.sqrt(v) + tau)).astype(np.float32)
            kept[f"m/{k}"], kept[f"v/{k}"] = m.astype(np.float32), v.astype(np.float32)
        return new, kept
