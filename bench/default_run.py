"""``make bench-default``: the default ``make run`` job, several times, as medians.

The job is exactly what ``make run`` starts with no settings (MNIST, 20 clients,
10 per round, 10 local epochs, 10 rounds) on a fresh local stack each time.
Writes bench/results/default_run.json: per run and as medians, the final test
accuracy, wall and training seconds, per-round seconds and the peak memory
(PSS) of the operator and the client processes. ``BENCH_RUNS`` sets the count.
First, in the same sitting, it measures the floor (bench/floor.py: the same
training as a plain PyTorch loop with no FL system) and reports the runs' wall
and training time as ratios to it. Then each default run is followed by Flower's
simulation of the same work (bench/flower_sim.py), in turn, so the machine's
drift falls on both alike; Flower runs in its own environment,
``bench/.flower-venv``, made here on first use (``flwr[simulation]`` from PyPI;
torch and this project from the product's environment), and ``BENCH_FLOWER=0``
leaves it out.
"""

from __future__ import annotations

import json
import os
import signal
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from floor import run as floor_run

from flcli.plots import pyplot, save, write_results
from flcli.run import _exit_on_sigterm, env_names

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "results" / "default_run.json"
FLOWER_VENV = BENCH / ".flower-venv"
FLOWER_REQUIREMENT = "flwr[simulation]>=1.13,<2"

# What the original system gave on this machine, for reference (not re-run here).
ORIGINAL = {"test_accuracy": 0.9754, "wall_seconds": 949, "memory_mb": 18 * 1024}


def flower_python() -> Path:
    """The benchmark's own environment for Flower: made once, never the product's ``.venv``.

    It sees the product's packages (torch, numpy, this project's code) through a ``.pth``
    file placed after its own, so only Flower and Ray are installed into it.
    """
    python = FLOWER_VENV / "bin" / "python"
    if not (FLOWER_VENV / ".installed").exists():
        print(f"=== installing {FLOWER_REQUIREMENT} into {FLOWER_VENV} (once) ===", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
        own = subprocess.run(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(own, "zz-product.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", FLOWER_REQUIREMENT], check=True)
        (FLOWER_VENV / ".installed").touch()
    return python


def flower_run(python: Path) -> dict:
    """One run of Flower's simulation of the default job, in its own process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.run(
        [str(python), str(BENCH / "flower_sim.py")], env=env, capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Flower's simulation failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_run() -> dict:
    """``make run`` with its defaults, as a user runs it: its own process (whose memory is counted, not
    this one's, which holds the floor's torch), any job setting in this environment left out; its
    summary.json."""
    with tempfile.TemporaryDirectory() as results:
        child = {k: v for k, v in os.environ.items() if k not in env_names()}
        subprocess.run([sys.executable, "-m", "flcli.run"], env={**child, "FL_RESULTS_DIR": results}, check=True)
        return json.loads((Path(results) / "latest" / "summary.json").read_text())


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    count = int(os.environ.get("BENCH_RUNS", "3"))
    print("=== the floor: the same training as a plain PyTorch loop, no FL system (bench/floor.py) ===", flush=True)
    floor = floor_run()
    print(f"floor: {floor['seconds']} s, test accuracy {100 * floor['test_accuracy']:.2f} %", flush=True)
    flower = flower_python() if os.environ.get("BENCH_FLOWER", "1") != "0" else None
    runs, flower_runs = [], []
    for i in range(count):
        print(f"\n=== default run {i + 1} ===", flush=True)
        s = make_run()
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
                "core_seconds_per_round": s["cpu"]["core_seconds_per_round"],
            }
        )
        if flower is not None:
            print(f"\n=== Flower's simulation of the same work, run {i + 1} ===", flush=True)
            flower_runs.append(flower_run(flower))
            print(json.dumps(flower_runs[-1]), flush=True)

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
        **(flower_summary(flower_runs, med("wall_seconds"), floor["seconds"]) if flower_runs else {}),
        "original_system_here": ORIGINAL,
        "wall_time_vs_original": round(med("wall_seconds") / ORIGINAL["wall_seconds"], 3),
        "memory_vs_original": round(med("peak_memory_mb") / ORIGINAL["memory_mb"], 3),
        "runs": runs,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    png = write_results(OUT, result, plot, result)
    print(f"results: {OUT}, {png}", flush=True)
    print(
        json.dumps(
            {
                **result["median"],
                "floor_seconds": floor["seconds"],
                "wall_vs_floor": result["wall_vs_floor"],
                "training_vs_floor": result["training_vs_floor"],
                **({"wall_vs_flower": result["wall_vs_flower"]} if flower_runs else {}),
            },
            indent=2,
        )
    )
    return 0


def plot(result: dict, path: Path) -> None:
    """Wall time of each contender (the runs as dots, the median as a bar), and the seconds of each
    round: what a reader of bench/README.md looks at first."""
    plt = pyplot()
    contenders = [("this system", [r["wall_seconds"] for r in result["runs"]], result["median"]["round_seconds"])]
    flower = result.get("flower")
    if flower:
        rounds = flower["median"]["round_seconds"]
        contenders.append(("Flower simulation", [r["seconds"] for r in flower["runs"]], rounds))
    contenders.append(("floor (plain loop)", [result["floor"]["seconds"]], result["floor"]["round_seconds"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for i, (_, walls, _rounds) in enumerate(contenders):
        left.bar(i, statistics.median(walls), color=f"C{i}", alpha=0.6)
        left.plot([i] * len(walls), walls, "ko", ms=4)
        left.annotate(f"{statistics.median(walls):.1f} s", (i, max(walls) + 4), ha="center", va="bottom")
    left.set_xticks(range(len(contenders)), [c[0] for c in contenders])
    left.set(ylabel="wall seconds (median bar, runs as dots)", title=f"default job, {result['measured_at'][:16]}")
    left.set_ylim(0, max(max(c[1]) for c in contenders) * 1.12)
    for i, (name, _, rounds) in enumerate(contenders):
        right.plot(range(1, len(rounds) + 1), rounds, "o-", color=f"C{i}", label=name)
    right.set(xlabel="round", ylabel="seconds", title="each round (medians of the runs)", ylim=(0, None))
    right.set_xticks(range(1, len(contenders[0][2]) + 1))
    right.legend(loc="lower right", fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    save(fig, path)


def flower_summary(flower_runs: list[dict], our_wall: float, floor_seconds: float) -> dict:
    """Flower's runs, their medians, and ours against them."""
    wall = statistics.median(r["seconds"] for r in flower_runs)
    return {
        "flower": {
            "median": {
                "wall_seconds": wall,
                "test_accuracy": statistics.median(r["test_accuracy"] for r in flower_runs),
                "peak_memory_mb": statistics.median(r["peak_memory_mb"] for r in flower_runs),
                "round_seconds": [
                    round(statistics.median(c), 1) for c in zip(*(r["round_seconds"] for r in flower_runs))
                ],
            },
            "wall_vs_floor": round(wall / floor_seconds, 3),
            "runs": flower_runs,
        },
        "wall_vs_flower": round(our_wall / wall, 3),
    }


if __name__ == "__main__":
    sys.exit(main())
