"""The torch models match the specs the function validates against."""

import numpy as np
import torch

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
