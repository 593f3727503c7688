import numpy as np
import pytest

from flcore.partition import partition_indices, train_eval_split


def spec(index, n=20, seed=0):
    return {"strategy": "iid", "seed": seed, "index": index, "num_partitions": n}


def test_iid_partitions_are_disjoint_equal_and_cover():
    parts = [partition_indices(60000, spec(i)) for i in range(20)]
    allidx = np.concatenate(parts)
    assert len(allidx) == 60000 and len(np.unique(allidx)) == 60000
    assert {len(p) for p in parts} == {3000}


def test_partitions_are_deterministic_and_depend_on_seed():
    np.testing.assert_array_equal(partition_indices(1000, spec(3)), partition_indices(1000, spec(3)))
    assert not np.array_equal(partition_indices(1000, spec(3)), partition_indices(1000, spec(3, seed=1)))


def test_train_eval_split_keeps_80_percent_for_training():
    train, held = train_eval_split(np.arange(3000), 0.8)
    assert len(train) == 2400 and len(held) == 600
    assert not set(train) & set(held)


def test_bad_specs_are_refused():
    with pytest.raises(ValueError):
        partition_indices(100, {**spec(0), "strategy": "nope"})
    with pytest.raises(ValueError):
        partition_indices(100, spec(20))
