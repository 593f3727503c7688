"""How many times a local run invoked the function, and for how long: what it would be billed for.

Two sources: serverless-offline's log (every request, by action, and each
invocation's billed duration, as Lambda reports them) and the clients' own
call logs (``clients.calls``), which say per round whether a client trained,
so picked and waiting clients can be counted apart.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from pathlib import Path

_REQUEST = re.compile(r"^POST /\w+/(\w+) \(λ")
_DURATION = re.compile(r"\bDuration: ([\d.]+) ms\s+Billed Duration: (\d+) ms")


def log_size(path: Path) -> int:
    """Where a log ends now: a run reads only what it appends after this."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def from_function_log(path: Path, offset: int = 0) -> dict:
    """Requests by action and the total billed duration in the function's log from ``offset`` on."""
    actions: Counter = Counter()
    billed_ms = 0
    durations: list[float] = []
    with open(path, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            line = raw.decode("utf-8", "replace").strip()
            if m := _REQUEST.match(line):
                actions[m.group(1)] += 1
            elif m := _DURATION.search(line):
                durations.append(float(m.group(1)))
                billed_ms += int(m.group(2))
    return {
        "total": sum(actions.values()),
        "by_action": dict(actions.most_common()),
        "billed_seconds": round(billed_ms / 1000, 3),
        "duration_ms": percentiles(durations),
    }


def client_latency_ms(state_dir: Path) -> dict:
    """Percentiles of every call's time as the clients saw it (queueing and retries included)."""
    return percentiles([1000 * s for log in _call_logs(state_dir) for s in log["seconds"]])


def _call_logs(state_dir: Path) -> list[dict]:
    """Every client's call log (``clients.calls.CallLog.as_dict``) under ``state_dir``."""
    return [json.loads(path.read_text()) for path in sorted(state_dir.glob("*.calls.json"))]


def percentiles(values: list[float]) -> dict:
    """p50, p90, p99 and max of ``values`` (rounded), and how many there were."""
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], 1), "count": len(ordered)}


def per_client_round(state_dir: Path, rounds: int) -> dict:
    """Calls per client per round (rounds 1..``rounds``), for the rounds a client trained in and the
    rest; over all rounds, and from round 2 on (the first has no round history to time its polls by)."""
    calls: dict[str, list[int]] = {"picked": [], "waiting": [], "picked_from_round_2": [], "waiting_from_round_2": []}
    for log in _call_logs(state_dir):
        for rnd, entry in log["rounds"].items():
            if 1 <= int(rnd) <= rounds:
                kind = "picked" if entry["trained"] else "waiting"
                count = sum(entry["calls"].values())
                calls[kind].append(count)
                if int(rnd) >= 2:
                    calls[f"{kind}_from_round_2"].append(count)
    return {kind: _summary(values) for kind, values in calls.items()}


def _summary(values: list[int]) -> dict:
    if not values:
        return {}
    return {
        "mean": round(statistics.mean(values), 2),
        "median": statistics.median(values),
        "max": max(values),
        "client_rounds": len(values),
    }
