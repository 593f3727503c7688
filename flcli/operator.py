"""The operator's side: create a job (with initial weights), follow it, fetch its models."""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm import tqdm

from clients import transfer
from clients.transport import make_transport
from flcore.domain.config import parse_config
from flcore.shared import weights as wcodec
from flcore.shared.datasets import CHUNK_BYTES


def headline(metrics: dict) -> str:
    """A closed round's federated evaluation in a few words: RMSE for a regression, else accuracy."""
    if "eval_rmse" in metrics:
        return f", fed. eval RMSE {metrics['eval_rmse']:.4f}"
    if "eval_accuracy" in metrics:
        return f", fed. eval acc {metrics['eval_accuracy']:.4f}"
    return ""


# How often ``follow`` looks while the job's last update is due: its end is seen within a tenth of a
# second, not half an interval later on average, for a few more status calls once per job.
FINAL_INTERVAL_S = 0.1


def ending(status: dict) -> bool:
    """Whether the job's end is one update away: the last round (or version) lacks one update."""
    if status["state"] != "running" or status["round"] < status["rounds"]:
        return False
    if status.get("mode") == "async":
        return status["submitted"] >= status["buffer"]["size"] - 1
    return status["submitted"] >= len(status["picked"]) - 1


class Operator:
    def __init__(self, base_url: str, admin_token: str = ""):
        self.transport = make_transport(base_url)
        self.token = admin_token or None

    def call(self, action: str, body: dict | None = None) -> dict:
        return self.transport.call(action, body, token=self.token)

    def start_job(self, overrides: dict, initial_weights: bool = True) -> dict:
        """Create a job; with ``initial_weights``, round 0's model is a seeded initialisation made here.

        Without them, clients build the same seeded initialisation themselves,
        and this process need not import torch.
        """
        body = dict(overrides)
        if initial_weights and parse_config(overrides).model_def.nbytes <= CHUNK_BYTES:  # else: too big to send
            from fllocal import models  # torch: only when asked for

            cfg = parse_config(overrides)
            init = models.build(cfg.model_def, seed=cfg.seed)
            body["weights"] = wcodec.to_b64(models.get_weights(init))
        return self.call("start_training", body)

    def status(self, job_id: str) -> dict:
        return self.call("status", {"job_id": job_id})

    def weights(self, job_id: str, rnd: int | None = None) -> dict:
        """A round's global model (the latest without ``rnd``), however large."""
        body = {"job_id": job_id} if rnd is None else {"job_id": job_id, "round": rnd}
        return wcodec.decode(transfer.model_part(self.call, self.call("get_model", body)))

    def follow(
        self, job_id: str, timeout: float, interval: float = 1.0, on_round: Callable[[dict], None] | None = None
    ) -> dict:
        """Show a progress bar over rounds until the job is done; the final status.

        ``on_round`` is called with each round's history entry once it has closed.
        """
        st = self.status(job_id)
        deadline = time.time() + timeout
        with tqdm(total=st["rounds"], desc=f"{job_id}", unit="round", dynamic_ncols=True) as bar:
            while True:
                st = self.status(job_id)
                done = len(st["history"])
                if done > bar.n:
                    for entry in st["history"][bar.n :] if on_round else []:
                        on_round(entry)
                    bar.update(done - bar.n)
                last = st["history"][-1] if st["history"] else {}
                bar.set_postfix_str(
                    f"{st['state']}, clients {st['subscribed']}/{st['config']['num_clients']}, "
                    + (
                        f"version {st['round']}, buffer {st['submitted']}/{st['buffer']['size']}, "
                        f"{st['buffer']['training']} training"
                        if st.get("mode") == "async"
                        else f"round {st['round']} updates {st['submitted']}/{len(st['picked'])}"
                    )
                    + headline(last.get("metrics", {})),
                    refresh=False,
                )
                bar.refresh()
                if st["state"] in ("done", "stopped"):
                    return st
                if time.time() > deadline:
                    raise TimeoutError(f"job {job_id} not done after {timeout:.0f}s (state {st['state']})")
                time.sleep(min(interval, FINAL_INTERVAL_S) if ending(st) else interval)
