"""``make bench-privacy``: what secure aggregation and differential privacy cost, and what DP buys.

Four parts, one sitting (bench/results/privacy.json and privacy.png):

1. ``default_job``: the default MNIST job (20 clients, 10 a round, 10 local epochs), 3 rounds, run by
   ``make run``'s stack (the function under serverless-offline, real client processes) with and
   without ``secure_aggregation``: round time, calls per picked client per round, the function's
   billed seconds.
2. ``dropouts``: 10 devices of the default CNN, each trains one epoch on 200 of its images; 3 of them
   (30 %) vanish after sharing their keys, before masking: the round completes and its model is set
   beside plain FedAvg of the 7 survivors (largest difference, against the quantisation step).
3. ``scale``: 100 and 1,000 clients (10 % a round) with secure aggregation, a logistic model: calls,
   bytes sent and received per client per round, the function's own seconds per round.
4. ``dp_curve``: 1,000 clients (MNIST, 60 images each), 100 a round, 30 rounds, a logistic model,
   without noise and with three noise multipliers: test accuracy against epsilon (delta 1e-3).

Parts 2-4 run the function's real handler in this process (``flcore.edge.api.handle``, as the
aggregation benchmark does) on the embedded database, and the devices as in-process identities running
the clients' own code (clients/secure.py, the trainer, the clipping); part 1 is the whole stack.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flcli.devstack import LocalStack  # noqa: E402
from flcli.plots import pyplot, save, write_results  # noqa: E402

OUT = ROOT / "bench" / "results" / "privacy.json"
ADMIN = "bench-admin"
LOGISTIC = [{"type": "flatten"}, {"type": "linear", "name": "out"}]
DELTA = 1e-3
NOISE = (1.0, 2.0, 4.0)
DP_ROUNDS = 30


class InProcess:
    """The function's handler in this process, on a fresh embedded database; bytes and seconds counted."""

    def __init__(self, stack: LocalStack, name: str):
        os.environ.update(
            {"MONGODB_URL": stack.mongodb_url, "FL_DB_NAME": name, "FL_ADMIN_TOKEN": ADMIN, "PYTHONPATH": str(ROOT)}
        )
        from flcore.edge import api  # settings are read from the environment at each call

        self.api = api
        self.seconds = 0.0
        self.bytes: dict[str, int] = {}  # client id -> bytes sent and received
        self.calls: dict[str, int] = {}

    def call(self, action: str, body: dict, token: str | None = None, who: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token or ADMIN}"}
        t0 = time.perf_counter()
        status, reply = self.api.handle(action, body, headers)
        self.seconds += time.perf_counter() - t0
        if who is not None:
            self.bytes[who] = self.bytes.get(who, 0) + len(json.dumps(body)) + len(json.dumps(reply))
            self.calls[who] = self.calls.get(who, 0) + 1
        if status != 200:
            raise RuntimeError(f"{action}: {status} {reply}")
        return reply


def _devices(fn: InProcess, job_id: str, n: int) -> list[dict]:
    return [fn.call("subscribe", {"job_id": job_id}) for _ in range(n)]


def _train(model_spec, weights: dict | None, x, y, lr: float, epochs: int, batch: int, seed: int) -> dict:
    from clients import trainer
    from fllocal import models

    model = models.build(model_spec, "mnist", seed=0)
    if weights is not None:
        models.set_weights(model, weights)
    trainer.train(model, x, y, epochs=epochs, batch_size=batch, lr=lr, momentum=0.0, seed=seed)
    return models.get_weights(model)


def _secure_round(fn: InProcess, job_id: str, subs: list[dict], weights_of, vanish: set[str] = frozenset()) -> dict:
    """Run one secure round with the clients' SecureClient; ``weights_of(sub, reply)`` trains a device.
    Devices in ``vanish`` stop after sharing their keys. The round's status."""
    from clients.secure import SecureClient, Trained

    by_id = {s["client_id"]: s for s in subs}
    start = fn.call("status", {"job_id": job_id})
    rnd = start["round"]
    picked = [by_id[c] for c in start["picked"]]
    agents = {
        s["client_id"]: SecureClient(
            lambda a, b=None, s=s: fn.call(a, b or {}, s["token"], s["client_id"]), lambda s=s: s["client_id"]
        )
        for s in picked
    }
    for _ in range(60):
        for s in picked:
            me = s["client_id"]
            reply = fn.call("poll", {}, s["token"], me)
            st = reply.get("secure") or {}
            if me in vanish and reply["action"] == "secure" and st.get("stage") == "masked":
                continue
            if reply["action"] == "train":
                if not agents[me].holds(job_id, reply["round"]):
                    w = weights_of(s, reply)
                    agents[me].keep(Trained(job_id, reply["round"], w, s["examples"], {}, True, {}))
                agents[me].advertise(job_id, reply["round"], st["attempt"])
            elif reply["action"] == "secure":
                agents[me].step(job_id, st)
        st = fn.call("status", {"job_id": job_id})
        if st["round"] != rnd or st["state"] != "running":
            return st
        if vanish:  # the masked stage waits for those gone until its deadline
            fn.call("aggregate", {"job_id": job_id})
            time.sleep(0.2)
    raise RuntimeError(f"round {rnd} did not close: {fn.call('status', {'job_id': job_id}).get('secure')}")


def dropouts(stack: LocalStack) -> dict:
    from flcore.shared import weights as wcodec
    from flcore.shared.aggregation import fedavg
    from flcore.shared.datasets import TRAIN_CLASS_COUNTS
    from flcore.shared.partition import partition_indices, share_sizes
    from flcore.shared.secagg import masking
    from fllocal import data

    fn = InProcess(stack, "privacy_dropouts")
    job = fn.call("create_job", {"num_clients": 10, "clients_per_round": 10, "rounds": 2, "min_updates": 5,
                                 "secure_aggregation": {"stage_timeout_s": 3}})  # fmt: skip
    subs = _devices(fn, job["job_id"], 10)
    labels = data.load_raw("mnist")[1]
    trained: dict[str, dict] = {}

    def weights_of(sub: dict, reply: dict) -> dict:
        spec = {**fn.call("partition", {}, sub["token"]), "max_train_examples": 200}
        x, y = data.load_split("mnist", partition_indices(labels, spec)[:200])
        w = _train("cnn_mnist", None, x, y, 0.05, 1, 50, 0)
        trained[sub["client_id"]] = w
        return w

    for s in subs:
        s["examples"] = 200
    vanish = {s["client_id"] for s in subs[:3]}
    st = _secure_round(fn, job["job_id"], subs, weights_of, vanish)
    model = wcodec.from_b64(fn.call("get_model", {"job_id": job["job_id"]})["weights"])
    survivors = [w for c, w in trained.items() if c not in vanish]
    expected = fedavg([(w, 200) for w in survivors])
    diff = max(float(np.abs(model[k] - expected[k]).max()) for k in expected)
    cfg = st["config"]["secure_aggregation"]
    step = masking.step(cfg["clip_range"], cfg["bits"])
    # each device weighs examples / the largest share: the mean may move a step per device, over the weights
    cap = max(share_sizes(TRAIN_CLASS_COUNTS["mnist"], {**fn.call("partition", {}, subs[0]["token"])}))
    bound = 2 * len(survivors) * step / (len(survivors) * 200 / cap)
    return {
        "devices": 10,
        "vanished_after_sharing": 3,
        "round_completed": st["round"] == 2,
        "survivors": st["history"][0]["secure"]["survivors"],
        "max_abs_difference_from_fedavg_of_survivors": diff,
        "kib_per_device_round": round(statistics.median(fn.bytes[c] for c in fn.bytes if c not in vanish) / 1024, 1),
        "quantisation_step": step,
        "bound_from_quantisation": bound,
        "within_bound": diff <= bound,
    }


def scale(stack: LocalStack, clients: int) -> dict:
    from flcore.shared.secagg import masking

    fn = InProcess(stack, f"privacy_scale_{clients}")
    per_round = clients // 10
    job = fn.call("create_job", {"num_clients": clients, "clients_per_round": per_round, "rounds": 3,
                                 "model": LOGISTIC, "secure_aggregation": {}})  # fmt: skip
    subs = _devices(fn, job["job_id"], clients)
    rng = np.random.default_rng(0)
    for s in subs:
        s["examples"] = 54

    def weights_of(sub: dict, reply: dict) -> dict:
        return {"out.weight": rng.normal(0, 0.05, (10, 784)).astype(np.float32),
                "out.bias": rng.normal(0, 0.05, 10).astype(np.float32)}  # fmt: skip

    _secure_round(fn, job["job_id"], subs, weights_of)  # round 1: warm (imports, indexes)
    fn.bytes.clear(), fn.calls.clear()
    fn.seconds = 0.0
    t0 = time.perf_counter()
    st = _secure_round(fn, job["job_id"], subs, weights_of)
    wall = time.perf_counter() - t0
    picked = [c for c in fn.calls if c in {s["client_id"] for s in subs}]
    cfg = st["config"]["secure_aggregation"]
    return {
        "clients": clients,
        "per_round": per_round,
        "degree": cfg["degree"],
        "threshold": cfg["threshold"],
        "graph_degree_used": min(cfg["degree"], per_round - 1),
        "calls_per_picked_client": statistics.median(fn.calls[c] for c in picked),
        "kib_per_picked_client": round(statistics.median(fn.bytes[c] for c in picked) / 1024, 1),
        "function_seconds_per_round": round(fn.seconds, 2),
        "function_ms_per_picked_client": round(1000 * fn.seconds / per_round, 1),
        "round_wall_seconds_in_process": round(wall, 2),
        "aggregation_seconds": st["history"][-1]["aggregation_seconds"],
        "max_members_per_round": masking.max_members(cfg["bits"]),
    }


def dp_run(stack: LocalStack, noise: float | None) -> dict:
    """1,000 clients, 100 a round, DP_ROUNDS rounds of a logistic model: test accuracy and epsilon per round."""
    import torch

    from flcli.report import evaluate_on_test_set
    from flcore.shared import clipping
    from flcore.shared import weights as wcodec
    from flcore.shared.datasets import TRAIN_CLASS_COUNTS
    from flcore.shared.partition import partition_indices, train_examples
    from fllocal import data, models

    torch.set_num_threads(1)
    fn = InProcess(stack, f"privacy_dp_{noise}".replace(".", "_"))
    body = {"num_clients": 1000, "clients_per_round": 100, "rounds": DP_ROUNDS, "model": LOGISTIC, "lr": 0.1,
            "batch_size": 10, "local_epochs": 1, "momentum": 0.0,
            "client_timeout_s": 86400}  # the clients not picked do not poll here: none counts as silent  # fmt: skip
    if noise is not None:
        body["dp"] = {"noise_multiplier": noise, "clip_norm": 1.0, "delta": DELTA}
    job = fn.call("create_job", body)
    subs = _devices(fn, job["job_id"], 1000)
    by_id = {s["client_id"]: s for s in subs}
    labels = data.load_raw("mnist")[1]
    cache: dict[str, tuple] = {}
    curve = []
    for rnd in range(1, DP_ROUNDS + 1):
        st = fn.call("status", {"job_id": job["job_id"]})
        if st["round"] != rnd or st["state"] != "running":
            raise RuntimeError(f"expected round {rnd} running, found {st['state']} round {st['round']}")
        for cid in st["picked"]:
            s = by_id[cid]
            reply = fn.call("poll", {}, s["token"])
            if reply["action"] != "train":
                continue
            if cid not in cache:
                spec = fn.call("partition", {}, s["token"])
                share = partition_indices(labels, spec)
                cache[cid] = data.load_split("mnist", share[: train_examples(TRAIN_CLASS_COUNTS["mnist"], spec)])
            x, y = cache[cid]
            base = wcodec.from_b64(reply["weights"]) if reply.get("weights") else None
            start = base if base is not None else models.get_weights(models.build(LOGISTIC, "mnist", seed=0))
            w = _train(LOGISTIC, start, x, y, 0.1, 1, 10, rnd)
            extra = {}
            clip = reply["round_config"].get("dp_clip_norm")
            if clip:
                w, norm = clipping.clip_change(w, start, float(clip))
                extra["dp_unclipped"] = bool(norm <= clip)
            fn.call("submit", {"round": rnd, "num_examples": len(x), "weights": wcodec.to_b64(w), **extra}, s["token"])
        fn.call("aggregate", {"job_id": job["job_id"]})
        st = fn.call("status", {"job_id": job["job_id"]})
        weights = wcodec.from_b64(fn.call("get_model", {"job_id": job["job_id"]})["weights"])
        acc = evaluate_on_test_set("mnist", weights, LOGISTIC)["accuracy"]
        eps = st["history"][-1].get("privacy", {}).get("epsilon")
        curve.append({"round": rnd, "test_accuracy": round(acc, 4), "epsilon": eps})
        print(f"  noise {noise}: round {rnd} accuracy {acc:.4f} epsilon {eps}", flush=True)
        if st["state"] != "running":
            break
    return {"noise_multiplier": noise, "curve": curve, "final_accuracy": curve[-1]["test_accuracy"],
            "final_epsilon": curve[-1]["epsilon"]}  # fmt: skip


def default_job() -> dict:
    """The default MNIST job for 3 rounds on make run's stack, with and without secure aggregation."""
    from flcli.run import run_job

    out = {}
    for name, extra in (("plain", {}), ("secure", {"secure_aggregation": {}})):
        s = run_job({"rounds": 3, **extra})
        out[name] = {
            "round_seconds": s["round_seconds"],
            "median_round_seconds": statistics.median(s["round_seconds"]),
            "test_accuracy": s["test_accuracy"],
            "calls_per_picked_client_round": s["invocations"]["per_client_round"].get("picked", {}),
            "billed_seconds": s["invocations"].get("billed_seconds"),
            "requests_by_action": s["invocations"].get("by_action"),
        }
    return out


def draw(result: dict, png: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    plain = next(r for r in result["dp_curve"] if r["noise_multiplier"] is None)
    left.axhline(plain["final_accuracy"], color="grey", ls="--", label=f"no DP: {100 * plain['final_accuracy']:.1f} %")
    for run in result["dp_curve"]:
        if run["noise_multiplier"] is None:
            continue
        pts = [(p["epsilon"], p["test_accuracy"]) for p in run["curve"] if p["epsilon"] is not None]
        left.plot([e for e, _ in pts], [a for _, a in pts], marker=".", label=f"noise z = {run['noise_multiplier']:g}")
    left.set(xscale="log", xlabel=f"epsilon spent (delta {DELTA:g})", ylabel="test accuracy",
             title="DP-FedAvg: 1,000 clients, 100 a round, logistic model")  # fmt: skip
    left.legend()
    rows = result["scale"]
    x = range(len(rows))
    right.bar([i - 0.2 for i in x], [r["kib_per_picked_client"] for r in rows], 0.4, label="KiB per picked client")
    right.bar([i + 0.2 for i in x], [r["function_ms_per_picked_client"] for r in rows], 0.4,
              label="function ms per picked client")  # fmt: skip
    right.set_xticks(list(x), [f"{r['clients']} clients\n{r['per_round']} a round, degree {r['graph_degree_used']}"
                               for r in rows])  # fmt: skip
    right.set(title="Secure aggregation per client and round")
    right.legend()
    save(fig, png)


def main() -> int:
    parts = set(sys.argv[1:]) or {"default_job", "dropouts", "scale", "dp_curve"}
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    result = {**previous, "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count()}
    with LocalStack(ROOT / "logs" / "bench-privacy") as stack:
        stack.start_database()
        if "dropouts" in parts:
            print("dropouts: 3 of 10 devices vanish after sharing", flush=True)
            result["dropouts"] = dropouts(stack)
            print(json.dumps(result["dropouts"], indent=1), flush=True)
        if "scale" in parts:
            result["scale"] = []
            for n in (100, 1000):
                print(f"scale: {n} clients", flush=True)
                result["scale"].append(scale(stack, n))
                print(json.dumps(result["scale"][-1], indent=1), flush=True)
        if "dp_curve" in parts:
            result["dp_curve"] = [dp_run(stack, z) for z in (None, *NOISE)]
    if "default_job" in parts:
        result["default_job"] = default_job()
    if "dp_curve" in result and "scale" in result:
        write_results(OUT, result, draw, result)
    else:
        OUT.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
