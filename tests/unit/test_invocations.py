"""A run's invocation counts: from serverless-offline's log and from the clients' call logs."""

from __future__ import annotations

import json

from clients.calls import CallLog
from flcli import invocations

# as serverless-offline 13 writes it (concurrent requests interleave their lines)
LOG = """Server ready: http://127.0.0.1:3000 🚀


POST /dev/poll (λ: api)
(λ: api) RequestId: b22ce78c  Duration: 3.64 ms  Billed Duration: 4 ms


POST /dev/submit (λ: api)


POST /dev/poll (λ: api)
(λ: api) RequestId: a59fbdd9  Duration: 20.16 ms  Billed Duration: 21 ms
(λ: api) RequestId: 16fda120  Duration: 4.06 ms  Billed Duration: 5 ms
"""


def test_requests_by_action_and_billed_time_from_where_the_run_began(tmp_path):
    log = tmp_path / "function.log"
    log.write_text("POST /dev/status (λ: api)\n(λ: api) RequestId: x  Duration: 1 ms  Billed Duration: 100 ms\n")
    start = invocations.log_size(log)
    with open(log, "a") as fh:
        fh.write(LOG)
    got = invocations.from_function_log(log, start)
    assert got == {
        "total": 3,
        "by_action": {"poll": 2, "submit": 1},
        "billed_seconds": 0.03,
        "duration_ms": {"p50": 4.1, "p90": 20.2, "p99": 20.2, "max": 20.2, "count": 3},
    }
    assert invocations.from_function_log(log)["by_action"]["status"] == 1
    assert invocations.log_size(tmp_path / "missing.log") == 0


def test_calls_per_client_round_split_by_whether_the_client_trained(tmp_path):
    a, b = CallLog(), CallLog()
    a.count("poll", {"round": 1})  # picked in round 1: poll, get_model, submit, poll
    a.trained()
    for action in ("get_model", "submit"):
        a.count(action, {})
    a.count("poll", {"round": 1})
    a.count("poll", {"round": 2})  # round 2: waiting, asked twice
    a.count("poll", {"round": 2})
    b.count("poll", {"round": 1}, 0.010)
    b.count("poll", {"round": 3}, 0.030)  # beyond the rounds the run completed: not counted
    for name, log in (("client-00", a), ("client-01", b)):
        (tmp_path / f"{name}.calls.json").write_text(json.dumps(log.as_dict()))
    got = invocations.per_client_round(tmp_path, rounds=2)
    assert got["picked"] == {"mean": 4, "median": 4, "max": 4, "client_rounds": 1}
    assert got["waiting"] == {"mean": 1.5, "median": 1.5, "max": 2, "client_rounds": 2}
    assert got["waiting_from_round_2"] == {"mean": 2, "median": 2, "max": 2, "client_rounds": 1}
    assert got["picked_from_round_2"] == {}
    # every timed call, whatever its round, in the latency percentiles
    assert invocations.client_latency_ms(tmp_path) == {"p50": 30.0, "p90": 30.0, "p99": 30.0, "max": 30.0, "count": 2}
