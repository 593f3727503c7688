"""``make bench-scale``: a thousand clients on this machine, through the real local function.

1,000 clients subscribe to one MNIST job, 100 are picked per round, 1 local
epoch, 5 rounds. The clients run in simulation mode (clients/fleet.py): 250
identities per process, each its own client of the function with its own
device, token, shard, state and call log; no more train at once than the
machine has cores. Everything else is ``make run``'s stack: the embedded
database and the handler under serverless-offline.

Writes bench/results/scale.json and scale.png: the rounds' seconds, how many
requests the function served and how fast, its own time per request
(serverless-offline's "Duration", p50/p99) and the time the clients saw
(queueing and retries included), calls per client per round, and the peak
memory (PSS) of the whole stack against the 8 GB target.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flcli.plots import pyplot, save, write_results  # noqa: E402
from flcli.run import _exit_on_sigterm, run_job  # noqa: E402

OUT = ROOT / "bench" / "results" / "scale.json"
JOB = {"num_clients": 1000, "clients_per_round": 100, "local_epochs": 1, "rounds": 5}
PER_PROCESS = 250
MEMORY_TARGET_MB = 8 * 1024


def draw(result: dict, png: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rounds = result["round_seconds"]
    left.bar(range(1, len(rounds) + 1), rounds, color="#4c72b0")
    left.set(
        xlabel="round",
        ylabel="seconds",
        title=f"{JOB['num_clients']} clients, {JOB['clients_per_round']} per round: round time",
    )
    names = ["p50", "p90", "p99"]
    width = 0.38
    for k, (label, key) in enumerate(
        (("the function's own time", "function_ms"), ("as the clients saw it", "client_ms"))
    ):
        right.bar(
            [i + (k - 0.5) * width for i in range(3)], [result["latency"][key][n] for n in names], width, label=label
        )
    right.set_xticks(range(3), names)
    right.set(ylabel="ms per request", title=f"{result['requests_per_second']:.0f} requests/s served")
    right.legend()
    save(fig, png)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ.setdefault("FL_CLIENTS_PER_PROCESS", str(PER_PROCESS))
    s = run_job(JOB)
    inv, phases = s["invocations"], s["phases"]
    job_seconds = phases["clients_until_first_round"] + phases["training"]  # from the job's creation to its end
    result = {
        "workload": "MNIST iid, 1,000 clients (250 per process), 100 per round, 1 local epoch, 5 rounds, batch 50",
        "cpu_count": os.cpu_count(),
        "completed_rounds": s["rounds_completed"],
        "test_accuracy": s["test_accuracy"],
        "wall_seconds": s["wall_seconds"],
        "joining_seconds": phases["clients_until_first_round"],  # 1,000 registers and joins until round 1
        "training_seconds": s["training_seconds"],
        "round_seconds": [round(r, 1) for r in s["round_seconds"]],
        "requests": inv["total"],
        "requests_by_action": inv["by_action"],
        "requests_per_second": round(inv["total"] / job_seconds, 1),
        "billed_seconds": inv["billed_seconds"],  # local durations on a loaded machine (make bench-cost)
        "latency": {"function_ms": inv["duration_ms"], "client_ms": inv["client_latency_ms"]},
        "calls_per_client_round": inv["per_client_round"],
        "peak_memory_mb": s["memory"]["peak_pss_mb"],
        "memory_target_mb": MEMORY_TARGET_MB,
        "memory": s["memory"],
        "phases": phases,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    png = write_results(OUT, result, draw, result)
    print(
        f"\n{result['completed_rounds']} rounds in {result['training_seconds']:.0f} s (rounds "
        f"{result['round_seconds']}), {result['requests']} requests at {result['requests_per_second']} a second, "
        f"function p50/p99 {inv['duration_ms']['p50']}/{inv['duration_ms']['p99']} ms, peak memory "
        f"{result['peak_memory_mb']:.0f} MB; {OUT}, {png}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
