"""The torch models match the specs the function validates against; what the trainer does to them."""

import numpy as np
import torch

from clients import trainer
from flcore import models
from flcore.specs import ARCHS, tensor_spec


def test_state_dicts_match_specs():
    for name in ARCHS:
        m = models.build(name)
        assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == tensor_spec(name)
        a = ARCHS[name]
        out = m(torch.zeros(2, a.in_channels, a.side, a.side))
        assert out.shape == (2, a.classes)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = models.get_weights(models.build("cnn_mnist", seed=7))
    assert torch.rand(1) == expected_next
    b = models.get_weights(models.build("cnn_mnist", seed=7))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_restricted_softmax_scales_only_missing_classes():
    scale = trainer.class_scale(torch.tensor([3, 1, 3]), 0.25, 5)
    assert scale.tolist() == [0.25, 1.0, 0.25, 1.0, 0.25]


def test_fedrs_leaves_the_outputs_of_missing_classes_alone_at_alpha_zero():
    """Alpha 0: a client holding only digits 0 and 1 cannot move the other classes' output rows."""
    x = torch.randn(40, 1, 28, 28)
    y = torch.tensor([0, 1] * 20)
    for alpha, moved in ((0.0, False), (1.0, True)):
        model = models.build("cnn_mnist", seed=1)
        before = model.fc2.weight.detach().clone()
        trainer.train(model, x, y, epochs=2, batch_size=10, lr=0.1, momentum=0.5, seed=0,
                      restricted_softmax=alpha)
        after = model.fc2.weight.detach()
        assert not torch.equal(after[:2], before[:2])
        assert (not torch.equal(after[2:], before[2:])) is moved
