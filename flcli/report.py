"""What a finished run leaves behind: test accuracy, summary.json, an accuracy plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from clients import trainer
from flcli.plots import pyplot, save
from flcore.shared.datasets import DATASET_MODELS
from fllocal import data, models


def evaluate_on_test_set(dataset: str, weights: dict, model_spec: object = None) -> dict:
    """Centralised evaluation on the held-out test split (10,000 images for MNIST) of the job's
    ``model`` (a preset name or layer list; default: the data set's usual model)."""
    model = models.build(model_spec or DATASET_MODELS[dataset], dataset)
    models.set_weights(model, weights)
    x, y = data.load_split(dataset, train=False)
    return {**trainer.evaluate(model, x, y), "examples": len(x)}


def plot(summary: dict, path: Path) -> None:
    """Accuracy per round: the whole range, and a zoom on where the curves end up."""
    plt = pyplot()

    rows = summary["per_round"]
    rounds = [r["round"] for r in rows]
    test = [100 * r["test_accuracy"] for r in rows]
    fed = [None if r.get("federated_eval_accuracy") is None else 100 * r["federated_eval_accuracy"] for r in rows]
    cfg = summary["config"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax in axes:
        ax.plot(rounds, test, "o-", label="global model after the round, test set")
        if any(v is not None for v in fed):
            ax.plot(rounds, fed, "s--", alpha=0.8, label="model received in the round, clients' held-out data")
        ax.set(xlabel="round", ylabel="accuracy (%)", xticks=rounds)
        ax.grid(alpha=0.3)
    tail = test[len(test) // 2 :] + [v for v in fed[len(fed) // 2 :] if v is not None]
    axes[1].set_ylim(max(0.0, min(tail) - 1.0), min(100.0, max(tail) + 0.5))
    axes[1].set_title("zoom on the later rounds")
    axes[0].set_title(
        f"{cfg['dataset']}: {cfg['num_clients']} clients, {cfg['clients_per_round']} per round, "
        f"{cfg['local_epochs']} local epochs"
    )
    axes[0].legend(loc="lower right", fontsize=8)
    save(fig, path)


def write(summary: dict, results_dir: Path) -> Path:
    """Write ``results/<job_id>/`` and mirror it to ``results/latest/``."""
    out = results_dir / summary["job_id"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, out / "accuracy.png")
    latest = results_dir / "latest"
    if latest.exists():
        shutil.rmtree(latest)
    shutil.copytree(out, latest)
    return out
