"""The client's trainer does the same maths as the plain loop, only faster (bench/trainer.py measures it)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clients import trainer
from fllocal import data, models
from tests.helpers import printed_by


def plain_loop(model, x, y, epochs, lr, momentum, seed):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 50):
            idx = order[start : start + 50]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def test_channels_last_training_gives_the_plain_loops_weights_in_the_usual_layout():
    images, labels = data.load_raw("mnist")
    x, y = data.to_tensors("mnist", images[:500], labels[:500])
    ours, ref = models.build("cnn_mnist", seed=4), models.build("cnn_mnist", seed=4)
    trainer.train(ours, x, y, epochs=2, batch_size=50, lr=0.05, momentum=0.5, seed=9)
    plain_loop(ref, x, y, epochs=2, lr=0.05, momentum=0.5, seed=9)
    got, want = models.get_weights(ours), models.get_weights(ref)
    for name in want:
        assert got[name].flags["C_CONTIGUOUS"], name
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
    assert all(p.is_contiguous() for p in ours.parameters())


def test_augmentation_moves_and_mirrors_whole_images_reproducibly():
    xb = torch.arange(4 * 1 * 6 * 6, dtype=torch.float32).reshape(4, 1, 6, 6)
    moved = trainer.augment(xb, 2, False, torch.Generator().manual_seed(3))
    # one offset for the batch: every image is the same roll of itself, nothing lost or made up
    offsets = {
        (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(torch.roll(xb, (dy, dx), (2, 3)), moved)
    }
    assert len(offsets) == 1
    assert torch.equal(trainer.augment(xb, 2, False, torch.Generator().manual_seed(3)), moved)  # same seed, same
    mirrored = trainer.augment(xb, 0, True, torch.Generator().manual_seed(5))
    flipped = [torch.equal(m, x.flip(2)) for m, x in zip(mirrored, xb)]
    kept = [torch.equal(m, x) for m, x in zip(mirrored, xb)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped)


def test_a_job_asks_for_augmentation_and_clients_receive_it():
    from flcore.domain.config import parse_config

    cfg = parse_config({"dataset": "fashionmnist", "augment_shift": 2, "augment_flip": 1})
    hp = cfg.round_config(1, cfg.build_strategy())
    assert hp["augment_shift"] == 2 and hp["augment_flip"] is True


def test_each_data_set_trains_with_its_measured_best_unless_the_job_says_otherwise():
    from flcore.domain.config import DATASET_DEFAULTS, JobConfig, parse_config

    mnist = parse_config({})
    assert mnist.lr == DATASET_DEFAULTS["mnist"]["lr"] != JobConfig.lr and mnist.augment_shift == 2
    assert parse_config({"lr": 0.01, "augment_shift": 0}).lr == 0.01  # what the job sets wins
    assert parse_config({"dataset": "cifar10"}).lr == JobConfig.lr  # no preset: the general defaults


def test_bfloat16_training_keeps_float32_weights_and_learns_as_float32_does():
    images, labels = data.load_raw("mnist")
    x, y = data.to_tensors("mnist", images[:1000], labels[:1000])
    xe, ye = data.to_tensors("mnist", images[1000:1500], labels[1000:1500])
    low, full = models.build("cnn_mnist", seed=4), models.build("cnn_mnist", seed=4)
    fit_low = trainer.train(low, x, y, epochs=4, batch_size=50, lr=0.05, momentum=0.5, seed=9, precision="bfloat16")
    fit_full = trainer.train(full, x, y, epochs=4, batch_size=50, lr=0.05, momentum=0.5, seed=9, precision="float32")
    got, want = models.get_weights(low), models.get_weights(full)
    assert all(got[k].dtype == np.float32 and got[k].flags["C_CONTIGUOUS"] for k in got)
    # the forward pass really ran in bfloat16 (the weights differ), yet the training is the same training
    assert any(not np.array_equal(got[k], want[k]) for k in want)
    assert abs(fit_low["train_loss"] - fit_full["train_loss"]) < 0.05
    acc_low, acc_full = trainer.evaluate(low, xe, ye)["accuracy"], trainer.evaluate(full, xe, ye)["accuracy"]
    assert acc_low > 0.8 and abs(acc_low - acc_full) < 0.03


def test_auto_precision_is_bfloat16_only_for_images_on_a_processor_that_has_it():
    assert trainer.resolve_precision("auto", images=False) == "float32"
    assert trainer.resolve_precision("auto", images=True) == ("bfloat16" if trainer.native_bfloat16() else "float32")
    assert trainer.resolve_precision("bfloat16", images=False) == "bfloat16"  # asked for: done
    import pytest

    with pytest.raises(ValueError, match="unknown training precision 'half'"):
        trainer.resolve_precision("half")


def test_a_job_sets_the_training_precision_and_refuses_one_it_does_not_know():
    import pytest

    from flcore.domain.config import parse_config
    from flcore.errors import Invalid

    cfg = parse_config({"train_precision": "float32"})
    assert cfg.round_config(1, cfg.build_strategy())["train_precision"] == "float32"
    assert parse_config({}).train_precision == "auto"
    with pytest.raises(Invalid, match="train_precision"):
        parse_config({"train_precision": "float8"})


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.5, 1e-3), (0.0, 0.0), (0.0, 1e-2)])
def test_momentum_sgd_steps_as_torch_optim_sgd(momentum, weight_decay):
    """Twenty steps of the trainer's optimiser and of torch's, from the same weights on the same batches."""
    from clients.sgd import MomentumSGD

    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    theirs, start = copy.deepcopy(ours), copy.deepcopy(ours)
    opt_ours = MomentumSGD(ours.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    for _ in range(20):
        x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert any((a != b).any() for a, b in zip(ours.parameters(), start.parameters()))  # it moved


def test_training_imports_no_torch_dynamo():
    """Training and evaluating in a fresh process never import torch._dynamo (1.5 s and 160 MB)."""
    code = (
        "import sys, torch\n"
        "from clients import trainer\n"
        "from fllocal import models\n"
        "m = models.build('cnn_mnist', 'mnist')\n"
        "x, y = torch.zeros(100, 1, 28, 28), torch.zeros(100, dtype=torch.int64)\n"
        "trainer.train(m, x, y, epochs=1, batch_size=50, lr=0.01, momentum=0.5, seed=0, shift=1, precision='auto')\n"
        "trainer.evaluate(m, x, y)\n"
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)\n"
    )
    assert printed_by(code) == ["False", "False"]
