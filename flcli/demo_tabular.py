"""``make demo-tabular``: the ensemble design's own case, House Prices on three devices A, B and C.

A seeded 20 % of the houses is the test set; the rest is split into three
devices, once at random and once skewed (whole neighbourhoods to each device,
cheapest to dearest, so the three hold different kinds of houses). Every
method predicts log(1 + SalePrice) from the other columns (``Id`` left out),
on the encoding the statistics step makes, and is scored by the RMSE of log
price on the test set:

1. ``central``: the same model trained on the union of A, B and C (the ceiling);
2. ``local_A``, ``local_B``, ``local_C``: each device's model on its own rows alone;
3. ``local_ensemble``: the mean of those three models' predictions;
4. ``federated_fedavg`` (and a second strategy): federated training with the three devices as
   real client processes on the local stack, scored through the function's own ``predict``;
5. ``ridge``: ridge regression on the same encoding (its strength chosen by 5-fold
   cross-validation on the training houses), the baseline everyone knows.

Writes ``results/demo-tabular/summary.json`` and ``rmse.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from flcli import devices
from flcli.devstack import ROOT, LocalStack
from flcore.shared import modeldef, tabular
from fllocal import tables

SOURCE = ROOT.parent / "shared" / "datasets" / "house-prices" / "train.csv"
NAME = "house_prices"
TARGET = "SalePrice"
DEVICES = ("A", "B", "C")
SEED = 0
TEST_FRACTION = 0.2
# the job: measured on this file (see bench/README.md, "tabular"); every method uses the same model and epochs
JOB = {
    # every device trains on all its rows, as the central model does: the test set is the evaluation
    "data": {
        "name": NAME,
        "task": "regression",
        "target": TARGET,
        "exclude": ["Id"],
        "transform": "log1p",
        "eval_fraction": 0.0,
    },
    "model": "mlp",
    "rounds": 60,
    "local_epochs": 5,
    "batch_size": 32,
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.01,
    "num_clients": 3,
    "clients_per_round": 3,
}
# FedProx (mu 0.1) scored as FedAvg on both splits in a first sitting; SCAFFOLD corrects the drift of skewed devices
SECOND_STRATEGY = {"strategy": "scaffold"}


def load(path: Path = SOURCE) -> tuple[list[str], list[list[str]]]:
    """The file's header and rows, as text."""
    table = tables.read(tables.Source(NAME, "csv", path))
    header = list(table.columns)
    return header, [list(r) for r in zip(*table.columns.values())]


def split(header: list[str], rows: list[list[str]], seed: int = SEED) -> dict:
    """The test rows and, per split (``random``, ``skewed``), each device's rows."""
    order = np.random.default_rng(seed).permutation(len(rows))
    n_test = int(round(len(rows) * TEST_FRACTION))
    test = [rows[i] for i in sorted(order[:n_test])]
    train = [rows[i] for i in sorted(order[n_test:])]
    thirds = np.array_split(np.random.default_rng(seed + 1).permutation(len(train)), len(DEVICES))
    random_split = {d: [train[i] for i in sorted(part)] for d, part in zip(DEVICES, thirds)}
    return {"test": test, "splits": {"random": random_split, "skewed": by_neighbourhood(header, train)}}


def by_neighbourhood(header: list[str], train: list[list[str]]) -> dict[str, list[list[str]]]:
    """Whole neighbourhoods to each device, in order of their median price, about a third of the houses each."""
    hood, price = header.index("Neighborhood"), header.index(TARGET)
    groups: dict[str, list[list[str]]] = {}
    for row in train:
        groups.setdefault(row[hood], []).append(row)
    ordered = sorted(groups, key=lambda g: (float(np.median([float(r[price]) for r in groups[g]])), g))
    out: dict[str, list[list[str]]] = {d: [] for d in DEVICES}
    per_device = len(train) / len(DEVICES)
    device = 0
    for g in ordered:
        held = len(out[DEVICES[device]])
        # the next device starts when this group would take this one further past a third than short of it
        if device < len(DEVICES) - 1 and held and held + len(groups[g]) - per_device > per_device - held:
            device += 1
        out[DEVICES[device]].extend(groups[g])
    return out


# in this process: the same encoding, model and epochs as the federated job -----------------
def columns(header: list[str], rows: list[list[str]]) -> dict[str, list[str]]:
    return {name: [r[i] for r in rows] for i, name in enumerate(header)}


def encoded(encoding: dict, header: list[str], rows: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    table = columns(header, rows)
    x = tabular.encode_features(encoding, table, len(rows))
    y, keep = tabular.encode_target(encoding, table[TARGET])
    return x[keep], y[keep]


def train_model(encoding: dict, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0):
    """The job's model trained on (x, y) for ``epochs`` epochs with the job's settings."""
    import torch

    from clients import trainer
    from fllocal import models

    mdef = modeldef.for_job(JOB["model"], NAME, {"input_width": encoding["width"], "outputs": encoding["outputs"]})
    model = models.build(mdef, seed=seed)
    trainer.train(
        model,
        torch.from_numpy(x),
        torch.from_numpy(y),
        epochs=epochs,
        batch_size=JOB["batch_size"],
        lr=JOB["lr"],
        momentum=JOB["momentum"],
        weight_decay=JOB["weight_decay"],
        loss="mse",
        seed=seed,
    )
    return model


def predict_log(encoding: dict, model, x: np.ndarray) -> np.ndarray:
    """log(1 + price) predicted for encoded rows."""
    import torch

    from clients import trainer

    return tabular.predictions(encoding, trainer.outputs(model, torch.from_numpy(x)).numpy())["learnt"]


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge regression's weights and intercept (the intercept not penalised)."""
    mx, my = x.mean(axis=0), y.mean()
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return w, float(my - mx @ w)


def ridge_cv(x: np.ndarray, y: np.ndarray, seed: int = SEED) -> float:
    """The ridge strength with the lowest 5-fold cross-validated RMSE on the training rows."""
    folds = np.array_split(np.random.default_rng(seed).permutation(len(x)), 5)
    best = (math.inf, 1.0)
    for alpha in (0.1, 0.3, 1, 3, 10, 30, 100, 300):
        errs = []
        for k in range(5):
            hold = folds[k]
            fit = np.concatenate([folds[j] for j in range(5) if j != k])
            w, b = ridge(x[fit], y[fit], alpha)
            errs.append(np.mean((x[hold] @ w + b - y[hold]) ** 2))
        best = min(best, (float(np.sqrt(np.mean(errs))), alpha))
    return best[1]


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(truth)) ** 2)))


def baselines(header: list[str], parts: dict[str, list[list[str]]], test: list[list[str]], encoding: dict) -> dict:
    """Every method but the federated one, on the test rows, with ``encoding`` (the federated job's)."""
    target = encoding["target"]
    xt, yt = encoded(encoding, header, test)
    truth = yt * target["std"] + target["mean"]
    # the union in the file's order, so the central model and ridge (its cross-validation folds) are the
    # same whichever way the devices split it
    union = sorted((r for rows in parts.values() for r in rows), key=lambda r: int(r[header.index("Id")]))
    xu, yu = encoded(encoding, header, union)
    epochs = JOB["rounds"] * JOB["local_epochs"]
    out = {"central": rmse(predict_log(encoding, train_model(encoding, xu, yu, epochs), xt), truth)}
    local_preds = []
    for name, rows in parts.items():
        xd, yd = encoded(encoding, header, rows)
        local_preds.append(predict_log(encoding, train_model(encoding, xd, yd, epochs), xt))
        out[f"local_{name}"] = rmse(local_preds[-1], truth)
    out["local_ensemble"] = rmse(np.mean(local_preds, axis=0), truth)
    ylog = yu * target["std"] + target["mean"]
    alpha = ridge_cv(xu, ylog)
    w, b = ridge(xu, ylog, alpha)
    out["ridge"] = rmse(xt @ w + b, truth)
    out["ridge_alpha"] = alpha
    return out


# on the local stack: the devices as real client processes -----------------------------------
def federated(
    header: list[str], parts: dict, test: list[list[str]], folder: Path, extra: dict, timeout: float = 600
) -> dict:
    """Run the job with the devices as client processes; the test RMSE of log price through ``predict``."""
    from flcli.evaluate import evaluate_csv
    from flcli.operator import Operator
    from flcli.run import start_stack

    configs = {name: devices.write_device(folder / name, NAME, header, rows) for name, rows in parts.items()}
    with LocalStack(folder / "logs") as stack:
        url = start_stack(stack)
        op = Operator(url)
        job_id = op.call("create_job", {**JOB, **extra})["job_id"]
        started = time.perf_counter()
        with devices.running(url, configs, folder / "state", folder / "logs"):
            status = op.follow(job_id, timeout)
        seconds = time.perf_counter() - started
        test_file = devices.write_device(folder / "operator", NAME, header, test).parent / f"{NAME}.csv"
        scored = evaluate_csv(op, job_id, test_file)  # as `flctl jobs evaluate` scores a file of your own
        encoding = op.status(job_id)["encoding"]
    last = status["history"][-1]["metrics"] if status["history"] else {}
    per_client = status["history"][-1].get("per_client", {}) if status["history"] else {}
    return {
        "rmse": scored["test_rmse"],
        "rmse_dollars": scored["test_rmse_units"],
        "state": status["state"],
        "rounds": len(status["history"]),
        "seconds": round(seconds, 1),
        "federated_eval_rmse": last.get("eval_rmse"),
        "devices_eval": per_client,
        "encoding": encoding,
    }


def plot(results: dict, path: Path) -> None:
    """One group of bars per split: every method's test RMSE of log price."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in next(iter(results.values())) if isinstance(results[next(iter(results))][m], float)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(results)
    for i, (split_name, scores) in enumerate(results.items()):
        xs = np.arange(len(methods)) + i * width
        ax.bar(xs, [scores[m] for m in methods], width, label=split_name)
    ax.set_xticks(np.arange(len(methods)) + width * (len(results) - 1) / 2)
    ax.set_xticklabels(methods, rotation=30, ha="right")
    ax.set_ylabel("test RMSE of log(1 + SalePrice)")
    ax.set_title("House Prices on three devices: lower is better")
    ax.legend(title="split")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", default=str(ROOT / "results" / "demo-tabular"))
    p.add_argument("--rounds", type=int, default=JOB["rounds"])
    args = p.parse_args(argv)
    JOB["rounds"] = args.rounds
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    header, rows = load()
    data = split(header, rows)
    results: dict[str, dict] = {}
    details: dict[str, dict] = {}
    for split_name, parts in data["splits"].items():
        print(f"{split_name}: devices hold {', '.join(f'{d} {len(r)}' for d, r in parts.items())} houses", flush=True)
        scores = {}
        for tag, extra in (("fedavg", {}), (SECOND_STRATEGY["strategy"], SECOND_STRATEGY)):
            run = federated(header, parts, data["test"], out / split_name / tag, extra)
            scores[f"federated_{tag}"] = run["rmse"]
            details[f"{split_name}/{tag}"] = run
        # the other methods on the encoding the federated job's statistics step made
        encoding = details[f"{split_name}/fedavg"].pop("encoding")
        kinds = [f["kind"] for f in encoding["features"]]
        details[f"{split_name}/encoding"] = {
            "numeric": kinds.count("numeric"),
            "categorical": kinds.count("categorical"),
            "inputs": encoding["width"],
        }
        scores.update(baselines(header, parts, data["test"], encoding))
        details[f"{split_name}/{SECOND_STRATEGY['strategy']}"].pop("encoding")
        alpha = scores.pop("ridge_alpha")
        first = ["central", *(f"local_{d}" for d in DEVICES), "local_ensemble"]
        scores = {k: scores[k] for k in [*first, *sorted(k for k in scores if k.startswith("federated_")), "ridge"]}
        results[split_name] = {k: round(v, 4) for k, v in scores.items()}
        details[f"{split_name}/ridge_alpha"] = alpha
        print(json.dumps(results[split_name]), flush=True)
    summary = {
        "data": str(SOURCE.relative_to(ROOT.parent)),
        "test_houses": len(data["test"]),
        "metric": "test RMSE of log(1 + SalePrice)",
        "job": JOB,
        "second_strategy": SECOND_STRATEGY,
        "rmse": results,
        "runs": details,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(results, out / "rmse.png")
    print(f"wrote {out / 'summary.json'} and {out / 'rmse.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
