"""Torch models built from :mod:`flcore.specs`; client and CLI side only (imports torch)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flcore.specs import ARCHS, CnnArch


class TwoLayerCNN(nn.Module):
    """conv5x5 -> ReLU -> pool -> conv5x5 -> ReLU -> pool -> fc -> ReLU -> fc."""

    def __init__(self, arch: CnnArch):
        super().__init__()
        self.conv1 = nn.Conv2d(arch.in_channels, arch.conv1, 5)
        self.conv2 = nn.Conv2d(arch.conv1, arch.conv2, 5)
        self.fc1 = nn.Linear(arch.flat, arch.hidden)
        self.fc2 = nn.Linear(arch.hidden, arch.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def build(model: str, seed: int | None = None) -> TwoLayerCNN:
    """A fresh model; with a seed, the same initial weights on every machine."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return TwoLayerCNN(ARCHS[model])
    return TwoLayerCNN(ARCHS[model])


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float32, copy=True) for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.items()})
