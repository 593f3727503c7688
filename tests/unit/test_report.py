"""The test-set score of ``make run``, the floor and Flower's run: numpy for a small model, as torch."""

from __future__ import annotations

import pytest

from clients import trainer
from flcli import report
from flcore.shared import modeldef
from fllocal import data, models
from tests.helpers import printed_by


def test_numpy_scores_the_test_set_as_torch_does():
    """A trained model (not a random one, whose outputs are near ties), scored both ways."""
    images, labels = data.load_raw("mnist")
    x, y = data.to_tensors("mnist", images[:2000], labels[:2000])
    model = models.build("cnn_mnist", "mnist", seed=3)
    trainer.train(model, x, y, epochs=1, batch_size=32, lr=0.05, momentum=0.9, seed=0)
    weights = models.get_weights(model)
    got = report.evaluate_on_test_set("mnist", weights)
    want = report._evaluate_with_torch("mnist", weights, modeldef.resolve("cnn_mnist", "mnist"))
    assert got["examples"] == want["examples"] == 10_000
    assert got["accuracy"] > 0.8  # it learnt: the comparison means something
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=2e-4)  # at most 2 images of 10,000
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)


def test_a_large_model_is_scored_with_torch(monkeypatch):
    """Above the size where numpy is slower, the same function takes torch's path."""
    monkeypatch.setattr(report, "NUMPY_MAX_PARAMETERS", 1000)
    weights = models.get_weights(models.build("cnn_mnist", "mnist", seed=3))
    called = []
    real = report._evaluate_with_torch
    monkeypatch.setattr(report, "_evaluate_with_torch", lambda *a: called.append(1) or real(*a))
    assert report.evaluate_on_test_set("mnist", weights)["examples"] == 10_000
    assert called


def test_the_operator_scores_the_default_model_without_torch():
    """``make run``'s own process: its evaluator needs no torch, 0.4 GB it need not hold."""
    code = (
        "import sys, numpy as np\n"
        "from flcli import run, report\n"
        "from flcore.shared.modeldef import resolve\n"
        "spec = resolve('cnn_mnist', 'mnist').spec\n"
        "w = {k: np.full(s, 0.01, np.float32) for k, s in spec.items()}\n"
        "print(report.evaluate_on_test_set('mnist', w)['examples'])\n"
        "print('torch' in sys.modules)\n"
    )
    assert printed_by(code) == ["10000", "False"]


def test_threads_score_the_same():
    """The test set in slices on two threads: the same sums as one thread."""
    weights = models.get_weights(models.build("cnn_mnist", "mnist", seed=5))
    assert report.evaluate_on_test_set("mnist", weights, threads=2) == pytest.approx(
        report.evaluate_on_test_set("mnist", weights)
    )
