"""``make bench-aggregate``: one aggregation of N stored updates, its time and its memory.

For each case a job is created on the embedded database, N clients subscribe,
and N synthetic updates (distinct random tensors of the job's model) are stored
as clients' uploads are: GridFS files and update documents. Then a fresh
process runs one ``aggregate`` action through the real code path (the core's
entry point, the lease, the streamed strategy, the commit) and reports its wall
seconds and peak RSS; the RSS of the same process just before (imports done,
nothing read) is the fixed base. Cases: the MNIST CNN with N = 10, 100, 1,000
and ``resnet18`` with N = 10 and 50 under FedAvg, plus the median, which reads
block by block. Each figure is the median of ``BENCH_RUNS`` (3) aggregations of
the same stored updates. Writes bench/results/aggregate.json and aggregate.png;
``BENCH_CASES=cnn`` runs only the MNIST ones.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from flcli.devstack import ROOT, LocalStack
from flcli.plots import pyplot, save, write_results

OUT = Path(__file__).resolve().parent / "results"
ADMIN = "bench-admin"
CASES = [
    ("cnn_mnist", "fedavg", 10),
    ("cnn_mnist", "fedavg", 100),
    ("cnn_mnist", "fedavg", 1000),
    ("cnn_mnist", "median", 100),
    ("resnet18", "fedavg", 10),
    ("resnet18", "fedavg", 50),
    ("resnet18", "median", 10),
]

# Runs in a fresh process: the aggregating function's work alone, measured from inside.
# Peak RSS is the kernel's high-water mark of this process's memory (VmHWM; ru_maxrss would
# carry over the parent's from before exec).
CHILD = r"""
import json, sys, time
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
from flcore.edge import api
base = hwm()
t0 = time.perf_counter()
status, reply = api.handle("aggregate", {"job_id": sys.argv[1]}, {"Authorization": "Bearer " + sys.argv[2]})
seconds = time.perf_counter() - t0
assert status == 200 and reply["jobs"][0]["round"] == 2, (status, reply)
print(json.dumps({"seconds": seconds, "base_rss_mb": base, "peak_rss_mb": hwm()}))
"""


def _env(mongodb_url: str, db: str) -> dict:
    return {
        **os.environ,
        "MONGODB_URL": mongodb_url,
        "FL_DB_NAME": db,
        "FL_ADMIN_TOKEN": ADMIN,
        "PYTHONPATH": str(ROOT),
    }


def prepare(model: str, strategy: str, n: int) -> tuple[str, int]:
    """A running job of ``n`` clients, all picked, each with a stored update; (job id, model bytes)."""
    from flcore.domain.config import parse_config
    from flcore.edge import api
    from flcore.edge.settings import Settings
    from flcore.storage.store import connect

    admin = {"Authorization": f"Bearer {ADMIN}"}
    status, job = api.handle(
        "create_job",
        {"model": model, "strategy": strategy, "num_clients": n, "clients_per_round": n, "rounds": 2},
        admin,
    )
    assert status == 200, job
    for _ in range(n):
        status, sub = api.handle("subscribe", {"job_id": job["job_id"]}, {})
        assert status == 200, sub
    store = connect(Settings.from_env())
    doc = store.get_job(job["job_id"])
    spec = parse_config({"model": model}).model_def.spec
    rng = np.random.default_rng(0)
    base = {k: rng.standard_normal(s).astype(np.float32) * 0.05 for k, s in spec.items()}
    from flcore.shared import weights as wcodec

    size = 0
    for i, client_id in enumerate(doc["picked"]):
        blob = wcodec.encode({k: v + np.float32(i * 1e-4) for k, v in base.items()})
        size = len(blob)
        blob_id = store.blobs.put(blob, "update")
        store.add_update(
            {
                "job_id": job["job_id"],
                "round": 1,
                "client_id": client_id,
                "blob": blob_id,
                "size": len(blob),
                "sha256": f"bench-{i}",
                "num_examples": 100 + i,
                "metrics": {},
                "received_at": time.time(),
            }
        )
    return job["job_id"], size


def reopen(mongodb_url: str, db: str, job_id: str, before: dict) -> None:
    """Put the job back as it was before the aggregation (its round 1 model deleted), for another run."""
    from pymongo import MongoClient

    from flcore.storage.blobs import Blobs

    with MongoClient(mongodb_url) as client:
        models = client[db].models
        for doc in models.find({"job_id": job_id, "round": 1}):
            Blobs(client[db]).delete([doc[p]["id"] for p in ("weights", "state", "shared") if doc.get(p)])
        models.delete_many({"job_id": job_id, "round": 1})
        client[db].jobs.replace_one({"_id": job_id}, before)


def aggregate_once(mongodb_url: str, db: str, job_id: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, job_id, ADMIN],
        env=_env(mongodb_url, db),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise SystemExit(f"aggregation failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(mongodb_url: str, model: str, strategy: str, n: int, runs: int) -> dict:
    """Medians of ``runs`` aggregations of the same stored updates (the job reopened between runs)."""
    from pymongo import MongoClient

    db = "bench_" + uuid.uuid4().hex[:8]
    os.environ.update(_env(mongodb_url, db))
    t0 = time.time()
    job_id, size = prepare(model, strategy, n)
    stored = time.time() - t0
    with MongoClient(mongodb_url) as client:
        before = client[db].jobs.find_one({"_id": job_id})
    results = []
    for run in range(runs):
        if run:
            reopen(mongodb_url, db, job_id, before)
        results.append(aggregate_once(mongodb_url, db, job_id))
    result = {k: statistics.median(r[k] for r in results) for k in results[0]}
    with MongoClient(mongodb_url) as client:
        client.drop_database(db)
    model_mb = size / 2**20
    limit = 3 * model_mb + 150
    row = {
        "model": model,
        "strategy": strategy,
        "updates": n,
        "model_mb": round(model_mb, 2),
        "seconds": round(result["seconds"], 3),
        "updates_per_second": round(n / result["seconds"], 1),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "base_rss_mb": round(result["base_rss_mb"], 1),
        "memory_target_mb": round(limit, 1),
        "store_seconds": round(stored, 1),
        "runs": runs,
        "seconds_each": [round(r["seconds"], 3) for r in results],
    }
    print(
        f"{model:9s} {strategy:7s} N={n:5d}: {row['seconds']:7.2f} s ({row['updates_per_second']:7.1f} updates/s),"
        f" peak RSS {row['peak_rss_mb']:6.1f} MB (base {row['base_rss_mb']:.0f} MB; target for linear rules "
        f"{limit:.0f} MB)",
        flush=True,
    )
    return row


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for model, strategy in dict.fromkeys((r["model"], r["strategy"]) for r in rows):
        pick = [r for r in rows if r["model"] == model and r["strategy"] == strategy]
        n = [r["updates"] for r in pick]
        left.plot(n, [r["seconds"] for r in pick], "o-", label=f"{model}, {strategy}")
        right.plot(n, [r["peak_rss_mb"] for r in pick], "o-", label=f"{model}, {strategy}")
        if strategy == "fedavg":
            right.plot(n, [r["memory_target_mb"] for r in pick], ":", color="grey")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="updates aggregated (N)",
        ylabel="wall seconds",
        title="one aggregation through the real code path",
    )
    right.set(
        xscale="log",
        xlabel="updates aggregated (N)",
        ylabel="peak RSS of the aggregating process (MB)",
        title="memory (dotted: 3 x model + 150 MB)",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)


def main() -> int:
    only = os.environ.get("BENCH_CASES", "")
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    cases = [c for c in CASES if not only or c[0].startswith(only)]
    with (
        LocalStack(ROOT / "logs" / "bench-aggregate") as stack,
        tempfile.TemporaryDirectory(prefix="bench-aggregate-") as storage,
    ):
        url = stack.start_database(storage=storage)  # on disk: ResNet cases hold gigabytes
        rows = [measure(url, *case, runs=runs) for case in cases]
    result = {"measured_at": time.strftime("%Y-%m-%d %H:%M"), "cpu_count": os.cpu_count(), "runs": runs, "cases": rows}
    png = write_results(OUT / "aggregate.json", result, plot, rows)
    print(f"results: {OUT / 'aggregate.json'}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
