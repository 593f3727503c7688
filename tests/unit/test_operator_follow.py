"""When ``Operator.follow`` looks more often: only while the job's very last update is due."""

from __future__ import annotations

import pytest

from flcli.operator import ending


def _sync(round_: int, submitted: int, state: str = "running") -> dict:
    return {"state": state, "round": round_, "rounds": 10, "submitted": submitted, "picked": list(range(10))}


@pytest.mark.parametrize(
    "status, near",
    [
        (_sync(10, 9), True),
        (_sync(10, 8), False),  # two updates still to come: several seconds of training
        (_sync(9, 9), False),  # not the last round: the clients move it on, not the operator
        (_sync(10, 9, state="done"), False),
        ({"state": "running", "mode": "async", "round": 5, "rounds": 5, "submitted": 3, "buffer": {"size": 4}}, True),
        ({"state": "running", "mode": "async", "round": 5, "rounds": 5, "submitted": 2, "buffer": {"size": 4}}, False),
    ],
)
def test_the_end_is_near_only_one_update_before_it(status, near):
    assert ending(status) is near
