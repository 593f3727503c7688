"""SCAFFOLD's client side: the client's control variate c_i, kept on disk beside its identity.

c_i must survive a client restart like the identity does: a client that forgot
it would report its whole estimate again as a change, and the server's average
c would drift.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from clients import files
from flcore.shared import weights as wcodec
from flcore.shared.strategies.scaffold import PREFIX

Weights = dict[str, np.ndarray]


class ControlVariate:
    """The c_i of one client for its current job (cleared when it joins another)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self, like: Weights) -> Weights:
        """The stored c_i, or zeros (a client's first round) shaped like ``like``."""
        try:
            stored = wcodec.decode(self.path.read_bytes())
        except Exception:  # missing or unreadable (safetensors has its own error type): start from zero
            stored = {}
        if set(stored) != set(like) or any(stored[k].shape != like[k].shape for k in like):
            stored = {k: np.zeros_like(v) for k, v in like.items()}
        return stored

    def save(self, c_i: Weights) -> None:
        files.write_atomic(self.path, wcodec.encode(c_i))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class ScaffoldRound:
    """One SCAFFOLD round on the client: c (from the server) and c_i (from disk) in,
    the update carrying the change of c_i out, c_i kept once the server has it."""

    def __init__(self, variate: ControlVariate, server_tensors: bytes | None, start: Weights):
        self.variate = variate
        self.start = start
        self.c_i = variate.load(start)
        # before the first aggregation the server's c is zero and not sent
        self.c = wcodec.decode(server_tensors) if server_tensors else {k: np.zeros_like(v) for k, v in start.items()}
        self.new_c_i: Weights | None = None

    def correction(self) -> dict[str, torch.Tensor]:
        return correction(self.c, self.c_i)

    def update(self, end: Weights, examples: int, hp: dict) -> Weights:
        """The trained weights plus the change of c_i, for ``submit``."""
        steps = local_steps(examples, hp["batch_size"], hp["local_epochs"])
        self.new_c_i = updated(self.c_i, self.c, self.start, end, steps, hp["lr"], hp["momentum"])
        return as_update(end, self.c_i, self.new_c_i)

    def commit(self) -> None:
        """Keep the new c_i; call only once the server has the change it was computed from."""
        self.variate.save(self.new_c_i)


def correction(c: Weights, c_i: Weights) -> dict[str, torch.Tensor]:
    """What each local gradient gets added: c - c_i, the global minus the local bias."""
    return {k: torch.from_numpy(c[k] - c_i[k]) for k in c_i}


def local_steps(examples: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(examples / batch_size)


def updated(c_i: Weights, c: Weights, start: Weights, end: Weights, steps: int, lr: float, momentum: float) -> Weights:
    """SCAFFOLD's option II: c_i+ = c_i - c + (start - end) / (steps · step).

    ``step`` is lr / (1 - momentum), the effective step of SGD with heavy-ball
    momentum, so that (start - end) / (steps · step) is the mean local gradient.
    """
    step = lr / (1.0 - momentum) * steps
    return {k: (c_i[k] - c[k] + (start[k] - end[k]) / step).astype(np.float32) for k in c_i}


def as_update(weights: Weights, old: Weights, new: Weights) -> Weights:
    """The model's weights plus the change of c_i, as the server expects them."""
    return {**weights, **{PREFIX + k: (new[k] - old[k]).astype(np.float32) for k in new}}
