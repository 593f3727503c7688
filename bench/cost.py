"""What a job costs on AWS, computed from a measured local run (``make bench-cost``).

Inputs, all measured: a run's ``summary.json`` (the function's invocations by
action and their billed duration, from serverless-offline's log, and each
client's calls per round, picked or waiting) and ``bench/results/aggregate.json``
(the seconds one aggregation takes per update). Prices are AWS's public list
prices for us-east-1 (x86 Lambda, REST API Gateway) as written below; the
memory is what ``serverless.yml`` deploys with (``FL_LAMBDA_MEMORY``, 1024 MB).

Three jobs: the default experiment as measured, and a 1,000- and a
10,000-client job of the same model and rounds with 10 % picked per round,
whose requests are the measured calls per client per round (picked and
waiting) times their clients, and whose billed time is the measured time per
request plus each round's aggregation at the measured seconds per update.
With bench/results/scale.json (``make bench-scale``), a fourth: its 1,000-client
job as measured. Writes bench/results/cost.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "cost.json"

LAMBDA_PER_REQUEST = 0.20 / 1e6  # USD
LAMBDA_PER_GB_SECOND = 0.0000166667  # USD, x86
API_GATEWAY_PER_REQUEST = 3.50 / 1e6  # USD, REST API, first 333 M a month
MEMORY_GB = int(os.environ.get("FL_LAMBDA_MEMORY", "1024")) / 1024


def price(requests: float, billed_seconds: float) -> dict:
    lam = requests * LAMBDA_PER_REQUEST + billed_seconds * MEMORY_GB * LAMBDA_PER_GB_SECOND
    api = requests * API_GATEWAY_PER_REQUEST
    return {
        "requests": round(requests),
        "billed_seconds": round(billed_seconds, 1),
        "lambda_usd": round(lam, 4),
        "api_gateway_usd": round(api, 4),
        "total_usd": round(lam + api, 4),
    }


def scaled(summary: dict, per_update_s: float, clients: int, fraction: float = 0.1) -> dict:
    """A job of ``clients`` clients, ``fraction`` picked per round, from the measured per-round calls."""
    inv = summary["invocations"]
    rounds = summary["rounds_completed"]
    picked = max(1, round(clients * fraction))
    calls = inv["per_client_round"]
    per_round = picked * calls["picked"]["mean"] + (clients - picked) * calls["waiting"]["mean"]
    requests = rounds * per_round + clients * 2  # + each client's join and first model
    per_request_s = inv["billed_seconds"] / max(1, inv["total"])
    billed = requests * per_request_s + rounds * picked * per_update_s
    return {"clients": clients, "picked_per_round": picked, "rounds": rounds, **price(requests, billed)}


def main(argv: list[str]) -> int:
    summary_path = Path(argv[1]) if len(argv) > 1 else ROOT / "results" / "latest" / "summary.json"
    summary = json.loads(summary_path.read_text())
    if "invocations" not in summary:
        raise SystemExit(f"{summary_path} has no invocation counts: run `make run` with this version first")
    aggregate = json.loads((ROOT / "bench" / "results" / "aggregate.json").read_text())
    mnist = [c for c in aggregate["cases"] if c["model"] == "cnn_mnist" and c["strategy"] == "fedavg"]
    per_update_s = max(c["seconds"] / c["updates"] for c in mnist)
    inv = summary["invocations"]
    result = {
        "prices": {
            "lambda_per_request": LAMBDA_PER_REQUEST,
            "lambda_per_gb_second": LAMBDA_PER_GB_SECOND,
            "api_gateway_per_request": API_GATEWAY_PER_REQUEST,
            "lambda_memory_gb": MEMORY_GB,
        },
        "measured_run": {
            "summary": str(summary_path),
            "clients": summary["config"]["num_clients"],
            "rounds": summary["rounds_completed"],
            "invocations": inv,
        },
        "aggregation_seconds_per_update": per_update_s,
        "jobs": [
            {
                "clients": summary["config"]["num_clients"],
                "label": "the default experiment, as measured",
                **price(inv["total"], inv["billed_seconds"]),
            },
            {"label": "1,000 clients, 10 % per round", **scaled(summary, per_update_s, 1000)},
            {"label": "10,000 clients, 10 % per round", **scaled(summary, per_update_s, 10_000)},
        ],
    }
    scale_path = ROOT / "bench" / "results" / "scale.json"
    if scale_path.exists() and "billed_seconds" in (scale := json.loads(scale_path.read_text())):
        result["jobs"].append(
            {
                "label": "1,000 clients, 5 rounds of 1 epoch (make bench-scale), as measured",
                "clients": 1000,
                "rounds": scale["completed_rounds"],
                **price(scale["requests"], scale["billed_seconds"]),
            }
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    for job in result["jobs"]:
        print(
            f"{job['label']:40s} {job['requests']:>10,} requests, {job['billed_seconds']:>9.1f} s billed at "
            f"{MEMORY_GB:g} GB: Lambda ${job['lambda_usd']:.4f} + API Gateway ${job['api_gateway_usd']:.4f} "
            f"= ${job['total_usd']:.4f}"
        )
    print(f"results: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
