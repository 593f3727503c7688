"""Every data set's code path: torchvision loading, sharding, training, and the update the function accepts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from clients import trainer
from flcore.shared import modeldef
from flcore.shared import weights as wcodec
from flcore.shared.datasets import DATASET_MODELS
from flcore.shared.partition import partition_indices, train_eval_split
from fllocal import data, models
from tests.helpers import printed_by


def write_cifar10(root: Path, per_batch: int = 60, test: int = 50) -> None:
    """A small archive in CIFAR-10's python format (the real one cannot be downloaded here)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        labels = rng.integers(0, 10, n)
        # class-dependent colour so that a model can learn something
        images = (rng.integers(0, 60, (n, 3, 32, 32)) + labels[:, None, None, None] * 19).astype(np.uint8)
        return {"data": images.reshape(n, -1), "labels": labels.tolist(), "batch_label": "synthetic"}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(test)))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def _federated_step(name: str, index: int = 0) -> None:
    images, labels = data.load_raw(name)
    spec = {"scheme": "dirichlet", "alpha": 1.0, "seed": 0, "index": index, "num_partitions": 3, "min_examples": 5}
    train_idx, eval_idx = train_eval_split(partition_indices(labels, spec), 0.8)
    xt, yt = data.to_tensors(name, images[train_idx], labels[train_idx])
    xe, ye = data.to_tensors(name, images[eval_idx], labels[eval_idx])
    model = models.build(DATASET_MODELS[name], name, seed=0)
    fit = trainer.train(model, xt, yt, epochs=2, batch_size=20, lr=0.05, momentum=0.5, seed=0, proximal_mu=0.01)
    assert np.isfinite(fit["train_loss"])
    metrics = trainer.evaluate(model, xe, ye)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # the update is exactly what the function accepts for this data set's model
    wcodec.parse_update(wcodec.to_b64(models.get_weights(model)), modeldef.resolve(DATASET_MODELS[name], name))


def test_cifar10_code_path(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    write_cifar10(tmp_path)
    monkeypatch.setenv("FL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FL_SEED_DATA_DIRS", str(tmp_path / "none"))
    # a home-made archive cannot match the official checksums torchvision verifies
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    data._load_raw_cached.cache_clear()
    try:
        images, labels = data.load_raw("cifar10")
        assert images.shape == (300, 3, 32, 32) and images.dtype == np.uint8 and labels.shape == (300,)
        assert data.load_raw("cifar10", train=False)[0].shape == (50, 3, 32, 32)
        x, _ = data.to_tensors("cifar10", images[:4], labels[:4])
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        _federated_step("cifar10")
    finally:
        data._load_raw_cached.cache_clear()


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)
def test_fashion_mnist_from_debian(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FL_SEED_DATA_DIRS", str(tmp_path / "none"))
    data._load_raw_cached.cache_clear()
    try:
        images, labels = data.load_raw("fashionmnist")
        assert images.shape == (60000, 1, 28, 28) and list(labels[:5]) == [9, 0, 0, 3, 0]
        assert np.bincount(labels).tolist() == [6000] * 10
        _federated_step("fashionmnist")
    finally:
        data._load_raw_cached.cache_clear()


def test_mnist_from_the_seed_folder():
    images, labels = data.load_raw("mnist")
    assert images.shape == (60000, 1, 28, 28) and np.bincount(labels).sum() == 60000
    assert data.load_raw("mnist", train=False)[0].shape == (10000, 1, 28, 28)


def test_an_empty_folder_left_by_a_failed_download_is_seeded(tmp_path, monkeypatch):
    seed = tmp_path / "seed"
    (seed / "MNIST" / "raw").mkdir(parents=True)
    (seed / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"archive")
    monkeypatch.setattr(data, "seed_dirs", lambda: [seed])
    root = tmp_path / "data"
    (root / "MNIST" / "raw").mkdir(parents=True)  # what torchvision leaves when it cannot download
    data.prepare("mnist", root)
    assert (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes() == b"archive"


def test_mnist_is_read_from_its_idx_files_as_torchvision_reads_it_without_importing_torchvision():
    code = (
        "import sys; from fllocal import data; x, y = data.load_raw('mnist', train=False); "
        "print(x.shape, int(y.sum()), x.flags.writeable, 'torchvision' in sys.modules)"
    )
    printed = printed_by(code)
    ours = data.load_raw("mnist", train=False)
    theirs = data._torchvision_dataset("mnist", data.data_dir(), False)
    assert np.array_equal(ours[0][:, 0], theirs.data.numpy()) and np.array_equal(ours[1], theirs.targets.numpy())
    assert printed == ["(10000,", "1,", "28,", "28)", str(int(ours[1].sum())), "True", "False"]


def test_an_idx_file_plain_or_gzipped_and_what_is_not_one(tmp_path):
    import gzip

    body = bytes(range(24))
    good = bytes([0, 0, 0x08, 3]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big") + body
    (tmp_path / "a-idx3-ubyte").write_bytes(good)
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(good))
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        got = data.read_idx(tmp_path / name)
        assert got.shape == (2, 3, 4) and got.dtype == np.uint8 and got.ravel().tolist() == list(range(24))
    (tmp_path / "floats").write_bytes(bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, "big") + b"\0\0\0\0")
    with pytest.raises(ValueError, match="not an idx file of unsigned bytes"):
        data.read_idx(tmp_path / "floats")
    (tmp_path / "short").write_bytes(good[:-1])
    with pytest.raises(ValueError, match="23 bytes where its header promises"):
        data.read_idx(tmp_path / "short")
