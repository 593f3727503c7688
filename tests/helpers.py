"""What many test files share: the operator token, model and weight makers, calls into the core,
and a way to wait for a condition without sleeping a fixed time."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from flcore.edge import api
from flcore.shared import modeldef
from flcore.shared import weights as wcodec

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def clients_running(env: dict, count: int, job_id: str) -> Iterator[None]:
    """``count`` client processes started by scripts/start_clients_aws.sh for ``job_id``, stopped on exit."""
    start = [str(ROOT / "scripts" / "start_clients_aws.sh"), str(count)]
    subprocess.run(start, env={**env, "FL_JOB_ID": job_id}, cwd=ROOT, check=True)
    try:
        yield
    finally:
        subprocess.run([str(ROOT / "scripts" / "stop_clients_aws.sh")], env=env, cwd=ROOT, check=True)


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0, every: float = 0.05):
    """``check()``'s first true value, polled every ``every`` seconds; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


ADMIN = "test-admin-token"


def printed_by(code: str) -> list[str]:
    """The words a fresh Python process running ``code`` prints (from the project's root); it must succeed."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def mdef(model: str = "cnn_mnist", dataset: str | None = None) -> modeldef.ModelDef:
    """A preset checked for its usual data set (cnn_cifar10: CIFAR-10, the rest: MNIST)."""
    return modeldef.resolve(model, dataset or ("cifar10" if model == "cnn_cifar10" else "mnist"))


def tensor_spec(model: str = "cnn_mnist", dataset: str | None = None) -> dict[str, tuple[int, ...]]:
    return mdef(model, dataset).spec


def random_weights(model: str = "cnn_mnist", seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(shape) * scale).astype(np.float32) for k, shape in tensor_spec(model).items()}


def snapshot(db) -> dict:
    """Every document of every collection, to prove a request changed nothing."""
    return {
        name: sorted((repr(sorted(d.items())) for d in db[name].find()), key=str)
        for name in sorted(db.list_collection_names())
    }


def call(action, body=None, token=None, expect=200):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, payload = api.handle(action, body or {}, headers)
    assert status == expect, (action, status, payload)
    return payload


def new_job(**cfg):
    body = {"num_clients": 3, "clients_per_round": 2, "rounds": 2, "weights": wcodec.to_b64(random_weights()), **cfg}
    return call("start_training", body)["job_id"]


def subscribe_all(job_id, n):
    return [call("subscribe", {"job_id": job_id}) for _ in range(n)]


def submit(sub, rnd, seed, n=100, expect=200):
    body = {
        "round": rnd,
        "weights": wcodec.to_b64(random_weights(seed=seed)),
        "num_examples": n,
        "metrics": {"train_loss": 0.5, "eval_accuracy": 0.9},
    }
    return call("submit", body, sub["token"], expect=expect)


def create(**body):
    base = {"num_clients": 3, "clients_per_round": 2, "rounds": 3, "weights": wcodec.to_b64(random_weights())}
    return call("create_job", {**base, **body})


KIND_A = {
    "platform": "linux/x86_64",
    "cpus": 4,
    "memory_mb": 8000,
    "datasets": {"mnist": 60000},
    "labels": {"kind": "a"},
}


KIND_B = {
    "platform": "linux/aarch64",
    "cpus": 2,
    "memory_mb": 2000,
    "datasets": {"mnist": 60000, "fashionmnist": 60000},
    "labels": {"kind": "b"},
}


def register(info, token=None, expect=200):
    return call("register", {"info": info}, token=token, expect=expect)


def two_versions_over_http(function_url: str, name: str) -> str:
    """An async job driven over HTTP with made-up updates to two versions, the second with a stale update."""
    from clients.transport import make_transport

    fn = make_transport(function_url)
    job_id = fn.call(
        "create_job",
        {"mode": "async", "num_clients": 3, "clients_per_round": 3, "buffer_size": 2, "rounds": 5, "name": name},
        token=ADMIN,
    )["job_id"]
    subs = [fn.call("subscribe", {"job_id": job_id}) for _ in range(3)]

    def deliver(sub, base, seed):
        fn.call(
            "submit",
            {"round": base, "weights": wcodec.to_b64(random_weights(seed=seed)), "num_examples": 50},
            token=sub["token"],
        )
        fn.call("aggregate", {"job_id": job_id}, token=ADMIN)

    bases = [fn.call("poll", {}, token=s["token"])["round"] for s in subs]
    for i, (sub, base) in enumerate(zip(subs, bases)):  # the third trained on version 0 and arrives stale
        deliver(sub, base, i)
    again = fn.call("poll", {}, token=subs[0]["token"])
    assert again["action"] == "train" and again["round"] == 1  # on the newest version
    deliver(subs[0], 1, 9)
    return job_id


HOUSES = ["size", "rooms", "town", "price", "kind"]


def house_rows(rng, n: int, shift: float) -> list[list]:
    """Houses whose price and kind follow from size, rooms and town (with a little noise)."""
    towns = {"north": 0.3, "south": -0.2, "east": 0.0}
    out = []
    for _ in range(n):
        size, rooms = rng.normal(100 + 20 * shift, 25), int(rng.integers(1, 6))
        town = list(towns)[int(rng.integers(3))]
        log_price = 11 + 0.006 * size + 0.05 * rooms + towns[town] + rng.normal(0, 0.02)
        kind = "big" if size > 130 else "mid" if size > 90 else "small"
        out.append([f"{size:.2f}", "NA" if rng.random() < 0.05 else rooms, town, f"{np.expm1(log_price):.0f}", kind])
    return out
