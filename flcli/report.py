"""What a finished run leaves behind: test accuracy, summary.json, an accuracy plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from clients import trainer
from flcore import data, models
from flcore.specs import DATASET_MODELS


def evaluate_on_test_set(dataset: str, weights: dict) -> dict:
    """Centralised evaluation on the held-out test split (10,000 images for MNIST)."""
    model = models.build(DATASET_MODELS[dataset])
    models.set_weights(model, weights)
    x, y = data.load_split(dataset, train=False)
    return {**trainer.evaluate(model, x, y), "examples": len(x)}


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in summary["per_round"]]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(rounds, [100 * r["test_accuracy"] for r in summary["per_round"]], "o-",
            label="global model, test set")
    fed = [r.get("federated_eval_accuracy") for r in summary["per_round"]]
    if any(v is not None for v in fed):
        ax.plot(rounds, [None if v is None else 100 * v for v in fed], "s--", alpha=0.8,
                label="received model, clients' held-out data")
    cfg = summary["config"]
    ax.set(xlabel="round", ylabel="accuracy (%)", xticks=rounds,
           title=f"{cfg['dataset']}: {cfg['num_clients']} clients, {cfg['clients_per_round']} per round, "
                 f"{cfg['local_epochs']} local epochs")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
