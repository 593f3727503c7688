"""Models as data: layer lists checked without torch, built with torch, predicted with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flcore.domain.config import parse_config
from flcore.edge.api import status_of
from flcore.errors import DomainError
from flcore.shared import inference, modeldef
from fllocal import models

SMALL_RESNET = [
    {"type": "conv2d", "name": "stem", "out": 8, "kernel": 3, "padding": 1, "bias": False},
    {"type": "batchnorm2d", "name": "bn"},
    {"type": "relu"},
    {"type": "residual", "name": "block1", "out": 8},
    {"type": "residual", "name": "block2", "out": 16, "stride": 2},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "dropout", "p": 0.2},
    {"type": "avgpool2d", "global": True},
    {"type": "flatten"},
    {"type": "linear", "name": "head", "out": 10},
]


def _refused(model, dataset: str = "mnist") -> str:
    with pytest.raises(DomainError) as err:
        modeldef.resolve(model, dataset)
    assert status_of(err.value) == 400
    return err.value.message


def test_resnet18_preset_has_the_published_size():
    m = modeldef.resolve("resnet18", "cifar10")
    trainable = sum(int(np.prod(s)) for k, s in m.spec.items() if "running_" not in k)
    assert trainable == 11_173_962  # torchvision-style CIFAR ResNet-18 with a 10-class head
    assert m.nbytes == 4 * m.parameters and m.parameters == 11_183_562  # + batchnorm running statistics
    assert modeldef.resolve("resnet18", "mnist").spec["conv1.weight"] == (64, 1, 3, 3)  # grey input


@pytest.mark.parametrize(
    "model, words",
    [
        ("vgg16", "unknown model"),
        (42, "preset name"),
        ([], "1 to 64 layers"),
        ([{"type": "lstm"}], "type must be one of"),
        ([{"type": "flatten"}, {"type": "linear"}, {"type": "linear"}], "out is required"),
        ([{"type": "flatten"}, {"type": "linear", "out": True}], "integer from 1"),
        ([{"type": "flatten"}, {"type": "linear", "out": 10, "activation": "relu"}], "no fields ['activation']"),
        ([{"type": "linear", "out": 10}], "put a flatten before it"),
        ([{"type": "flatten"}, {"type": "conv2d", "out": 4, "kernel": 3}], "channels x height x width"),
        (
            [
                {"type": "conv2d", "out": 4, "kernel": 11, "stride": 4},
                {"type": "conv2d", "out": 4, "kernel": 11},
                {"type": "flatten"},
                {"type": "linear", "out": 10},
            ],
            "does not fit",
        ),
        ([{"type": "flatten"}, {"type": "linear", "out": 7}], "one per class"),
        (
            [
                {"type": "flatten"},
                {"type": "linear", "out": 4096},
                {"type": "linear", "out": 4096},
                {"type": "linear", "out": 4096},
                {"type": "linear", "out": 4096},
                {"type": "linear", "out": 4096},
                {"type": "linear", "out": 10},
            ],
            "parameters; at most",
        ),
        ([{"type": "flatten", "name": "x"}, {"type": "linear", "name": "x", "out": 10}], "unique"),
        ([{"type": "flatten", "name": "Evil.Name"}, {"type": "linear", "out": 10}], "lowercase identifier"),
        ([{"type": "dropout", "p": 1.0}, {"type": "flatten"}, {"type": "linear", "out": 10}], "p must be"),
    ],
)
def test_bad_models_are_refused_with_the_reason(model, words):
    assert words in _refused(model)


def test_a_job_takes_a_layer_list_and_stores_it_complete():
    cfg = parse_config({"model": SMALL_RESNET})
    stored = cfg.to_dict()["model"]
    assert stored[0] == {
        "type": "conv2d",
        "name": "stem",
        "out": 8,
        "kernel": 3,
        "stride": 1,
        "padding": 1,
        "bias": False,
    }
    assert stored[2]["name"] == "2"  # unnamed layers are named by position, as torch's Sequential does
    assert parse_config({"model": "resnet18"}).to_dict()["model"] == "resnet18"
    assert parse_config({}).to_dict()["model"] == "cnn_mnist"
    with pytest.raises(DomainError):
        parse_config({"model": [{"type": "linear", "out": 10}]})


def test_numpy_forward_pass_matches_torch_for_every_layer_kind():
    """The function predicts without torch: same outputs as the clients' torch model (eval mode)."""
    mdef = modeldef.resolve(SMALL_RESNET, "mnist")
    net = models.build(mdef, seed=3)
    with torch.no_grad():  # non-trivial running statistics, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = inference.logits(mdef, models.get_weights(net), x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_integer_buffers_stay_with_the_client():
    net = models.build("resnet18", "cifar10", seed=0)
    weights = models.get_weights(net)
    assert not any(k.endswith("num_batches_tracked") for k in weights)
    assert list(weights) == list(modeldef.resolve("resnet18", "cifar10").spec)
    models.set_weights(net, weights)  # loads although the integer buffers are not given
    with pytest.raises(KeyError):
        models.set_weights(net, {k: v for k, v in weights.items() if k != "fc.bias"})


@pytest.mark.parametrize(
    "batch, channels, side, out, kernel, stride, padding",
    [(7, 3, 13, 5, 3, 2, 1), (300, 1, 28, 16, 5, 1, 0), (3, 8, 9, 4, 1, 2, 0), (2, 2, 6, 3, 3, 1, 2)],
)
def test_numpy_convolution_is_torchs(batch, channels, side, out, kernel, stride, padding):
    """Strides, padding, 1x1 kernels, and a batch large enough to be computed in several slices."""
    rng = np.random.default_rng(side)
    x = rng.standard_normal((batch, channels, side, side)).astype(np.float32)
    w = rng.standard_normal((out, channels, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, padding)
    got = inference._conv(x, w, b, stride, padding)
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind, kernel, stride", [("maxpool2d", 3, 2), ("avgpool2d", 3, 2), ("avgpool2d", 2, 1)])
def test_numpy_pooling_is_torchs(kind, kernel, stride):
    """Overlapping windows, and a side the stride does not divide."""
    x = np.random.default_rng(1).standard_normal((3, 4, 11, 11)).astype(np.float32)
    pool = torch.nn.functional.max_pool2d if kind == "maxpool2d" else torch.nn.functional.avg_pool2d
    want = pool(torch.from_numpy(x), kernel, stride).numpy()
    got = inference._pool(x, {"type": kind, "global": False, "kernel": kernel, "stride": stride})
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
