"""Public facts about the data sets that both the function and the clients use (no torch)."""

from __future__ import annotations

# the model a job gets when it names none (a preset of flcore.shared.modeldef)
DATASET_MODELS = {"mnist": "cnn_mnist", "fashionmnist": "cnn_mnist", "cifar10": "cnn_cifar10"}

# channels x height x width of one example
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "fashionmnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}

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

# Bytes of one chunk when a model or an update travels in pieces (flcore.actions.transfer): as base64
# in JSON about 0.7 MB, under OpenWhisk's 1 MB request limit; also the GridFS chunk size.
CHUNK_BYTES = 512 * 1024
