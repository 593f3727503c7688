"""A job's progress as a picture, from its status alone (no data set, no torch)."""

from __future__ import annotations

import json
from pathlib import Path


def pyplot():
    """matplotlib's pyplot, drawing to files (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    """Lay out, write and free a figure: how every plot here ends."""
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)


def write_results(json_path: Path, result: dict, draw, *args) -> Path:
    """A benchmark's figures as JSON and, beside it, its plot (``draw(*args, png_path)``); the PNG's path."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    png = json_path.with_suffix(".png")
    draw(*args, png)
    return png


def plot_history(status: dict, path: Path) -> None:
    """The federated evaluation (accuracy, or RMSE for a regression) and training loss per round, with the
    rounds where rules fired or settings changed; a legend names only what is drawn."""
    plt = pyplot()

    history = status.get("history", [])
    rounds = [h["round"] for h in history]
    regression = any("eval_rmse" in h["metrics"] for h in history)
    if regression:
        score = [h["metrics"].get("eval_rmse") for h in history]
        label, unit, title = "federated RMSE of the model received (trained scale)", "RMSE", "error"
    else:
        score = [100 * h["metrics"]["eval_accuracy"] if "eval_accuracy" in h["metrics"] else None for h in history]
        label, unit, title = "federated accuracy of the model received", "accuracy (%)", "accuracy"
    loss = [h["metrics"].get("train_loss") for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    left.plot(rounds, score, "o-", label=label)
    left.set(xlabel="round", ylabel=unit, title=f"{status.get('name') or status['job_id']}: {title}")
    right.plot(rounds, loss, "s-", color="tab:orange", label="training loss")
    right.set(xlabel="round", ylabel="loss", title="training loss")
    fired = [h["round"] for h in history if h.get("rules")]
    for i, rnd in enumerate(fired):
        left.axvline(rnd, color="tab:red", alpha=0.3, label="a rule fired" if i == 0 else None)
    for i, change in enumerate(status.get("changes", [])):
        right.axvline(change["round"] - 0.5, color="tab:green", alpha=0.4, label="settings changed" if i == 0 else None)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if rounds:
            ax.set_xticks(rounds if len(rounds) <= 20 else rounds[:: max(1, len(rounds) // 20)])
    left.legend(loc="upper right" if regression else "lower right", fontsize=8)
    right.legend(loc="upper right", fontsize=8)
    save(fig, path)
