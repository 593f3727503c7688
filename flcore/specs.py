"""Model architectures as plain data, so the function can validate updates without torch.

The torch modules in :mod:`fllocal.models` are built from the same numbers, and a
test checks that their ``state_dict`` matches :func:`tensor_spec` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CnnArch:
    """A two-convolution-layer CNN: conv5x5 -> pool -> conv5x5 -> pool -> fc -> fc."""

    in_channels: int
    side: int
    conv1: int
    conv2: int
    hidden: int
    classes: int = 10

    @property
    def flat(self) -> int:
        """Features after the second pooling (valid 5x5 convs, 2x2 pools)."""
        after = ((self.side - 4) // 2 - 4) // 2
        return self.conv2 * after * after


ARCHS: dict[str, CnnArch] = {
    # Measured on one core here: as fast as the classic (10, 20, 50) tutorial
    # net and more accurate under FedAvg (see README, "Model").
    "cnn_mnist": CnnArch(in_channels=1, side=28, conv1=16, conv2=32, hidden=64),
    # Kept small so a CIFAR-10 update fits OpenWhisk's 1 MB payload limit.
    "cnn_cifar10": CnnArch(in_channels=3, side=32, conv1=16, conv2=32, hidden=64),
}

DATASET_MODELS = {"mnist": "cnn_mnist", "fashionmnist": "cnn_mnist", "cifar10": "cnn_cifar10"}

# data set -> (per-channel mean, per-channel std) of pixels scaled to 0..1: the
# preprocessing clients train with and the function predicts with
NORMALISE: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashionmnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

# Training examples per class, in label order: public facts about each data set,
# from which the function computes how many examples each client's share holds.
TRAIN_CLASS_COUNTS: dict[str, tuple[int, ...]] = {
    "mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "fashionmnist": (6000,) * 10,
    "cifar10": (5000,) * 10,
}

DTYPE = "float32"


def tensor_spec(model: str) -> dict[str, tuple[int, ...]]:
    """Ordered tensor names and shapes of a model, as torch names them."""
    a = ARCHS[model]
    return {
        "conv1.weight": (a.conv1, a.in_channels, 5, 5),
        "conv1.bias": (a.conv1,),
        "conv2.weight": (a.conv2, a.conv1, 5, 5),
        "conv2.bias": (a.conv2,),
        "fc1.weight": (a.hidden, a.flat),
        "fc1.bias": (a.hidden,),
        "fc2.weight": (a.classes, a.hidden),
        "fc2.bias": (a.classes,),
    }


def model_bytes(model: str) -> int:
    """Raw size of one set of weights, used to bound request sizes."""
    total = 0
    for shape in tensor_spec(model).values():
        n = 1
        for d in shape:
            n *= d
        total += 4 * n
    return total
