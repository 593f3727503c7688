"""``make bench-default``: the default ``make run`` job, several times, as medians.

The job is exactly what ``make run`` starts with no settings (MNIST, 20 clients,
10 per round, 10 local epochs, 10 rounds) on a fresh local stack each time.
Writes bench/results/default_run.json: per run and as medians, the final test
accuracy, wall and training seconds, per-round seconds and the peak memory
(PSS) of the operator and the client processes. ``BENCH_RUNS`` sets the count.
First, in the same sitting, it measures the floor (bench/floor.py: the same
training as a plain PyTorch loop with no FL system) and reports the runs' wall
and training time as ratios to it.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from floor import run as floor_run

from flcli.run import _exit_on_sigterm, run_job

OUT = Path(__file__).resolve().parent / "results" / "default_run.json"

# What the original system gave on this machine, for reference (not re-run here).
ORIGINAL = {"test_accuracy": 0.9754, "wall_seconds": 949, "memory_mb": 18 * 1024}


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    count = int(os.environ.get("BENCH_RUNS", "3"))
    print("=== the floor: the same training as a plain PyTorch loop, no FL system (bench/floor.py) ===", flush=True)
    floor = floor_run()
    print(f"floor: {floor['seconds']} s, test accuracy {100 * floor['test_accuracy']:.2f} %", flush=True)
    runs = []
    for i in range(count):
        print(f"\n=== default run {i + 1} ===", flush=True)
        s = run_job({})
        runs.append(
            {
                "test_accuracy": s["test_accuracy"],
                "wall_seconds": s["wall_seconds"],
                "training_seconds": s["training_seconds"],
                "round_seconds": s["round_seconds"],
                "overhead_seconds": s["phases"]["overhead"],
                "phases": s["phases"],
                "invocations": s["invocations"],
                "peak_memory_mb": s["memory"]["peak_pss_mb"],
            }
        )

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    rounds = [statistics.median(col) for col in zip(*(r["round_seconds"] for r in runs))]
    result = {
        "workload": "make run defaults: MNIST iid, 20 clients, 10 per round, 10 local epochs, 10 rounds, batch 50",
        "cpu_count": os.cpu_count(),
        "median": {
            "test_accuracy": med("test_accuracy"),
            "wall_seconds": med("wall_seconds"),
            "training_seconds": med("training_seconds"),
            "overhead_seconds": med("overhead_seconds"),
            "round_seconds": [round(x, 1) for x in rounds],
            "peak_memory_mb": med("peak_memory_mb"),
        },
        "floor": {k: v for k, v in floor.items() if k != "settings"},
        # the default run against the same training with no FL system, measured in this sitting
        "wall_vs_floor": round(med("wall_seconds") / floor["seconds"], 3),
        "training_vs_floor": round(med("training_seconds") / floor["seconds"], 3),
        "original_system_here": ORIGINAL,
        "wall_time_vs_original": round(med("wall_seconds") / ORIGINAL["wall_seconds"], 3),
        "memory_vs_original": round(med("peak_memory_mb") / ORIGINAL["memory_mb"], 3),
        "runs": runs,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                **result["median"],
                "floor_seconds": floor["seconds"],
                "wall_vs_floor": result["wall_vs_floor"],
                "training_vs_floor": result["training_vs_floor"],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
