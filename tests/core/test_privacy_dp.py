"""A job's ``dp`` block through the function: clipped changes averaged one vote per device, noise of
std z·C on their sum, epsilon from dp-accounting after every round, the budget kept, and what cannot
work refused, changing nothing."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant

from flcore.domain import accountant
from flcore.shared import clipping
from flcore.shared import weights as wcodec
from helpers import call, random_weights, snapshot, subscribe_all

BASE = random_weights(seed=5)


def _job(dp: dict, **cfg) -> str:
    body = {"num_clients": 4, "clients_per_round": 4, "rounds": 3, "dp": dp, **cfg}
    return call("start_training", {**body, "weights": wcodec.to_b64(BASE)})["job_id"]


def _moved(by: float, seed: int) -> dict:
    """BASE plus a random change of L2 norm ``by``."""
    rng = np.random.default_rng(seed)
    change = {k: rng.standard_normal(v.shape) for k, v in BASE.items()}
    norm = math.sqrt(sum(float((c**2).sum()) for c in change.values()))
    return {k: (BASE[k] + change[k] * by / norm).astype(np.float32) for k in BASE}


def _send(sub: dict, rnd: int, weights: dict, unclipped: bool | None = True, expect: int = 200) -> dict:
    body = {"round": rnd, "weights": wcodec.to_b64(weights), "num_examples": 100, "metrics": {"train_loss": 0.1}}
    if unclipped is not None:
        body["dp_unclipped"] = unclipped
    return call("submit", body, sub["token"], expect=expect)


def test_without_noise_the_model_is_the_unweighted_mean_of_the_changes_clipped_by_the_function(store):
    job_id = _job({"noise_multiplier": 0.0, "clip_norm": 1.0})
    subs = subscribe_all(job_id, 4)
    poll = call("poll", {}, subs[0]["token"])
    assert poll["round_config"]["dp_clip_norm"] == 1.0
    sent = [_moved(0.5, 1), _moved(0.8, 2), _moved(3.0, 3), _moved(10.0, 4)]  # two above C: a device that did not clip
    for i, (sub, w) in enumerate(zip(subs, sent)):
        _send(sub, 1, w, unclipped=i < 2)
    call("aggregate", {"job_id": job_id})
    model = wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])
    clipped = [clipping.clip_change(w, BASE, 1.0)[0] for w in sent]
    for name in BASE:  # one vote per device (not by examples), each change at most C
        expected = np.mean([c[name].astype(np.float64) for c in clipped], axis=0)
        np.testing.assert_allclose(model[name], expected, rtol=1e-5, atol=1e-6)
    st = call("status", {"job_id": job_id})
    record = st["history"][0]["privacy"]
    assert record["reclipped"] == 2 and record["noise_stddev"] == 0
    assert st["privacy"]["epsilon"] is None  # no noise: no guarantee


def test_noise_has_std_z_c_over_k_on_the_mean(store):
    z, c = 2.0, 0.5
    job_id = _job({"noise_multiplier": z, "clip_norm": c})
    subs = subscribe_all(job_id, 4)
    for i, sub in enumerate(subs):
        _send(sub, 1, _moved(1e-4, i))  # next to no change: what moved is the noise
    call("aggregate", {"job_id": job_id})
    model = wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])
    noise = np.concatenate([(model[k].astype(np.float64) - BASE[k]).ravel() for k in BASE])
    assert noise.size > 40_000
    assert abs(noise.std() / (z * c / 4) - 1) < 0.02 and abs(noise.mean()) < 0.01 * z * c / 4


def test_epsilon_after_each_round_is_the_librarys_own_figure(store):
    job_id = _job({"noise_multiplier": 1.5, "clip_norm": 1.0, "delta": 1e-3}, num_clients=8, clients_per_round=4)
    subs = subscribe_all(job_id, 8)
    for rnd in (1, 2):
        trainers = [sub for sub in subs if call("poll", {}, sub["token"])["action"] == "train"]
        for i, sub in enumerate(trainers):
            _send(sub, rnd, _moved(0.5, 10 * rnd + i))
        call("aggregate", {"job_id": job_id})
        spent = call("status", {"job_id": job_id})["privacy"]
        lib = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        # replace-one: the sum moves by up to 2C, so the library is told noise per 2C
        lib.compose(dp_accounting.SampledWithoutReplacementDpEvent(8, 4, dp_accounting.GaussianDpEvent(0.75)), rnd)
        assert spent["rounds"] == rnd
        assert spent["epsilon"] == pytest.approx(lib.get_epsilon(1e-3), rel=1e-9)


def test_the_job_ends_before_a_round_would_exceed_its_budget(store):
    z, delta = 1.0, 0.1
    one = accountant.epsilon([accountant.RoundCost(4, 4, z, 0.0)], delta)
    two = accountant.epsilon([accountant.RoundCost(4, 4, z, 0.0)] * 2, delta)
    job_id = _job({"noise_multiplier": z, "target_epsilon": (one + two) / 2, "delta": delta}, rounds=5)
    subs = subscribe_all(job_id, 4)
    for i, sub in enumerate(subs):
        _send(sub, 1, _moved(0.5, 9 + i))
    call("aggregate", {"job_id": job_id})
    st = call("status", {"job_id": job_id})
    assert st["state"] == "done" and st["round"] == 1
    assert "privacy budget" in st["stopped_because"] and st["privacy"]["epsilon"] == pytest.approx(one)


def test_derive_picks_the_noise_that_spends_the_budget_in_the_planned_rounds(store):
    job_id = _job({"target_epsilon": 3.0, "on_target": "derive"}, num_clients=10, clients_per_round=5, rounds=4)
    dp = call("status", {"job_id": job_id})["config"]["dp"]
    cost = accountant.RoundCost(10, 5, dp["noise_multiplier"], 0.0)
    assert (
        accountant.epsilon([cost] * 4, dp["delta"])
        <= 3.0
        < accountant.epsilon([cost._replace(noise_multiplier=dp["noise_multiplier"] * 0.99)] * 4, dp["delta"])
    )
    assert dp["delta"] == pytest.approx(0.1)  # default: 1 / num_clients


def test_adaptive_clipping_moves_the_norm_toward_the_quantile(store):
    job_id = _job({"noise_multiplier": 0.5, "clip_norm": 1.0, "target_quantile": 0.5, "clipped_count_stddev": 0.01})
    subs = subscribe_all(job_id, 4)
    for i, sub in enumerate(subs):
        _send(sub, 1, _moved(0.1, 3 + i), unclipped=True)  # every change fits well under C: C shrinks
    call("aggregate", {"job_id": job_id})
    st = call("status", {"job_id": job_id})
    assert st["privacy"]["clip_norm"] == pytest.approx(math.exp(-0.2 * 0.5), rel=0.01)
    assert call("poll", {}, subs[0]["token"])["round_config"]["dp_clip_norm"] == st["privacy"]["clip_norm"]


@pytest.mark.parametrize(
    ("cfg", "says"),
    [
        ({"strategy": "median"}, "cannot run with dp"),
        ({"strategy": "scaffold"}, "control variates"),
        ({"mode": "async"}, "synchronous rounds"),
        ({"dp": {"noise_multiplier": -1}}, "dp.noise_multiplier must be"),
        ({"dp": {"clip": 1}}, "unknown dp settings: 'clip'"),
        ({"dp": {"on_target": "derive"}}, "set target_epsilon"),
        ({"dp": {"target_epsilon": 0.01, "noise_multiplier": 0.5}}, "one round alone spends"),
        ({"dp": {"target_quantile": 0.5, "noise_multiplier": 0}}, "needs noise"),
        ({"dp": "yes"}, "dp must be an object"),
    ],
)
def test_what_cannot_work_is_refused_changing_nothing(store, raw_db, cfg, says):
    before = snapshot(raw_db)
    body = {"num_clients": 4, "clients_per_round": 2, "dp": {"noise_multiplier": 1.0}, **cfg}
    assert says in call("start_training", body, expect=400)["error"]
    assert snapshot(raw_db) == before


def test_an_update_that_does_not_say_whether_it_fitted_is_refused(store, raw_db):
    job_id = _job({"noise_multiplier": 1.0})
    sub = subscribe_all(job_id, 4)[0]
    before = snapshot(raw_db)
    assert "dp_unclipped" in _send(sub, 1, BASE, unclipped=None, expect=400)["error"]
    assert snapshot(raw_db) == before


def test_a_job_without_dp_keeps_weighting_by_examples(store):
    job_id = call("start_training", {"num_clients": 2, "clients_per_round": 2, "weights": wcodec.to_b64(BASE)})[
        "job_id"
    ]
    subs = subscribe_all(job_id, 2)
    a, b = _moved(1.0, 1), _moved(1.0, 2)
    for sub, w, n in zip(subs, (a, b), (100, 300)):
        call("submit", {"round": 1, "weights": wcodec.to_b64(w), "num_examples": n}, sub["token"])
    call("aggregate", {"job_id": job_id})
    st = call("status", {"job_id": job_id})
    assert "privacy" not in st["history"][0] and st.get("privacy") is None


def test_a_running_job_cannot_change_its_privacy_but_changes_are_checked_against_it(store):
    job_id = _job({"noise_multiplier": 1.0})
    said = call("update_job", {"job_id": job_id, "set": {"dp": {"noise_multiplier": 0.1}}}, expect=400)["error"]
    assert "cannot change 'dp' once a job exists" in said
    secure = call("start_training", {"num_clients": 6, "clients_per_round": 6, "secure_aggregation": {"bits": 24}})
    said = call("update_job", {"job_id": secure["job_id"], "set": {"clients_per_round": 2}}, expect=400)["error"]
    assert "at least 3" in said


def test_flctl_shows_the_privacy_account():
    from flcli.flctl import privacy_lines

    st = {
        "round": 2,
        "config": {"dp": {"noise_multiplier": 1.1, "clip_norm": 1.0, "target_quantile": 0.5},
                   "secure_aggregation": {"degree": 8, "threshold": 5, "bits": 22, "clip_range": 8.0}},
        "privacy": {"epsilon": 2.345, "delta": 1e-3, "target_epsilon": 4.0, "rounds": 1, "clip_norm": 0.9},
        "secure": {"attempt": 0, "stage": "masked"},
    }  # fmt: skip
    lines = privacy_lines(st)
    assert lines[0] == (
        "differential privacy: epsilon 2.35 of 4 at delta 0.001 after 1 round; noise 1.1 x clip norm 0.9 (adaptive)"
    )
    assert lines[1].startswith("secure aggregation: 8 neighbours, threshold 5, 22-bit values in [-8, 8]; round 2")
