"""``make demo-jobs``: several jobs, devices of two kinds, criteria, a rule, a failing device.

On the local stack: 8 devices (4 of kind ``a`` holding MNIST, 4 of kind ``b``
holding MNIST and Fashion-MNIST) and three jobs:

- A (MNIST, devices of kind a) with rules: when its federated accuracy reaches
  A_TARGET, stop A and start C;
- B (Fashion-MNIST, devices of kind b), in which one device's training fails
  (``FL_FAIL_JOBS``): it leaves B and takes the next offer (C, once C is open);
- C (MNIST, any device), created but not started: the rule starts it.

Once C's first round has closed the operator stops B, whose devices then move
on. Every step is timed from what the operator sees through the API; the
timings, the jobs and the devices go to ``results/demo-jobs/summary.json`` and
a timeline plot beside it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from flcli.devstack import ROOT, LocalStack, free_port_block
from flcli.operator import Operator
from flcli.run import start_stack
from fllocal import data, env

A_TARGET = 0.90
FLEET = 4
SMALL = {
    "local_epochs": 1,
    "batch_size": 32,
    "max_train_examples": 600,
    "lr": 0.05,
    "momentum": 0.5,
    "round_timeout_s": 60,
    "client_timeout_s": 30,
}
FAILING = "client-03@B"  # the last device of kind b fails in job B


def job_definitions(c_id: str | None = None) -> dict[str, dict]:
    reached = {"metrics.eval_accuracy": {"$gte": A_TARGET}}
    return {
        "C": {
            **SMALL,
            "name": "C",
            "tags": ["demo"],
            "dataset": "mnist",
            "num_clients": 6,
            "clients_per_round": 4,
            "min_clients": 4,
            "rounds": 3,
            "start": False,
        },
        "A": {
            **SMALL,
            "name": "A",
            "tags": ["demo"],
            "dataset": "mnist",
            "num_clients": 4,
            "clients_per_round": 4,
            "rounds": 30,
            "criteria": {"info.labels.kind": "a"},
            "rules": [
                {"when": reached, "then": {"stop": f"federated accuracy reached {A_TARGET:.0%}"}},
                {"when": reached, "then": {"start_job": c_id or "?"}},
            ],
        },
        "B": {
            **SMALL,
            "name": "B",
            "tags": ["demo"],
            "dataset": "fashionmnist",
            "num_clients": 4,
            "clients_per_round": 4,
            "rounds": 100,
            "criteria": {"info.labels.kind": "b", "info.datasets.fashionmnist": {"$gt": 0}},
        },
    }


class Timer:
    """Milestones in seconds since the demo's start, printed as they happen."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.steps: dict[str, float] = {}

    def mark(self, name: str, seconds: float, note: str = "") -> None:
        self.steps[name] = round(seconds, 3)
        took = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
        print(f"[{time.time() - self.t0:6.1f}s] {name}: {took} {note}".rstrip(), flush=True)


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def start_fleet(base_url: str, kind: str, datasets: str, run_dir: Path, fail: str = "") -> Path:
    port = free_port_block(FLEET)
    fleet_env = {
        **os.environ,
        "BASE_URL_AWS": base_url,
        "FL_CLIENT_BASE_PORT": str(port),
        "FL_JOB_ID": "",
        "FL_DEVICE_LABELS": f"kind={kind}",
        "FL_DEVICE_DATASETS": datasets,
        "FL_FAIL_JOBS": fail,
        "FL_STATE_DIR": str(run_dir / kind / "state"),
        "FL_RUN_DIR": str(run_dir / kind),
        "FL_LOG_DIR": str(ROOT / "logs" / "demo-jobs" / kind),
        "FL_PRELOAD": datasets.split(",")[-1],
        "PYTHON": sys.executable,
    }
    subprocess.run(
        [str(ROOT / "scripts" / "clients.sh"), "start", "aws", str(FLEET)],
        env=fleet_env,
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return run_dir / kind


def stop_fleet(fleet_dir: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "clients.sh"), "stop", "aws"],
        env={**os.environ, "FL_RUN_DIR": str(fleet_dir)},
        cwd=ROOT,
        check=False,
        stdout=subprocess.DEVNULL,
    )


def wait_for(what: str, check, timeout: float = 600, interval: float = 0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"demo: waited {timeout:.0f}s for {what}")


def run_demo(op: Operator, base_url: str, timer: Timer, run_dir: Path) -> dict:
    defs = job_definitions()
    ids: dict[str, str] = {}
    created = []
    for name in ("C", "A", "B"):
        body = job_definitions(ids.get("C"))[name] if name == "A" else defs[name]
        made, took = timed(op.call, "create_job", body)
        ids[name] = made["job_id"]
        created.append(took)
    timer.mark("create", sum(created), f"(3 jobs: {', '.join(f'{t * 1000:.0f} ms' for t in created)})")

    probe = op.call("register", {"info": {"platform": "demo/probe", "datasets": {"cifar10": 1}}})
    offer_calls = [timed(op.transport.call, "offers", {}, probe["token"])[1] for _ in range(5)]
    timer.mark("offers", statistics.median(offer_calls), "(median of 5 offers calls by a device)")

    launched = time.time()
    fleets = [
        start_fleet(base_url, "a", "mnist", run_dir),
        start_fleet(base_url, "b", "mnist,fashionmnist", run_dir, fail=FAILING),
    ]
    timer.mark("devices started", time.time() - launched, "(2 fleets of 4 client processes)")
    try:
        devices = wait_for("8 devices to register", lambda: _registered(op, probe["device_id"]))
        times = sorted(d["registered_at"] for d in devices)
        timer.mark(
            "register",
            times[-1] - times[0],
            f"(first to last of 8; the first {times[0] - launched:.1f}s after launch: start, import, load data)",
        )
        full = lambda: all(op.status(ids[j])["started_at"] for j in ("A", "B"))  # noqa: E731
        wait_for("A and B to have their devices", full)
        for name in ("A", "B"):
            joined = [d for d in op.call("devices", {"job_id": ids[name]})["devices"]]
            timer.mark(
                f"join ({name})",
                op.status(ids[name])["started_at"] - max(d["registered_at"] for d in joined),
                f"(from its last device registered to round 1 open: offers, join of {len(joined)})",
            )
        for name in ("A", "B"):
            st = wait_for(f"the first round of {name}", lambda n=name: _with_history(op, ids[n]))
            timer.mark(
                f"first round closed ({name})",
                st["history"][0]["closed_at"] - st["started_at"],
                f"(from round 1 opening; {st['history'][0]['clients']} updates)",
            )
        failed = wait_for("the failing device to leave B", lambda: _failed(op, ids["B"]))
        b = op.status(ids["B"])
        timer.mark(
            "leave (failing device)",
            failed["last_failure"]["at"] - b["started_at"],
            f"(from B's round 1 opening: {failed['last_failure']['reason']})",
        )
        a = wait_for("the rule to stop A", lambda: _finished(op, ids["A"]), timeout=900)
        c = wait_for("C to open", lambda: _opened(op, ids["C"]))
        timer.mark(
            "start (rule: A stopped, C opened)",
            c["opened_at"] - a["finished_at"],
            f"(A: {a['stopped_because']} in round {a['round']})",
        )
        c = wait_for("the first round of C", lambda: _with_history(op, ids["C"]), timeout=900)
        timer.mark(
            "first round closed (C)",
            c["history"][0]["closed_at"] - c["started_at"],
            f"(C started {c['started_at'] - c['opened_at']:.1f}s after opening)",
        )
        moved = [
            d for d in op.call("devices", {"job_id": ids["C"]})["devices"] if d["device_id"] == failed["device_id"]
        ]
        print(f"  the failing device {'joined C' if moved else 'did not get a place in C'}", flush=True)
        stopped, took = timed(op.call, "stop_job", {"job_id": ids["B"], "reason": "demo: the operator stops B"})
        stop_at = time.time()
        events = {
            "device fails in B, leaves": failed["last_failure"]["at"] - timer.t0,
            "A reaches its target: rule stops A, starts C": a["finished_at"] - timer.t0,
            "operator stops B": stop_at - timer.t0,
        }
        b_devices = {d["device_id"] for d in op.call("devices", {"job_id": ids["B"]})["devices"]}
        wait_for(
            "B's devices to hear of the stop",
            lambda: all(
                (d["stats"]["last_seen"] or 0) > stop_at
                for d in op.call("devices")["devices"]
                if d["device_id"] in b_devices
            ),
        )
        timer.mark("stop", took, f"(stop_job call; every device of B heard it within {time.time() - stop_at:.1f}s)")
        wait_for("C to finish", lambda: _finished(op, ids["C"]), timeout=900)
        timer.mark("C done", time.time() - timer.t0, "(since the demo started)")
    finally:
        for fleet in fleets:
            stop_fleet(fleet)
    jobs = {name: op.status(job_id) for name, job_id in ids.items()}
    devices = [d for d in op.call("devices")["devices"] if d["device_id"] != probe["device_id"]]
    return {
        "steps_seconds": timer.steps,
        "jobs": {n: _job_summary(st) for n, st in jobs.items()},
        "devices": devices,
        "wall_seconds": round(time.time() - timer.t0, 1),
        "events": {k: round(v, 2) for k, v in events.items()},
        "definitions": job_definitions(ids["C"]),
        "timeline": {n: _timeline(st, timer.t0) for n, st in jobs.items()},
    }


def _with_history(op: Operator, job_id: str) -> dict | None:
    st = op.status(job_id)
    return st if st["history"] else None


def _finished(op: Operator, job_id: str) -> dict | None:
    st = op.status(job_id)
    return st if st["state"] in ("done", "stopped") else None


def _opened(op: Operator, job_id: str) -> dict | None:
    st = op.status(job_id)
    return st if st["state"] != "created" else None


def _registered(op: Operator, probe: str) -> list[dict] | None:
    devices = [d for d in op.call("devices")["devices"] if d["device_id"] != probe]
    return devices if len(devices) >= 2 * FLEET else None


def _failed(op: Operator, b_id: str) -> dict | None:
    return next((d for d in op.call("devices")["devices"] if b_id in d["left_jobs"]), None)


def _job_summary(st: dict) -> dict:
    return {
        "job_id": st["job_id"],
        "state": st["state"],
        "rounds_closed": len(st["history"]),
        "stopped_because": st["stopped_because"],
        "best": st["best"],
        "rules_fired": [(h["round"], [r["rule"] for r in h["rules"]]) for h in st["history"] if h.get("rules")],
        "accuracy_per_round": [h["metrics"].get("eval_accuracy") for h in st["history"]],
        "clients_per_round": [h["clients"] for h in st["history"]],
        "subscribed": st["subscribed"],
    }


def _timeline(st: dict, t0: float) -> list[list[float]]:
    return [[round(h["closed_at"] - h["seconds"] - t0, 2), round(h["seconds"], 2)] for h in st["history"]]


def plot_timeline(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=110)
    names = sorted(summary["timeline"])
    for y, name in enumerate(names):
        ax.broken_barh(
            [tuple(b) for b in summary["timeline"][name]], (y - 0.3, 0.6), facecolors=f"C{y}", edgecolor="white"
        )
    for i, (label, t) in enumerate(sorted(summary["events"].items(), key=lambda e: e[1])):
        ax.axvline(t, color="black", alpha=0.5, linestyle=":")
        ax.text(t, len(names) - 0.45 + 0.22 * (i % 2), f" {label}", fontsize=7, va="bottom")
    ax.set_yticks(range(len(names)), [f"job {n}" for n in names])
    ax.set(
        xlabel="seconds since the demo started",
        ylim=(-0.6, len(names) + 0.1),
        title="rounds of the three jobs (one bar per round) and what happened",
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(SystemExit(128 + signum)))
    env.load()
    for name in ("mnist", "fashionmnist"):
        data.prepare(name)
    if "fashionmnist" not in data.available():
        raise SystemExit("the demo needs Fashion-MNIST: apt-get install dataset-fashion-mnist (see README)")
    token = env.get("FL_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    out = Path(env.get("FL_RESULTS_DIR", str(ROOT / "results"))) / "demo-jobs"
    out.mkdir(parents=True, exist_ok=True)
    run_dir = ROOT / "run" / "demo-jobs"
    db = f"demo_jobs_{int(time.time())}"  # a database of its own, even on a MONGODB_URL the user named
    with LocalStack(ROOT / "logs" / "demo-jobs", env={"FL_ADMIN_TOKEN": token, "FL_DB_NAME": db}) as stack:
        base_url = start_stack(stack)
        summary = run_demo(Operator(base_url, token), base_url, Timer(), run_dir)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_timeline(summary, out / "timeline.png")
    print(f"\nresults: {out}/summary.json, {out}/timeline.png")
    for name, job in summary["jobs"].items():
        print(f"  job {name}: {job['state']} after {job['rounds_closed']} rounds ({job['stopped_because']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
