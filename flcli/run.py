"""``make run``: a whole federated training on this machine, then its report.

Starts what is missing (the embedded database unless ``MONGODB_URL`` is set,
the real handler under serverless-offline), creates the job, starts the
clients with ``scripts/start_clients_aws.sh``, follows the rounds, evaluates
every round's global model on the test set as the round closes, writes
``results/<job_id>/`` and ``results/latest/``, and stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clients import files
from flcli import cputime, invocations, report
from flcli.cputime import CpuAccount, tree_seconds
from flcli.devstack import ROOT, LocalStack, free_port
from flcli.memory import PeakMemory
from flcli.operator import Operator
from flcore.domain.config import JobConfig, field_types, parse_config
from flcore.errors import DomainError
from fllocal import data, env

# Older, shorter names kept beside FL_<FIELD> (documented in earlier READMEs).
ALIASES = {"FL_CLIENTS": "num_clients", "FL_ROUND_TIMEOUT": "round_timeout_s"}


def env_names() -> dict[str, str]:
    """Environment name -> job setting: every setting of a job as ``FL_<SETTING>``, plus the aliases."""
    return {**ALIASES, **{f"FL_{name.upper()}": name for name in field_types()}}


def job_overrides(environ: Mapping[str, str] | None = None) -> dict:
    """The job settings given in the environment (or ``.env``), typed; a bad value stops the run."""
    get = env.get if environ is None else (lambda name: environ.get(name, ""))
    types = field_types()
    out = {}
    for name, setting in env_names().items():
        value = get(name).strip()
        if not value:
            continue
        kind = types[setting]
        if setting == "model":
            out[setting] = model_setting(name, value)
            continue
        try:
            out[setting] = value.lower() if kind is str else kind(float(value) if kind is int else value)
        except ValueError:
            raise SystemExit(f"{name}={value!r} is not a valid {kind.__name__}") from None
        if kind is int and float(value) != out[setting]:
            raise SystemExit(f"{name}={value!r} must be a whole number")
    for name, block in BLOCKS.items():
        value = get(name).strip()
        if value:
            try:
                out[block] = json.loads(value)
            except ValueError:
                raise SystemExit(f"{name}={value!r} must be a JSON object, e.g. {name}='{{}}'") from None
    return out


# the job's blocks that make run takes as JSON: FL_DP='{"noise_multiplier": 1.0}', FL_SECURE_AGGREGATION='{}'
BLOCKS = {"FL_DP": "dp", "FL_SECURE_AGGREGATION": "secure_aggregation"}


def model_setting(name: str, value: str) -> str | list:
    """``FL_MODEL``: a preset's name, or the path of a JSON file holding a list of layers."""
    if not value.endswith(".json") and not Path(value).is_file():
        return value.lower()
    try:
        layers = json.loads(Path(value).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{name}={value!r}: cannot read a JSON layer list from it ({exc})") from None
    if not isinstance(layers, list):
        raise SystemExit(f"{name}={value!r}: the file must hold a JSON list of layers")
    return layers


def _pids(pid_file: Path) -> list[int]:
    try:
        return [int(p) for p in pid_file.read_text().split()]
    except (OSError, ValueError):
        return []


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so everything started is stopped


def start_stack(stack: LocalStack, http_port: int | None = None, schedule: bool = True) -> str:
    """The database (unless MONGODB_URL names one) and the function, started at the same time; the
    function's URL. The function is ready once it answers, which needs the database.

    Without ``schedule`` the function runs no scheduled event: the clients' polls move the job.
    """
    mongodb_url = env.get("MONGODB_URL")
    database: threading.Thread | None = None
    if not mongodb_url:
        db_port = free_port()
        mongodb_url = f"mongodb://127.0.0.1:{db_port}/?directConnection=true"
        database = threading.Thread(target=stack.start_database, kwargs={"port": db_port}, daemon=True)
        database.start()
    base_url = stack.start_function(
        mongodb_url,
        http_port=http_port or free_port(),
        lambda_port=free_port(),
        extra_env=None if schedule else {"FL_SCHEDULE": "false"},
    )
    if database is not None:
        database.join()
    print(f"function at {base_url} (database {mongodb_url.split('@')[-1]})", flush=True)
    return base_url


def create_job(op: Operator, overrides: dict) -> tuple[str, dict]:
    # No initial weights: the clients build the job's seeded initialisation, so this
    # process needs no torch (its evaluator scores a small model with numpy, flcli.report).
    job = op.start_job(overrides, initial_weights=False)
    cfg = job["config"]
    pace = (
        f"async, {JobConfig.from_doc(cfg).buffer} updates per version, {cfg['rounds']} versions"
        if cfg["mode"] == "async"
        else f"{cfg['clients_per_round']} per round, {cfg['rounds']} rounds"
    )
    mdef = JobConfig.from_doc(cfg).model_def
    print(
        f"job {job['job_id']}: {cfg['dataset']}, model {mdef.name} ({mdef.parameters:,} parameters, "
        f"{mdef.nbytes / 2**20:.1f} MB), {cfg['partition']}, {cfg['strategy']}, {cfg['num_clients']} "
        f"clients, {cfg['local_epochs']} local epochs, {pace}",
        flush=True,
    )
    return job["job_id"], cfg


@contextlib.contextmanager
def running_clients(base_url: str, job_file: Path, states: Path, cfg: JobConfig) -> Iterator[Path]:
    """The job's clients, started by the scripts a user would run; their pid file.

    They start before the job exists (while the function starts) and join it once
    its id appears in ``job_file``; ``states`` holds their identities and call logs.
    """
    pid_file = Path(env.get("FL_RUN_DIR", str(ROOT / "run"))) / "clients_aws.pid"
    child_env = {
        **os.environ,
        "BASE_URL_AWS": base_url,
        "FL_PRELOAD": cfg.dataset,
        "FL_JOB_ID": "",
        "FL_JOB_ID_FILE": str(job_file),
        "FL_STATE_DIR": str(states),
        "PYTHON": sys.executable,
    }
    subprocess.run(
        [str(ROOT / "scripts" / "start_clients_aws.sh"), str(cfg.num_clients)], env=child_env, check=True, cwd=ROOT
    )
    try:
        yield pid_file
    finally:
        subprocess.run([str(ROOT / "scripts" / "stop_clients_aws.sh")], env=child_env, cwd=ROOT, check=False)


class RoundEvaluator(threading.Thread):
    """Each round's global model on the test set as soon as the round closes, beside what the clients
    reported, instead of all at the end.

    It runs at the lowest CPU priority, so it takes only what training leaves idle (the end of each
    round, when fewer clients train than there are cores). Each round's model is fetched as soon
    as the round closes. The job's last round is scored by :meth:`results`, in the caller's thread
    at its priority and on every core, while the clients stop; it is reported to the function
    before the function stops.
    """

    def __init__(self, op: Operator, job_id: str, cfg: dict):
        super().__init__(daemon=True, name="round-evaluator")
        self.op, self.job_id, self.cfg = op, job_id, cfg
        self.rounds: queue.Queue = queue.Queue()
        self.per_round: list[dict] = []
        self.error: BaseException | None = None
        self.last: tuple[dict, dict] | None = None  # the job's last round, for results()

    def take(self, entry: dict) -> None:
        """A closed round (``Operator.follow``'s ``on_round``): its model is fetched now, evaluated later."""
        item = (entry, self.op.weights(self.job_id, entry["round"]))
        if entry["round"] >= self.cfg["rounds"]:
            self.last = item
        else:
            self.rounds.put(item)

    def run(self) -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only
        try:
            while (item := self.rounds.get()) is not None:
                self.per_round.append(self._evaluate(*item))
        except BaseException as exc:  # raised again by results()
            self.error = exc

    def _evaluate(self, entry: dict, weights: dict, threads: int = 1) -> dict:
        acc = report.evaluate_on_test_set(self.cfg["dataset"], weights, self.cfg["model"], threads)
        self.op.call(
            "report",
            {
                "job_id": self.job_id,
                "round": entry["round"],  # the dashboard's chart
                "metrics": {"test_accuracy": acc["accuracy"], "test_loss": acc["loss"]},
            },
        )
        return {
            "round": entry["round"],
            "test_accuracy": acc["accuracy"],
            "test_loss": acc["loss"],
            "seconds": entry["seconds"],
            "clients": entry["clients"],
            "closed_at": entry["closed_at"],
            "examples": entry["examples"],
            "closed": entry["closed"],
            "federated_eval_accuracy": entry["metrics"].get("eval_accuracy"),
            "train_loss": entry["metrics"].get("train_loss"),
            **({"privacy": entry["privacy"]} if "privacy" in entry else {}),
            **({"secure": entry["secure"]} if "secure" in entry else {}),
        }

    def results(self) -> list[dict]:
        """Every round's evaluation: the rounds before the last, from the thread; the last, here."""
        self.rounds.put(None)
        self.join()
        if self.error is not None:
            raise self.error
        if self.last is not None:  # nothing trains any more: every core
            self.per_round.append(self._evaluate(*self.last, threads=os.cpu_count() or 1))
            self.last = None
        return self.per_round


def summarise(job_id: str, cfg: dict, final: dict, per_round: list[dict], wall: float, memory: dict) -> dict:
    mdef = JobConfig.from_doc(cfg).model_def
    return {
        "job_id": job_id,
        "config": cfg,
        "model": mdef.name,
        "model_parameters": mdef.parameters,
        "model_bytes": mdef.nbytes,
        "test_accuracy": per_round[-1]["test_accuracy"],
        "test_loss": per_round[-1]["test_loss"],
        "rounds_completed": len(per_round),
        "stopped_because": final.get("stopped_because"),
        **({"privacy": final["privacy"]} if "privacy" in final else {}),  # epsilon spent, at which delta
        "started_at": final["started_at"],
        "wall_seconds": round(wall, 1),
        "training_seconds": round(final["finished_at"] - final["started_at"], 1),
        "round_seconds": [r["seconds"] for r in per_round],
        "per_round": per_round,
        "memory": memory,
        "cpu_count": os.cpu_count(),
    }


def phases(marks: dict[str, float], final: dict) -> dict[str, float]:
    """Where a run's wall time went, in seconds: what is not training is the system's fixed overhead."""
    spans = {
        "prepare_data": ("start", "data_ready"),
        "start_stack": ("data_ready", "stack_ready"),  # the database and the function, until it answers
        "create_job": ("stack_ready", "job_created"),
        "start_clients": ("data_ready", "clients_started"),  # at the same time: the launcher and its clients
        "evaluate_last_rounds": ("followed", "evaluated"),
        "stop_everything": ("evaluated", "stopped"),
    }
    out = {name: marks[b] - marks[a] for name, (a, b) in spans.items()}
    out["clients_until_first_round"] = final["started_at"] - marks["job_created"]
    out["training"] = final["finished_at"] - final["started_at"]
    out["after_last_round"] = marks["followed"] - final["finished_at"]  # until the operator saw it
    out["overhead"] = marks["stopped"] - marks["start"] - out["training"]
    return {k: round(v, 2) for k, v in out.items()}


def run_job(overrides: dict, results_dir: Path | None = None) -> dict:
    """Run one job on a fresh local stack; its summary (written to ``results_dir`` if given)."""
    t0 = time.time()
    dataset = overrides.get("dataset", "mnist")
    token = env.get("FL_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    print(f"preparing {dataset} in {data.data_dir()} ...", flush=True)
    data.prepare(dataset)
    marks = {"start": t0, "data_ready": time.time()}
    function_log = ROOT / "logs" / "function.log"
    log_from = invocations.log_size(function_log)
    run_id = f"run-{int(t0)}-{secrets.token_hex(3)}"
    states, job_file = ROOT / ".fl" / "state" / run_id, ROOT / ".fl" / f"{run_id}.job"
    http_port = free_port()
    # an in-memory database and a local function have nothing to save: killed at once at the end (the
    # database took half a second to answer a polite stop)
    with (
        LocalStack(ROOT / "logs", env={"FL_ADMIN_TOKEN": token}, grace_s=0.0) as stack,
        contextlib.ExitStack() as clients,
        ThreadPoolExecutor(1) as pool,  # left first: whatever it does with the clients is over before they stop
    ):
        # The clients start (importing torch, the longest part) while the function does, and the job is
        # created as soon as the function answers: the clients join it as they come up. No schedule: the
        # clients' polls move the job.
        launching = pool.submit(
            clients.enter_context,
            running_clients(f"http://127.0.0.1:{http_port}/dev", job_file, states, parse_config(overrides)),
        )
        op = Operator(start_stack(stack, http_port, False), token)
        marks["stack_ready"] = time.time()
        job_id, cfg = create_job(op, overrides)
        files.write_atomic(job_file, job_id.encode())  # the clients join it once they are up
        marks["job_created"] = time.time()
        pid_file = launching.result()
        marks["clients_started"] = time.time()
        # memory of the whole local stack, sampled through the run: this process and its children (the
        # database, the function's host and workers), and the client launcher with its clients
        mem = clients.enter_context(PeakMemory(lambda: [os.getpid(), *_pids(pid_file)]))
        cpu = CpuAccount(
            {
                "clients": lambda: tree_seconds(_pids(pid_file)),
                "function": lambda: tree_seconds([stack.function_proc.pid] if stack.function_proc else []),
                "database": lambda: tree_seconds([stack.database_proc.pid] if stack.database_proc else []),
                "operator": lambda: cputime.seconds(os.getpid(), children=False),  # follow and evaluate
            }
        )
        cpu.start()
        print(f"watch it live: {stack.base_url}/dashboard#token={token}&job={job_id}", flush=True)
        evaluator = RoundEvaluator(op, job_id, cfg)
        evaluator.start()
        final = op.follow(job_id, timeout=env.get_float("FL_RUN_TIMEOUT", 3600), interval=0.5, on_round=evaluator.take)
        cpu.stop()
        marks["followed"] = time.time()

        stopping = pool.submit(clients.close)  # the clients are done: they stop while the last round is scored
        try:
            per_round = evaluator.results()
            marks["evaluated"] = time.time()
        finally:
            stopping.result()  # before anything else unwinds the clients' stack
    marks["stopped"] = time.time()
    job_file.unlink(missing_ok=True)
    summary = summarise(job_id, cfg, final, per_round, time.time() - t0, mem.as_dict())
    summary["phases"] = phases(marks, final)
    # from the job's creation until the operator saw its end: where the processors' time went
    summary["cpu"] = cpu.as_dict(marks["followed"] - marks["job_created"], len(per_round))
    summary["invocations"] = {
        **invocations.from_function_log(function_log, log_from),
        "per_client_round": invocations.per_client_round(states / "aws", len(per_round)),
        "client_latency_ms": invocations.client_latency_ms(states / "aws"),
    }
    print(
        f"\ntest accuracy {100 * summary['test_accuracy']:.2f}% after {len(per_round)} rounds; "
        f"wall {summary['wall_seconds']:.0f}s (training {summary['training_seconds']:.0f}s); "
        f"peak memory {mem.peak_pss_mb:.0f} MB (PSS of the whole local stack)",
        flush=True,
    )
    if results_dir is not None:
        out = report.write(summary, results_dir)
        print(f"results: {out}/summary.json, {out}/accuracy.png (copied to {results_dir / 'latest'})")
    return summary


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    env.load()
    overrides = job_overrides()
    try:
        parse_config(overrides)  # the function's own checks, before anything is started
    except DomainError as exc:
        raise SystemExit(f"the job settings are not valid: {exc.message}") from None
    run_job(overrides, Path(env.get("FL_RESULTS_DIR", str(ROOT / "results"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
