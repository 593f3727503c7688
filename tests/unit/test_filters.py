"""The filter language of device criteria and rule conditions: every operator, nesting, and refusals."""

import pytest

from flcore.domain.filters import MAX_DEPTH, MAX_NODES, check, matches
from flcore.edge.api import status_of
from flcore.errors import DomainError

FIELDS = ("info.", "stats.")
DEVICE = {
    "info": {
        "platform": "linux/aarch64",
        "cpus": 4,
        "memory_mb": 2048,
        "labels": {"site": "lab"},
        "datasets": {"mnist": 3000},
    },
    "stats": {"rounds_trained": 7, "deadlines_missed": 0, "mean_train_seconds": 12.5},
}


@pytest.mark.parametrize(
    "flt, expected",
    [
        ({"info.cpus": 4}, True),
        ({"info.cpus": 5}, False),
        ({"info.platform": "linux/aarch64"}, True),
        ({"info.cpus": {"$eq": 4}}, True),
        ({"info.cpus": {"$ne": 4}}, False),
        ({"info.missing": {"$ne": 4}}, True),
        ({"info.cpus": {"$gt": 3}}, True),
        ({"info.cpus": {"$gt": 4}}, False),
        ({"info.cpus": {"$gte": 4}}, True),
        ({"info.cpus": {"$lt": 4}}, False),
        ({"info.cpus": {"$lte": 4}}, True),
        ({"info.memory_mb": {"$gte": 1024, "$lt": 4096}}, True),
        ({"info.platform": {"$gt": "linux"}}, True),  # text compares with text
        ({"info.cpus": {"$gt": "3"}}, False),  # never across kinds
        ({"info.missing": {"$gt": 0}}, False),
        ({"info.missing": {"$lt": 0}}, False),
        ({"info.platform": {"$in": ["linux/x86_64", "linux/aarch64"]}}, True),
        ({"info.platform": {"$nin": ["linux/x86_64", "linux/aarch64"]}}, False),
        ({"info.missing": {"$nin": ["x"]}}, True),
        ({"info.cpus": {"$in": []}}, False),
        ({"info.datasets.mnist": {"$exists": True}}, True),
        ({"info.datasets.cifar10": {"$exists": True}}, False),
        ({"info.datasets.cifar10": {"$exists": False}}, True),
        ({"info.datasets.cifar10": None}, True),
        ({"info.cpus": None}, False),
        ({"info.labels.site": "lab"}, True),
        ({"info.cpus": {"$not": {"$gt": 8}}}, True),
        ({"info.cpus": {"$not": {"$gt": 2}}}, False),
        ({"info.cpus": True}, False),  # true is not 1
        ({"$and": [{"info.cpus": {"$gte": 2}}, {"stats.deadlines_missed": 0}]}, True),
        ({"$and": [{"info.cpus": {"$gte": 2}}, {"stats.deadlines_missed": {"$gt": 0}}]}, False),
        ({"$or": [{"info.cpus": 1}, {"stats.mean_train_seconds": {"$lt": 20}}]}, True),
        ({"$or": [{"info.cpus": 1}, {"info.cpus": 2}]}, False),
        ({"$or": [{"$and": [{"info.cpus": 4}, {"info.labels.site": "lab"}]}, {"info.cpus": 64}]}, True),
        ({"info.cpus": 4, "stats.rounds_trained": {"$gte": 10}}, False),  # clauses all hold
        ({}, True),
    ],
)
def test_every_operator_and_nesting(flt, expected):
    assert matches(check(flt, FIELDS), DEVICE) is expected


@pytest.mark.parametrize(
    "flt, message",
    [
        ([], "must be an object"),
        ("info.cpus > 2", "must be an object"),
        ({"info.cpus": {"$where": "sleep(100)"}}, "unknown operator '$where'"),
        ({"$where": "this.cpus > 2"}, "unknown operator '$where'"),
        ({"$expr": {}}, "unknown operator"),
        ({"info.cpus": {"$regex": ".*"}}, "unknown operator '$regex'"),
        ({"secret.token": 1}, "is not one of info., stats."),
        ({"infox": 1}, "is not one of"),
        ({"info.": 1}, "is not one of"),
        ({"info..cpus": 1}, "is not one of"),
        ({"info.cpus": {"$gt": [1]}}, "values must be"),
        ({"info.cpus": {"$gt": {"$x": 1}}}, "values must be"),
        ({"info.cpus": {"$in": 3}}, "$in takes a list"),
        ({"info.cpus": {"$in": [[1]]}}, "values must be"),
        ({"info.cpus": {"$in": list(range(101))}}, "at most 100"),
        ({"info.cpus": {"$exists": 1}}, "true or false"),
        ({"info.cpus": {"$not": 3}}, "$not takes a condition"),
        ({"info.cpus": {}}, "empty condition"),
        ({"$and": {}}, "$and takes a list"),
        ({"$or": []}, "$or takes a list"),
        ({"$and": [3]}, "must be an object"),
        ({"info.cpus": float("nan")}, "finite"),
        ({"info.platform": "x" * 201}, "longer than"),
        ({"info.cpus": {"$not": {"$not": {"$not": {"$not": {"$not": {"$not": {"$gt": 1}}}}}}}}, "deeper than"),
        ({"$or": [{"$and": [{"info.a": i}, {"info.b": i}]} for i in range(MAX_NODES // 3 + 1)]}, "larger than"),
    ],
)
def test_invalid_filters_are_400_naming_the_problem(flt, message):
    with pytest.raises(DomainError) as err:
        check(flt, FIELDS, "criteria")
    assert status_of(err.value) == 400
    assert message in err.value.message and err.value.message.startswith("criteria")


def test_depth_limit_counts_nested_logic():
    flt: dict = {"info.cpus": 4}
    for _ in range(MAX_DEPTH - 1):
        flt = {"$and": [flt]}
    assert matches(check(flt, FIELDS), DEVICE)
    with pytest.raises(DomainError):
        check({"$or": [flt]}, FIELDS)


def test_exact_field_names_for_rule_conditions():
    fields = ("round", "clients", "metrics.", "best.eval_accuracy", "rounds_since_best")
    closed = {
        "round": 6,
        "clients": 10,
        "metrics": {"eval_accuracy": 0.97},
        "best": {"eval_accuracy": 0.97},
        "rounds_since_best": 0,
    }
    assert matches(check({"metrics.eval_accuracy": {"$gte": 0.97}, "round": {"$gt": 5}}, fields), closed)
    with pytest.raises(DomainError):
        check({"best.eval_loss": 1}, fields)
