"""Aggregation strategies: one small unit per algorithm, chosen by the job's ``strategy``.

A strategy decides how the function combines the round's updates into the new
global model, may keep tensors between rounds (server momentum, Adam moments),
and may ask clients to train differently (FedProx's proximal term, SCAFFOLD's
control variates, which travel as extra tensors both ways). Each class owns its
settings as typed :class:`Param` entries with ranges, like Flower's strategies
take theirs in their constructors; adding one means adding a module with one
``@register``-ed class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flcore.shared.aggregation import Updates
from flcore.shared.weights import Weights

# What clients train with when the strategy says nothing: plain SGD. Every
# round's settings carry these keys, so clients hard-code no defaults.
CLIENT_DEFAULTS: dict[str, object] = {"proximal_mu": 0.0, "restricted_softmax": 1.0, "control_variates": False}


@dataclass(frozen=True)
class Param:
    """One strategy setting: its type, default and allowed range."""

    kind: type
    default: float
    lo: float
    hi: float
    doc: str = ""


def setting(default: float, lo: float, hi: float, doc: str) -> Any:
    """A strategy's setting, declared as a typed class field: ``server_lr: float = setting(1.0, 0, 100, "...")``.

    The class's ``params`` are collected from these; an instance holds the values."""
    return Param(float, default, lo, hi, doc)


class Strategy:
    """Base: subclasses set ``name``, declare their settings with :func:`setting` and implement
    :meth:`aggregate`."""

    name = ""
    params: dict[str, Param] = {}  # collected from the class fields declared with setting()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.params = {**cls.params, **{k: v for k, v in vars(cls).items() if isinstance(v, Param)}}

    # Name prefixes of extra tensors a client sends with its weights, one copy of
    # the model's tensors per prefix (SCAFFOLD's control-variate change).
    update_prefixes: tuple[str, ...] = ()
    # Whether clients receive tensors from the server state (see client_tensors).
    shares_state = False
    # Whether the server rule can fold a buffer of updates trained on different model
    # versions (async mode); if not, why not, for the 400 that refuses it.
    asynchronous = True
    why_not_async = ""
    # Whether aggregate() reads ``current``; the function loads the global model only then.
    needs_current = False
    # Whether aggregate() reads the updates block by block as stored (the robust rules), not one by one.
    blockwise = False

    def __init__(self, **values: float) -> None:
        unknown = set(values) - set(self.params)
        if unknown:
            raise TypeError(f"{self.name} has no settings {sorted(unknown)}")
        self.values = {k: p.kind(values.get(k, p.default)) for k, p in self.params.items()}
        for name, value in self.values.items():  # each class declares its settings as typed attributes
            setattr(self, name, value)

    def client_config(self) -> dict:
        """Extra settings clients receive with each round."""
        return {}

    def client_tensors(self, state: Weights) -> Weights | None:
        """Tensors from the server state that clients receive with the model (None: nothing)."""
        return None

    def aggregate(
        self, current: Weights | None, updates: Updates, state: Weights, num_clients: int
    ) -> tuple[Weights, Weights]:
        """The new global weights and the server state to keep for the next round.

        ``updates`` is a stream (see :class:`flcore.shared.aggregation.Updates`): a list
        of ``(weights, examples)`` pairs works too. ``current`` is the model the
        clients started from (None before any exists, or when the strategy does not
        set ``needs_current``); ``num_clients`` the job's population, for rules
        that scale by it.
        """
        raise NotImplementedError


REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    REGISTRY[cls.name] = cls
    return cls


def build(name: str, values: Mapping[str, float]) -> Strategy:
    """The strategy ``name`` with its settings (already range-checked by the job's config)."""
    return REGISTRY[name](**values)


def owners(param: str) -> list[str]:
    """The strategies that have a setting called ``param`` (for error messages)."""
    return sorted(n for n, cls in REGISTRY.items() if param in cls.params)


def asynchronous() -> list[str]:
    """The strategies that async mode takes."""
    return sorted(n for n, cls in REGISTRY.items() if cls.asynchronous)


def all_params() -> dict[str, Param]:
    """Every strategy setting by name (the same name means the same thing everywhere)."""
    return {k: p for cls in REGISTRY.values() for k, p in cls.params.items()}


# the units register themselves on import
from flcore.shared.strategies import fedavg, fedopt, robust, scaffold  # noqa: E402,F401
