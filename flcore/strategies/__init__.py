"""Aggregation strategies: one small unit per algorithm, chosen by the job's ``strategy``.

A strategy decides how the function combines the round's updates into the new
global model, may keep tensors between rounds (server momentum, Adam moments),
and may ask clients to train differently (FedProx's proximal term, SCAFFOLD's
control variates, which travel as extra tensors both ways). Adding one
means adding a module with one ``@register``-ed class.
"""

from __future__ import annotations

from collections.abc import Sequence

from flcore.weights import Weights

Update = tuple[Weights, int]  # (client weights, number of training examples)


class Strategy:
    """Base: subclasses set ``name`` and implement :meth:`aggregate`."""

    name = ""
    # Name prefixes of extra tensors a client sends with its weights, one copy of
    # the model's tensors per prefix (SCAFFOLD's control-variate change).
    update_prefixes: tuple[str, ...] = ()
    # Whether clients receive tensors from the server state (see client_tensors).
    shares_state = False

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def client_config(self) -> dict:
        """Extra settings clients receive with each round."""
        return {}

    def client_tensors(self, state: Weights) -> Weights | None:
        """Tensors from the server state that clients receive with the model (None: nothing)."""
        return None

    def aggregate(self, current: Weights | None, updates: Sequence[Update], state: Weights) -> tuple[Weights, Weights]:
        """The new global weights and the server state to keep for the next round.

        ``current`` is the model the clients started from (None before any exists).
        """
        raise NotImplementedError


REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    REGISTRY[cls.name] = cls
    return cls


def get(cfg) -> Strategy:
    return REGISTRY[cfg.strategy](cfg)


# the units register themselves on import
from flcore.strategies import fedavg, fedopt, robust, scaffold  # noqa: E402,F401
