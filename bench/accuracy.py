"""``make bench-accuracy``: learning quality on the default workload, IID and not.

Every run is a whole job through the real stack (serverless-offline, the
embedded database, 20 client processes): 20 clients, 10 per round, 10 local
epochs, 10 rounds. Writes bench/results/accuracy.json and per-round curves
(bench/results/accuracy.png). ``BENCH_ONLY=mnist-shards,mnist-iid:fedavg`` runs a
subset (scenarios, or scenario:variant) and keeps the other results.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from flcli.plots import pyplot, save
from flcli.run import _exit_on_sigterm, run_job

OUT = Path(__file__).resolve().parent / "results"
TRAINING = ("lr", "momentum", "lr_decay", "batch_size", "augment_shift", "augment_flip")

# Strategy variants by label: (strategy, job settings over the defaults). The
# settings were chosen in a short search on the shards split (FedProx mu 0.1 beat
# 1.0; FedAvgM momentum 0.5 and 0.7 beat FedProx; SCAFFOLD needs none) and, for
# Fashion-MNIST, whose curve still rises at round 10 with lr 0.01, a larger client
# step.
VARIANTS = {
    "fedavg": ("fedavg", {}),
    "fedavg-lr0.02": ("fedavg", {"lr": 0.02}),
    "fedavg-decay0.9": ("fedavg", {"lr_decay": 0.9}),
    "fedprox": ("fedprox", {"proximal_mu": 0.1}),
    "fedavgm": ("fedavgm", {"server_momentum": 0.5}),
    "fedavgm-0.7": ("fedavgm", {"server_momentum": 0.7}),
    "fedrs": ("fedrs", {"fedrs_alpha": 0.5}),
    "scaffold": ("scaffold", {}),
    "scaffold-decay": ("scaffold", {"lr_decay": 0.8}),
}
# (scenario, dataset, partition, variants, target on the test set after 10 rounds)
SCENARIOS = [
    ("mnist-iid", "mnist", "iid", ["fedavg"], 0.99),
    (
        "mnist-shards",
        "mnist",
        "shards:2",
        ["fedavg", "fedprox", "fedavgm", "fedavgm-0.7", "fedrs", "scaffold", "scaffold-decay"],
        0.97,
    ),
    ("mnist-dirichlet", "mnist", "dirichlet:0.5", ["fedavg", "fedavgm", "fedrs"], None),
    ("fashionmnist-iid", "fashionmnist", "iid", ["fedavg", "fedavg-lr0.02", "fedavgm", "fedavg-decay0.9"], 0.90),
]


def plot(results: list[dict], path: Path) -> None:
    plt = pyplot()

    scenarios = list(dict.fromkeys(r["scenario"] for r in results))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.6 * len(scenarios), 4), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], scenarios):
        for r in (r for r in results if r["scenario"] == name):
            ax.plot(
                range(1, len(r["per_round_test_accuracy"]) + 1),
                [100 * a for a in r["per_round_test_accuracy"]],
                "o-",
                ms=3,
                label=f"{r['label']} ({100 * r['test_accuracy']:.2f}%)",
            )
        target = next((s[4] for s in SCENARIOS if s[0] == name), None)  # today's target, not a run's
        if target:
            ax.axhline(100 * target, color="grey", ls=":", lw=1, label=f"target {100 * target:.1f}%")
        ax.set(title=name, xlabel="round", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    save(fig, path)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    only = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "accuracy.json"
    results = [r for r in (json.loads(path.read_text())["runs"] if path.exists() else []) if "label" in r]
    for name, dataset, partition, labels, target in SCENARIOS:
        for label in labels:
            if only and name not in only and f"{name}:{label}" not in only:
                continue
            strategy, extra = VARIANTS[label]
            print(f"\n=== {name}: {label} ===", flush=True)
            summary = run_job({"dataset": dataset, "partition": partition, "strategy": strategy, **extra})
            results = [r for r in results if (r["scenario"], r["label"]) != (name, label)]
            results.append(
                {
                    "scenario": name,
                    "dataset": dataset,
                    "partition": partition,
                    "label": label,
                    "strategy": strategy,
                    "settings": extra,
                    "target": target,
                    # what it trained with: the data set's defaults then (DATASET_DEFAULTS), and extra
                    "training": {k: summary["config"][k] for k in TRAINING if k in summary["config"]},
                    "test_accuracy": summary["test_accuracy"],
                    "per_round_test_accuracy": [r["test_accuracy"] for r in summary["per_round"]],
                    "per_round_federated_eval": [r["federated_eval_accuracy"] for r in summary["per_round"]],
                    "training_seconds": summary["training_seconds"],
                    "wall_seconds": summary["wall_seconds"],
                    "peak_memory_mb": summary["memory"]["peak_pss_mb"],
                    "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
            order = {(s[0], label): i for i, s in enumerate(SCENARIOS) for label in s[3]}
            results.sort(key=lambda r: order.get((r["scenario"], r["label"]), 99))
            path.write_text(
                json.dumps(
                    {
                        "workload": "20 clients, 10 per round, 10 local epochs, 10 rounds, "
                        "batch 50, clients train on 90 % of their share; each run's "
                        "training settings in 'training' (runs without it: SGD lr 0.01 "
                        "momentum 0.5, no augmentation)",
                        "runs": results,
                    },
                    indent=2,
                )
                + "\n"
            )
            plot(results, OUT / "accuracy.png")
    print(
        "\n"
        + "\n".join(
            f"{r['scenario']:18s} {r['label']:12s} {100 * r['test_accuracy']:6.2f}%"
            + (f"  (target {100 * r['target']:.1f}%)" if r["target"] else "")
            for r in results
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
