"""``make bench-async``: rounds without a barrier against rounds with one, on uneven devices.

The default MNIST job (20 clients, 10 local epochs) with 30 % of the clients 4x
slower (``FL_SLOW_FRACTION=0.3``, ``FL_SLOWDOWN=4``, the same clients every run),
three ways in one sitting, each a whole job through the real local stack:

- sync FedAvg, random selection (10 per round): every round waits for its slowest pick;
- sync FedAvg, ``selection: fast``: rounds pick by measured speed, with fairness;
- async (FedBuff): ``buffer_size`` K updates per model version, 10 clients training at once.

Every model (round or version) is evaluated on the test set afterwards; its time
is when it was committed, from the job's start. Reports the time to reach 98 %
test accuracy, the final accuracy, and plots accuracy against wall time.
Writes bench/results/async.json and async.png. ``BENCH_K`` sets K (default 5).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from flcli.plots import pyplot, save, write_results
from flcli.run import _exit_on_sigterm, run_job

OUT = Path(__file__).resolve().parent / "results"
TARGET = 0.98
SLOW = {"FL_SLOW_FRACTION": "0.3", "FL_SLOWDOWN": "4", "FL_SLOW_SEED": "0"}


def variants(k: int) -> list[tuple[str, dict]]:
    """(label, job settings): the same work budget, about 50 client updates each."""
    return [
        ("sync FedAvg", {"rounds": 5}),
        ("sync, fast selection", {"rounds": 5, "selection": "fast"}),
        (f"async FedBuff (K={k})", {"mode": "async", "buffer_size": k, "max_concurrency": 10, "rounds": 50 // k}),
    ]


def time_to(target: float, curve: list[tuple[float, float]]) -> float | None:
    """Seconds from the job's start until the first model at or above ``target`` was committed."""
    return next((t for t, acc in curve if acc >= target), None)


def plot(results: list[dict], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for r in results:
        t, acc = zip(*r["curve"])
        reach = f"98 % at {r['seconds_to_98']:.0f} s" if r["seconds_to_98"] is not None else "98 % not reached"
        ax.plot(t, [100 * a for a in acc], "o-", ms=3, label=f"{r['label']}: {reach}")
    ax.axhline(100 * TARGET, color="grey", ls=":", lw=1)
    ax.set(
        xlabel="wall seconds since the job started",
        ylabel="test accuracy (%)",
        ylim=(90, 100),
        title="MNIST, 20 clients, 30 % of them 4x slower",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save(fig, path)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ.update(SLOW)  # the clients inherit it
    k = int(os.environ.get("BENCH_K", "5"))
    results = []
    for label, overrides in variants(k):
        print(f"\n=== {label} ===", flush=True)
        s = run_job(overrides)
        started = s["started_at"]
        curve = [(round(r["closed_at"] - started, 1), r["test_accuracy"]) for r in s["per_round"]]
        results.append(
            {
                "label": label,
                "settings": overrides,
                "seconds_to_98": time_to(TARGET, curve),
                "final_accuracy": s["test_accuracy"],
                "models": len(curve),
                "training_seconds": s["training_seconds"],
                "wall_seconds": s["wall_seconds"],
                "curve": curve,
            }
        )
    base = results[0]["seconds_to_98"]
    for r in results:
        r["time_to_98_vs_sync"] = round(r["seconds_to_98"] / base, 2) if base and r["seconds_to_98"] else None
    doc = {"measured_at": time.strftime("%Y-%m-%d %H:%M"), "slow_clients": SLOW, "target": TARGET, "runs": results}
    write_results(OUT / "async.json", doc, plot, results)
    print(f"\n{'run':28} {'to 98 %':>9} {'ratio':>6} {'final':>7}")
    for r in results:
        to98 = f"{r['seconds_to_98']:.0f} s" if r["seconds_to_98"] is not None else "-"
        print(f"{r['label']:28} {to98:>9} {r['time_to_98_vs_sync'] or '-':>6} {100 * r['final_accuracy']:6.2f}%")
    print(f"results: {OUT / 'async.json'}, {OUT / 'async.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
