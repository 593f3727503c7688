"""FedAvg (McMahan et al., 2017), FedProx (Li et al., 2020) and FedRS (Li and Zhan, 2021):
one server rule, weighted averaging; the latter two change how clients train."""

from __future__ import annotations

from flcore.shared.aggregation import weighted_mean
from flcore.shared.strategies import Strategy, register, setting


@register
class FedAvg(Strategy):
    """Average client weights, each weighted by its number of training examples."""

    name = "fedavg"

    def aggregate(self, current, updates, state, num_clients):
        return weighted_mean(updates), {}


@register
class FedProx(FedAvg):
    """FedAvg on the server; clients add (mu/2)·||w - w_global||² to their loss,
    which keeps local models near the global one when data differ between clients."""

    name = "fedprox"
    proximal_mu: float = setting(0.01, 0.0, 100.0, "weight of the proximal term")

    def client_config(self) -> dict:
        return {"proximal_mu": self.proximal_mu}


@register
class FedRS(FedAvg):
    """FedAvg on the server; clients scale the logits of classes missing from their
    data by ``fedrs_alpha`` while training ("restricted softmax"). Under label skew
    a client otherwise drives those classes' outputs down for every input, and the
    average inherits that bias; restricting them keeps the classifier balanced."""

    name = "fedrs"
    fedrs_alpha: float = setting(0.5, 0.0, 1.0, "scale of the logits of classes a client lacks")

    def client_config(self) -> dict:
        return {"restricted_softmax": self.fedrs_alpha}
