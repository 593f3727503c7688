"""``make bench-predict``: the function's predictions from the global model vs the ensemble of the
clients' models, on the MNIST test set, after the default job on iid and shards:2 data; and the
function's time per batch of 64 images. Results in bench/results/predict.json and predict.png.

Each run is the default ``make run`` job on its own local stack; the predictions go through the real
handler under serverless-offline over HTTP, 64 images a call, as a user would send them.
"""

from __future__ import annotations

import secrets
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from clients.transport import make_transport
from flcli.devstack import ROOT, LocalStack
from flcli.operator import Operator
from flcli.plots import pyplot, save, write_results
from flcli.run import create_job, running_clients, start_stack
from fllocal import data

BATCH = 64
OUT = ROOT / "bench" / "results"


def accuracy(transport, token, job_id, images, labels, mode) -> tuple[float, list[float]]:
    correct, times = 0, []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH, 0].tolist()
        t0 = time.perf_counter()
        reply = transport.call("predict", {"job_id": job_id, "inputs": batch, "mode": mode}, token=token)
        times.append(time.perf_counter() - t0)
        correct += int((np.array(reply["classes"]) == labels[start : start + BATCH]).sum())
    return correct / len(images), times


def run(partition: str, images, labels) -> dict:
    token = secrets.token_urlsafe(16)
    with LocalStack(ROOT / "logs" / "bench-predict", env={"FL_ADMIN_TOKEN": token}) as stack:
        op = Operator(start_stack(stack), token)
        job_id, cfg = create_job(op, {"partition": partition})
        with running_clients(stack.base_url, job_id, cfg):
            op.follow(job_id, timeout=3600)
        transport = make_transport(stack.base_url)
        out = {"partition": partition, "job_id": job_id}
        for mode in ("global", "ensemble"):
            acc, times = accuracy(transport, token, job_id, images, labels, mode)
            out[mode] = {
                "test_accuracy": acc,
                "seconds_per_batch_median": statistics.median(times),
                "seconds_per_batch_p90": float(np.percentile(times, 90)),
                "batches": len(times),
            }
            print(
                f"{partition}: {mode} {100 * acc:.2f} %, {1000 * statistics.median(times):.0f} ms per batch of {BATCH}",
                flush=True,
            )
    return out


def plot(results: list[dict], path: Path) -> None:
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    xs = np.arange(len(results))
    for i, mode in enumerate(("global", "ensemble")):
        left.bar(xs + (i - 0.5) * 0.35, [100 * r[mode]["test_accuracy"] for r in results], 0.35, label=mode)
        right.bar(
            xs + (i - 0.5) * 0.35, [1000 * r[mode]["seconds_per_batch_median"] for r in results], 0.35, label=mode
        )
    for ax, title, unit in (
        (left, "test accuracy after the default job", "%"),
        (right, f"function time per batch of {BATCH} (median)", "ms"),
    ):
        ax.set_xticks(xs, [r["partition"] for r in results])
        ax.set(title=title, ylabel=unit)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    left.set_ylim(min(100 * r[m]["test_accuracy"] for r in results for m in ("global", "ensemble")) - 5, 100)
    save(fig, path)


def main() -> int:
    data.prepare("mnist")
    images, labels = data.load_raw("mnist", train=False)
    results = [run(p, images, labels) for p in ("iid", "shards:2")]
    summary = {
        "batch": BATCH,
        "test_images": len(images),
        "runs": results,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_results(OUT / "predict.json", summary, plot, results)
    print(f"wrote {OUT / 'predict.json'} and predict.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
