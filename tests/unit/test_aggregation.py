import numpy as np
import pytest

from flcore.shared.aggregation import fedavg


def test_fedavg_weights_by_examples():
    a = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.0], np.float32)}
    b = {"w": np.array([3.0, 6.0], np.float32), "b": np.array([4.0], np.float32)}
    out = fedavg([(a, 100), (b, 300)])
    # by hand: (1*100 + 3*300)/400 = 2.5, (2*100 + 6*300)/400 = 5, (0*100 + 4*300)/400 = 3
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    np.testing.assert_allclose(out["b"], [3.0])
    assert out["w"].dtype == np.float32


def test_fedavg_of_one_update_is_that_update():
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.testing.assert_array_equal(fedavg([(a, 7)])["w"], a["w"])


def test_fedavg_does_not_depend_on_order():
    rng = np.random.default_rng(1)
    ups = [({"w": rng.standard_normal(100).astype(np.float32)}, int(n)) for n in rng.integers(1, 1000, 10)]
    np.testing.assert_array_equal(fedavg(ups)["w"], fedavg(ups[::-1])["w"])


def test_fedavg_refuses_nothing():
    with pytest.raises(ValueError):
        fedavg([])
    with pytest.raises(ValueError):
        fedavg([({"w": np.zeros(1, np.float32)}, 0)])
