"""The torch models match the specs the function validates against; what the trainer does to them."""

import numpy as np
import torch

from clients import control, trainer
from flcore.shared import modeldef
from flcore.shared.datasets import INPUT_SHAPES
from fllocal import models


def test_tabular_state_dicts_match_specs():
    for name in modeldef.TABULAR_PRESETS:
        spec = modeldef.for_job(name, "rows", {"input_width": 9, "outputs": 3})
        floats = {k: tuple(v.shape) for k, v in models.build(spec).state_dict().items() if v.is_floating_point()}
        assert list(floats.items()) == list(spec.spec.items())


def test_state_dicts_match_specs():
    """For every preset and data set: the torch model's float tensors are the spec, in its order."""
    for name in set(modeldef.PRESETS) - set(modeldef.TABULAR_PRESETS):
        for dataset in INPUT_SHAPES:
            spec = modeldef.resolve(name, dataset).spec
            m = models.build(name, dataset)
            floats = {k: tuple(v.shape) for k, v in m.state_dict().items() if v.is_floating_point()}
            assert list(floats.items()) == list(spec.items())
            m.eval()
            out = m(torch.zeros(2, *INPUT_SHAPES[dataset]))
            assert out.shape == (2, modeldef.CLASSES)


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
        trainer.train(model, x, y, epochs=2, batch_size=10, lr=0.1, momentum=0.5, seed=0, restricted_softmax=alpha)
        after = model.fc2.weight.detach()
        assert not torch.equal(after[:2], before[:2])
        assert (not torch.equal(after[2:], before[2:])) is moved


def test_scaffold_correction_shifts_every_step_and_c_i_estimates_the_mean_gradient():
    x = torch.randn(40, 1, 28, 28)
    y = torch.tensor([0, 1] * 20)
    start = models.get_weights(models.build("cnn_mnist", seed=1))
    zero = {k: np.zeros_like(v) for k, v in start.items()}
    runs = {}
    for label, corr in (
        ("none", None),
        ("zero", control.correction(zero, zero)),
        ("shift", control.correction({k: v + 0.05 for k, v in zero.items()}, zero)),
    ):
        model = models.build("cnn_mnist", seed=1)
        trainer.train(model, x, y, epochs=1, batch_size=10, lr=0.1, momentum=0.0, seed=0, correction=corr)
        runs[label] = models.get_weights(model)
    for k in start:
        np.testing.assert_array_equal(runs["zero"][k], runs["none"][k])
        assert not np.allclose(runs["shift"][k], runs["none"][k])
    # option II by hand: c_i+ = c_i - c + (start - end) / (steps * lr / (1 - momentum))
    c_i, c = {"x": np.float32([0.5])}, {"x": np.float32([0.2])}
    new = control.updated(c_i, c, {"x": np.float32([1.0])}, {"x": np.float32([0.4])}, steps=3, lr=0.1, momentum=0.5)
    np.testing.assert_allclose(new["x"], [0.5 - 0.2 + 0.6 / (3 * 0.2)], rtol=1e-6)
    assert control.local_steps(examples=101, batch_size=50, epochs=10) == 30
    update = control.as_update({"x": np.float32([9.0])}, c_i, new)
    np.testing.assert_allclose(update["control/x"], new["x"] - c_i["x"], rtol=1e-6)


def test_control_variate_survives_a_restart_and_is_cleared_for_a_new_job(tmp_path):
    like = {"a": np.zeros(3, np.float32)}
    cv = control.ControlVariate(tmp_path / "client.control")
    assert np.array_equal(cv.load(like)["a"], like["a"])  # nothing stored: zeros
    cv.save({"a": np.float32([1, 2, 3])})
    assert [p.name for p in tmp_path.iterdir()] == ["client.control"]  # written whole, nothing left beside
    again = control.ControlVariate(tmp_path / "client.control")
    np.testing.assert_array_equal(again.load(like)["a"], [1, 2, 3])
    assert np.array_equal(again.load({"a": np.zeros(4, np.float32)})["a"], np.zeros(4))  # other model: zeros
    again.clear()
    assert not (tmp_path / "client.control").exists()


def test_a_scaffold_round_starts_from_zero_and_keeps_c_i_only_when_committed(tmp_path):
    start = models.get_weights(models.build("cnn_mnist", seed=1))
    end = {k: v - 0.01 for k, v in start.items()}
    hp = {"batch_size": 50, "local_epochs": 2, "lr": 0.1, "momentum": 0.5}
    variate = control.ControlVariate(tmp_path / "client.control")
    first = control.ScaffoldRound(variate, None, start)  # no server c yet, no c_i on disk: both zero
    assert all(not t.any() for t in first.correction().values())
    update = first.update(end, examples=100, hp=hp)
    # c_i+ = 0 - 0 + 0.01 / (4 steps * 0.1 / (1 - 0.5)) = 0.0125, sent as the change from 0
    np.testing.assert_allclose(update["control/fc2.bias"], 0.0125, rtol=1e-5)
    assert not variate.path.exists()  # not kept before the server has it
    first.commit()
    second = control.ScaffoldRound(variate, None, start)
    np.testing.assert_allclose(second.c_i["fc2.bias"], 0.0125, rtol=1e-5)
