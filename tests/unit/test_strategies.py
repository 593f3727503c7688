"""Each strategy against results computed by hand."""

import numpy as np
import pytest

from flcore.domain.config import parse_config
from flcore.shared import strategies


def w(*values):
    return {"x": np.array(values, dtype=np.float32)}


def agg(name, current, updates, state=None, num_clients=10, **params):
    return strategies.build(name, params).aggregate(current, updates, state or {}, num_clients)


def round_config(strategy="fedavg", rnd=1, **values):
    cfg = parse_config({"strategy": strategy, **values})
    return cfg.round_config(rnd, cfg.build_strategy())


def test_registry_has_every_unit():
    assert set(strategies.REGISTRY) == {
        "fedavg",
        "fedprox",
        "fedrs",
        "fedavgm",
        "fedadam",
        "median",
        "trimmed_mean",
        "scaffold",
    }


def test_fedavg_and_fedprox_weight_by_examples():
    for name in ("fedavg", "fedprox", "fedrs"):
        new, state = agg(name, None, [(w(1, 2), 100), (w(3, 6), 300)])
        np.testing.assert_allclose(new["x"], [2.5, 5.0])  # (1*100+3*300)/400, (2*100+6*300)/400
        assert state == {}


def test_fedprox_sends_mu_to_clients():
    assert round_config("fedprox", proximal_mu=0.1)["proximal_mu"] == 0.1
    assert round_config("fedavg")["proximal_mu"] == 0.0


def test_fedrs_sends_alpha_to_clients():
    assert round_config("fedrs", fedrs_alpha=0.3)["restricted_softmax"] == 0.3
    assert round_config("fedprox")["restricted_softmax"] == 1.0


def test_fedavgm_by_hand():
    current = w(1.0)
    # round 1: delta = avg(2, 4) - 1 = 2; v = 0.9*0 + 2 = 2; w = 1 + 1.0*2 = 3
    new, state = agg("fedavgm", current, [(w(2.0), 1), (w(4.0), 1)], server_momentum=0.9)
    np.testing.assert_allclose(new["x"], [3.0])
    np.testing.assert_allclose(state["v/x"], [2.0])
    # round 2 from w=3: delta = 4 - 3 = 1; v = 0.9*2 + 1 = 2.8; w = 3 + 0.5*2.8 = 4.4
    new, state = agg("fedavgm", new, [(w(4.0), 5)], state, server_momentum=0.9, server_lr=0.5)
    np.testing.assert_allclose(new["x"], [4.4], rtol=1e-6)
    np.testing.assert_allclose(state["v/x"], [2.8], rtol=1e-6)


def test_fedadam_by_hand():
    # delta = 3 - 1 = 2; m = 0.1*2 = 0.2; v = 0.01*4 = 0.04; w = 1 + 0.1*0.2/(0.2 + 0.001)
    new, state = agg("fedadam", w(1.0), [(w(3.0), 1)], server_lr=0.1, adam_beta1=0.9, adam_beta2=0.99, adam_tau=0.001)
    np.testing.assert_allclose(new["x"], [1 + 0.1 * 0.2 / (0.2 + 0.001)], rtol=1e-6)
    np.testing.assert_allclose(state["m/x"], [0.2], rtol=1e-6)
    np.testing.assert_allclose(state["v/x"], [0.04], rtol=1e-6)


def test_server_optimisers_average_when_there_is_no_model_yet():
    for name in ("fedavgm", "fedadam"):
        new, state = agg(name, None, [(w(2.0), 1), (w(4.0), 3)])
        np.testing.assert_allclose(new["x"], [3.5])
        assert state == {}


def test_median_ignores_an_outlier_and_example_counts():
    ups = [(w(1, 10), 1), (w(2, 20), 1), (w(1000, -1000), 10**6)]
    np.testing.assert_allclose(agg("median", None, ups)[0]["x"], [2, 10])


@pytest.mark.parametrize("fraction, expected", [(0.2, [3.0]), (0.0, [202.0]), (0.45, [3.0])])
def test_trimmed_mean_by_hand(fraction, expected):
    ups = [(w(v), 1) for v in (1.0, 2.0, 3.0, 4.0, 1000.0)]
    # 0.2 of 5 drops one at each end -> mean(2,3,4) = 3; 0 drops none -> 1010/5 = 202;
    # 0.45 of 5 drops two at each end -> 3
    np.testing.assert_allclose(agg("trimmed_mean", None, ups, trim_fraction=fraction)[0]["x"], expected)


def test_lr_schedule():
    assert [round_config(rnd=r, lr=0.1, lr_decay=0.5)["lr"] for r in (1, 2, 3)] == [0.1, 0.05, 0.025]


def test_scaffold_by_hand():
    """Weights: the weighted mean. Control: c + sum of the clients' changes / num_clients."""
    ups = [
        ({"x": np.float32([1.0]), "control/x": np.float32([0.4])}, 100),
        ({"x": np.float32([3.0]), "control/x": np.float32([-0.1])}, 300),
    ]
    new, state = agg("scaffold", w(0.0), ups, {"c/x": np.float32([1.0])}, num_clients=10)
    assert set(new) == {"x"}  # the control changes are not part of the model
    np.testing.assert_allclose(new["x"], [2.5])  # (1*100 + 3*300) / 400
    np.testing.assert_allclose(state["c/x"], [1.0 + (0.4 - 0.1) / 10], rtol=1e-6)
    # the first round starts from c = 0, and clients receive c under the model's names
    _, first = agg("scaffold", None, ups, num_clients=5)
    np.testing.assert_allclose(first["c/x"], [0.06], rtol=1e-6)
    strategy = strategies.build("scaffold", {})
    assert strategy.client_tensors(first).keys() == {"x"}
    assert round_config("scaffold")["control_variates"] is True
    assert round_config("fedavg")["control_variates"] is False


def test_strategy_settings_have_their_defaults_and_ranges():
    assert strategies.build("fedadam", {}).server_lr == 0.01
    assert strategies.build("fedavgm", {}).server_lr == 1.0
    assert parse_config({"strategy": "fedavgm"}).to_dict()["server_momentum"] == 0.9
    with pytest.raises(Exception, match="server_momentum must be between"):
        parse_config({"strategy": "fedavgm", "server_momentum": 1.5})
