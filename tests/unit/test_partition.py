import numpy as np
import pytest

from flcore.domain.config import parse_config
from flcore.errors import DomainError
from flcore.shared.partition import all_partitions, parse, partition_indices, train_eval_split

LABELS = np.repeat(np.arange(10), 600)[np.random.default_rng(3).permutation(6000)]  # 6000 examples, 10 classes


def spec(strategy="iid", n=20, seed=0, **extra):
    return {"scheme": strategy, "seed": seed, "num_partitions": n, **extra}


@pytest.mark.parametrize(
    "s",
    [
        spec("iid"),
        spec("dirichlet", alpha=0.5),
        spec("dirichlet", alpha=0.05),
        spec("shards", shards=2),
        spec("shards", shards=5),
    ],
)
def test_partitions_are_disjoint_and_cover(s):
    parts = all_partitions(LABELS, s)
    assert len(parts) == 20
    everything = np.concatenate(parts)
    assert len(everything) == len(np.unique(everything)) == len(LABELS)  # no example in two shares


def test_iid_sizes_and_mixed_labels():
    parts = all_partitions(LABELS, spec("iid"))
    assert {len(p) for p in parts} == {300}
    assert all(len(np.unique(LABELS[p])) == 10 for p in parts)


def test_shards_give_each_client_few_labels():
    parts = all_partitions(LABELS, spec("shards", shards=2))
    assert {len(p) for p in parts} == {300}  # 40 shards of 150
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 4  # a shard straddles at most one label boundary
    assert np.mean([len(np.unique(LABELS[p])) for p in parts]) <= 2.6


def test_dirichlet_skew_grows_as_alpha_shrinks():
    def dominant_share(alpha):
        parts = all_partitions(LABELS, spec("dirichlet", alpha=alpha))
        assert min(len(p) for p in parts) >= 10
        return np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts])

    skewed, mild, flat = dominant_share(0.1), dominant_share(1.0), dominant_share(100.0)
    assert skewed > 0.5 > mild > flat and flat < 0.2


def test_partitions_are_deterministic_and_depend_on_seed():
    for s in (spec("iid"), spec("dirichlet", alpha=0.3), spec("shards", shards=2)):
        np.testing.assert_array_equal(
            partition_indices(LABELS, {**s, "index": 4}), partition_indices(LABELS, {**s, "index": 4})
        )
        assert not np.array_equal(
            partition_indices(LABELS, {**s, "index": 4}), partition_indices(LABELS, {**s, "index": 4, "seed": 1})
        )


def test_train_eval_split_keeps_80_percent_for_training():
    train, held = train_eval_split(np.arange(3000), 0.8)
    assert len(train) == 2400 and len(held) == 600
    assert not set(train) & set(held)


def test_bad_specs_are_refused():
    with pytest.raises(ValueError):
        partition_indices(LABELS, {**spec("nope"), "index": 0})
    with pytest.raises(ValueError):
        partition_indices(LABELS, {**spec(), "index": 20})


def test_partition_text_in_jobs():
    assert parse("shards:2") == {"partition": "shards", "shards_per_client": 2}
    assert parse("dirichlet:0.5") == {"partition": "dirichlet", "partition_alpha": 0.5}
    cfg = parse_config({"partition": "Dirichlet:0.1"})
    assert (cfg.partition, cfg.partition_alpha) == ("dirichlet", 0.1)
    for bad in ("shards:x", "iid:3", "random:1", "dirichlet:-1"):
        with pytest.raises(DomainError):
            parse_config({"partition": bad})


@pytest.mark.parametrize(
    "scheme, extra",
    [("iid", {}), ("shards", {"shards": 2}), ("dirichlet", {"alpha": 0.5}), ("dirichlet", {"alpha": 0.1})],
)
def test_share_sizes_from_class_counts_match_the_real_partitions(scheme, extra):
    """What the function computes without data equals what clients get from the labels."""
    from flcore.shared.datasets import TRAIN_CLASS_COUNTS
    from flcore.shared.partition import share_sizes, train_examples
    from fllocal import data

    _, labels = data.load_raw("mnist")
    assert tuple(np.bincount(labels)) == TRAIN_CLASS_COUNTS["mnist"]
    spec = {"scheme": scheme, "seed": 3, "num_partitions": 20, "train_fraction": 0.9, **extra}
    parts = all_partitions(labels, spec)
    assert share_sizes(TRAIN_CLASS_COUNTS["mnist"], spec) == [len(p) for p in parts]
    for index in (0, 7, 19):
        train, _ = train_eval_split(parts[index], 0.9)
        assert train_examples(TRAIN_CLASS_COUNTS["mnist"], {**spec, "index": index}) == len(train)
        assert train_examples(TRAIN_CLASS_COUNTS["mnist"], {**spec, "index": index, "max_train_examples": 100}) == min(
            100, len(train)
        )


def test_every_job_setting_is_reachable_from_the_environment():
    """make run takes FL_<SETTING> for every job setting, strategy settings included."""
    from flcli.run import env_names, job_overrides
    from flcore.domain.config import field_types

    assert set(env_names().values()) == set(field_types())
    got = job_overrides(
        {
            "FL_NUM_CLIENTS": "4",
            "FL_ROUND_TIMEOUT_S": "30",
            "FL_STRATEGY": "FedAdam",
            "FL_ADAM_TAU": "0.01",
            "FL_PARTITION": "shards:2",
            "FL_CLIENTS_PER_ROUND": "2",
            "FL_LR": " ",
        }
    )
    assert got == {
        "num_clients": 4,
        "round_timeout_s": 30.0,
        "strategy": "fedadam",
        "adam_tau": 0.01,
        "partition": "shards:2",
        "clients_per_round": 2,
    }
    assert parse_config(got).strategy_params["adam_tau"] == 0.01
    with pytest.raises(SystemExit, match="FL_ROUNDS='ten'"):
        job_overrides({"FL_ROUNDS": "ten"})
    with pytest.raises(SystemExit, match="whole number"):
        job_overrides({"FL_ROUNDS": "2.5"})
