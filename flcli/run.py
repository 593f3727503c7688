"""``make run``: a whole federated training on this machine, then its report.

Starts what is missing (the embedded database unless ``MONGODB_URL`` is set,
the real handler under serverless-offline), creates the job, starts the
clients with ``scripts/start_clients_aws.sh``, follows the rounds, evaluates
every round's global model on the test set, writes ``results/<job_id>/`` and
``results/latest/``, and stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from flcli.devstack import ROOT, LocalStack, free_port
from flcli.memory import PeakMemory
from flcli.operator import Operator
from flcore import data, settings

# FL_* setting -> (job field, type)
ENV_OVERRIDES = {
    "FL_DATASET": ("dataset", str), "FL_CLIENTS": ("num_clients", int),
    "FL_CLIENTS_PER_ROUND": ("clients_per_round", int), "FL_ROUNDS": ("rounds", int),
    "FL_LOCAL_EPOCHS": ("local_epochs", int), "FL_BATCH_SIZE": ("batch_size", int), "FL_LR": ("lr", float),
    "FL_MOMENTUM": ("momentum", float), "FL_SEED": ("seed", int), "FL_ROUND_TIMEOUT": ("round_timeout_s", float),
    "FL_MAX_TRAIN_EXAMPLES": ("max_train_examples", int), "FL_PARTITION": ("partition", str),
    "FL_STRATEGY": ("strategy", str), "FL_TARGET_ACCURACY": ("target_accuracy", float),
    "FL_MIN_CLIENTS": ("min_clients", int), "FL_LR_DECAY": ("lr_decay", float),
    "FL_PROXIMAL_MU": ("proximal_mu", float), "FL_SERVER_LR": ("server_lr", float),
    "FL_SERVER_MOMENTUM": ("server_momentum", float), "FL_TRAIN_FRACTION": ("train_fraction", float),
    "FL_FEDRS_ALPHA": ("fedrs_alpha", float),
}


def job_overrides() -> dict:
    out = {}
    for name, (field, kind) in ENV_OVERRIDES.items():
        value = settings.get(name).strip()
        if value:
            out[field] = kind(value.lower() if kind is str else value)
    return out


def _pids(pid_file: Path) -> list[int]:
    try:
        return [int(p) for p in pid_file.read_text().split()]
    except (OSError, ValueError):
        return []


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so everything started is stopped


def run_job(overrides: dict, results_dir: Path | None = None) -> dict:
    """Run one job on a fresh local stack; its summary (written to ``results_dir`` if given)."""
    t0 = time.time()
    dataset = overrides.get("dataset", "mnist")
    token = settings.get("FL_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    print(f"preparing {dataset} in {data.data_dir()} ...", flush=True)
    data.prepare(dataset)

    with LocalStack(ROOT / "logs", env={"FL_ADMIN_TOKEN": token}) as stack:
        mongodb_url = settings.get("MONGODB_URL") or stack.start_database()
        base_url = stack.start_function(mongodb_url, http_port=free_port(), lambda_port=free_port())
        print(f"function at {base_url} (database {mongodb_url.split('@')[-1]})", flush=True)
        op = Operator(base_url, token)
        # No initial weights: the clients build the job's seeded initialisation, so
        # this process imports torch only after training, for the evaluation.
        job = op.start_job(overrides, initial_weights=False)
        job_id, cfg = job["job_id"], job["config"]
        print(f"job {job_id}: {cfg['dataset']} ({cfg['partition']}, {cfg['strategy']}), {cfg['num_clients']} "
              f"clients, {cfg['clients_per_round']} per round, {cfg['local_epochs']} local epochs, "
              f"{cfg['rounds']} rounds", flush=True)
        pid_file = Path(settings.get("FL_RUN_DIR", str(ROOT / "run"))) / "clients_aws.pid"
        env = {**os.environ, "BASE_URL_AWS": base_url, "FL_PRELOAD": dataset,
               "FL_STATE_DIR": str(ROOT / ".fl" / "state" / job_id), "PYTHON": sys.executable}
        subprocess.run([str(ROOT / "scripts" / "start_clients_aws.sh"), str(cfg["num_clients"])], env=env,
                       check=True, cwd=ROOT)
        try:
            with PeakMemory(lambda: [os.getpid(), *_pids(pid_file)]) as mem:
                final = op.follow(job_id, timeout=settings.get_float("FL_RUN_TIMEOUT", 3600))
                mem.sample()
        finally:
            subprocess.run([str(ROOT / "scripts" / "stop_clients_aws.sh")], env=env, cwd=ROOT, check=False)
        train_wall = final["finished_at"] - final["started_at"]
        from flcli import report  # torch, now that the clients are gone

        per_round = []
        for entry in final["history"]:
            acc = report.evaluate_on_test_set(cfg["dataset"], op.weights(job_id, entry["round"]))
            per_round.append({"round": entry["round"], "test_accuracy": acc["accuracy"], "test_loss": acc["loss"],
                              "seconds": entry["seconds"], "clients": entry["clients"],
                              "examples": entry["examples"], "closed": entry["closed"],
                              "federated_eval_accuracy": entry["metrics"].get("eval_accuracy"),
                              "train_loss": entry["metrics"].get("train_loss")})
    wall = time.time() - t0
    summary = {
        "job_id": job_id, "config": cfg, "test_accuracy": per_round[-1]["test_accuracy"],
        "test_loss": per_round[-1]["test_loss"], "rounds_completed": len(per_round),
        "stopped_because": final.get("stopped_because"),
        "wall_seconds": round(wall, 1), "training_seconds": round(train_wall, 1),
        "round_seconds": [r["seconds"] for r in per_round], "per_round": per_round,
        "memory": mem.as_dict(), "cpu_count": os.cpu_count(),
    }
    print(f"\ntest accuracy {100 * summary['test_accuracy']:.2f}% after {len(per_round)} rounds; "
          f"wall {wall:.0f}s (training {train_wall:.0f}s); peak memory {mem.peak_pss_mb:.0f} MB (PSS)", flush=True)
    if results_dir is not None:
        out = report.write(summary, results_dir)
        print(f"results: {out}/summary.json, {out}/accuracy.png (copied to {results_dir / 'latest'})")
    return summary


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings.load()
    run_job(job_overrides(), Path(settings.get("FL_RESULTS_DIR", str(ROOT / "results"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
