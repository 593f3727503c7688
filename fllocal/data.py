"""Datasets as tensors (MNIST and Fashion-MNIST read from their idx files, the rest through
torchvision); client and CLI side only.

torch and torchvision are imported where they are used, so that preparing the
data folder (the operator does it before any client starts) stays light.

Batches are sliced from one normalised tensor rather than drawn through a
DataLoader: for a model this small, per-sample Python overhead would cost more
than the arithmetic.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flcore.shared.datasets import NORMALISE, TRAIN_CLASS_COUNTS

if TYPE_CHECKING:
    import torch

_FOLDERS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}


def data_dir() -> Path:
    return Path(os.environ.get("FL_DATA_DIR") or "data").resolve()


def seed_dirs() -> list[Path]:
    """Read-only places holding archives in torchvision's layout, copied before anything is downloaded."""
    env = os.environ.get("FL_SEED_DATA_DIRS")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    here = Path(__file__).resolve().parent.parent
    return [here.parent / "shared" / "datasets"]


# Debian packages that ship a data set's archives in one flat folder.
_DEBIAN_DIRS = {"fashionmnist": Path("/usr/share/datasets/fashion-mnist")}


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def prepare(name: str, root: Path | None = None) -> Path:
    """Copy a dataset's archives into our own data folder (never writing into the source).

    Looks in the seed folders (torchvision's layout) and then in Debian's package
    folder; when neither has it, torchvision downloads it on first load.
    """
    root = root or data_dir()
    folder = root / _FOLDERS[name]
    if _has_files(folder):
        return root
    # what is there is empty: left by a download that failed (no internet), so seed it now
    for seed in seed_dirs():
        if _has_files(seed / _FOLDERS[name]):
            shutil.copytree(seed / _FOLDERS[name], folder, dirs_exist_ok=True)
            break
    else:
        flat = _DEBIAN_DIRS.get(name)
        if flat is not None and flat.is_dir():
            # Debian re-compressed the archives, so their checksums differ from torchvision's;
            # the decompressed idx files are what torchvision reads, and it checks no sums on them.
            (folder / "raw").mkdir(parents=True, exist_ok=True)
            for archive in flat.glob("*.gz"):
                with gzip.open(archive) as src, open(folder / "raw" / archive.stem, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    if folder.exists():
        for path in folder.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def _torchvision_dataset(name: str, root: Path, train: bool):
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashionmnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    # download=True finds local archives first and only goes online when they are missing.
    return cls(str(root), train=train, download=True)


IDX_DTYPES = {0x08: np.uint8}  # what the idx files of MNIST and Fashion-MNIST hold


def read_idx(path: Path) -> np.ndarray:
    """One idx file (the format of MNIST and Fashion-MNIST), plain or gzipped, as an array.

    Read here rather than through torchvision: importing it (and what it imports) costs a
    process about 1.3 core-seconds and 100 MB, for four small files.
    """
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = memoryview(raw)[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise ValueError(f"{path}: {len(body)} bytes where its header promises {dims}")
    return np.frombuffer(body, dtype=IDX_DTYPES[raw[2]]).reshape(dims).copy()  # writable, for torch


def _idx_split(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """A split of MNIST or Fashion-MNIST from its idx files, if they are there (else None)."""
    if name not in ("mnist", "fashionmnist"):
        return None
    raw, prefix = root / _FOLDERS[name] / "raw", "train" if train else "t10k"
    found = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        path = next((p for p in (raw / stem, raw / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            return None
        found.append(read_idx(path))
    images, labels = found
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{raw}: {images.shape} images for {labels.shape} labels")
    return images, labels


def load_raw(name: str, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All images (uint8, N x C x H x W) and labels of a split; cached per process.

    The client launcher calls this before forking, so every client shares one copy.
    """
    return _load_raw_cached(name, bool(train))  # one cache key however it is called


@functools.lru_cache(maxsize=4)
def _load_raw_cached(name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    root = prepare(name)
    split = _idx_split(name, root, train)
    if split is not None:
        images, labels = split
        return np.ascontiguousarray(images[:, None, :, :]), labels.astype(np.int64)
    ds = _torchvision_dataset(name, root, train)  # CIFAR-10, or a data set still to download
    images = np.asarray(ds.data)
    if images.ndim == 3:
        images = images[:, None, :, :]
    else:  # CIFAR-10 stores H x W x C
        images = images.transpose(0, 3, 1, 2)
    labels = np.asarray(ds.targets, dtype=np.int64)
    return np.ascontiguousarray(images), labels


def to_tensors(name: str, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images and int64 labels, ready to slice into batches."""
    import torch

    mean, std = NORMALISE[name]
    x = torch.from_numpy(images).to(torch.float32, copy=True).div_(255.0)  # one copy, normalised in place
    x.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))
    return x.contiguous(), torch.from_numpy(np.asarray(labels, dtype=np.int64))


@dataclass(frozen=True)
class Shard:
    """A client's share of an image data set, kept as the data set's bytes: a quarter of the
    memory of normalised floats (2.4 MB instead of 9.4 for 3,000 MNIST images, in each of 20
    clients). Its float tensors are made for a round and freed after it."""

    dataset: str
    train: tuple[np.ndarray, np.ndarray]  # images (uint8, N x C x H x W) and labels
    evaluation: tuple[np.ndarray, np.ndarray]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Train images and labels, evaluation images and labels, as :func:`to_tensors` makes them."""
        return (*to_tensors(self.dataset, *self.train), *to_tensors(self.dataset, *self.evaluation))


def load_split(name: str, indices: np.ndarray | None = None, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_raw(name, train)
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return to_tensors(name, images, labels)


def available() -> dict[str, int]:
    """The data sets this machine holds (or can seed without a download), with their training examples.

    What a device reports when it registers; nothing is loaded to find out.
    """
    places = [data_dir(), *seed_dirs()]
    out = {}
    for name, folder in _FOLDERS.items():
        debian = _DEBIAN_DIRS.get(name)
        if any(_has_files(p / folder) for p in places) or (debian is not None and debian.is_dir()):
            out[name] = sum(TRAIN_CLASS_COUNTS[name])
    return out
