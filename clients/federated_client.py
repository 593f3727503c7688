"""The client's side of the round protocol, driven by an APScheduler job.

Each tick asks the function what to do (``poll``) and schedules the next tick
after the ``retry_after`` it was given, so a client hears of a new round within
about a second and trains as soon as it is picked.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import torch
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from clients import control, files, memory, trainer, transfer
from clients.calls import CallLog
from clients.device import Device, fails_in
from clients.logbook import Logbook
from clients.secure import SecureClient, Trained
from clients.settings import ClientSettings
from clients.slots import TrainerSlots
from clients.tabular import TabularTask
from clients.transport import FunctionError, Transport
from flcore.shared import clipping, encodings, modeldef, tabular
from flcore.shared import weights as wcodec
from flcore.shared.partition import partition_indices, train_eval_split
from fllocal import data, models

log = logging.getLogger("clients")

IDLE_RETRY_S = 2.0
TICK_S = 0.25  # how often the scheduler checks whether a protocol step is due
IMMEDIATE_STEPS = 3  # steps taken at once, one after the other, while each asks for the next at once
MAX_BACKOFF_S = 30.0
DATA_CHECK_S = 5.0  # how often a device with declared data sets looks whether their files changed


class TrainingFailed(Exception):
    """Local training could not run (data missing, model or trainer error): the client leaves the job."""


@contextlib.contextmanager
def _failures_as(kind: type[Exception]) -> Iterator[None]:
    """Any error of the local work in the block, as ``kind`` (the function's answers are not local work)."""
    try:
        yield
    except FunctionError:
        raise
    except Exception as exc:
        raise kind(f"{type(exc).__name__}: {exc}") from exc


def _job_in_file(path: str) -> str | None:
    """The job id written to ``path`` (``""``: no file asked for, so no pin; None: not written yet)."""
    if not path:
        return ""
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


class FederatedClient:
    """One client: its identity (kept in a state file), its shard, its latest global model."""

    def __init__(
        self,
        transport: Transport,
        state_path: Path,
        name: str,
        slowdown: float = 1.0,
        slots: TrainerSlots | None = None,
        serves_predictions: bool = True,
        settings: ClientSettings | None = None,
    ):
        self.settings = settings or ClientSettings.from_env()  # the process's, read once by its entry point
        self.transport = transport
        self.state_path = state_path
        self.name = name
        self.slowdown = slowdown  # > 1: stands for a slower device (clients/slowdown.py)
        self.slots = slots  # shared with the machine's other clients: who may compute now
        self.serves_predictions = serves_predictions  # keep the latest global model for /predict
        self.identity: dict | None = self._load_identity()
        self._residual: dict = {}  # what int8 rounding left over, carried into the next update (error feedback)
        self.device = Device(transport, state_path.with_suffix(".device.json"), self.settings)
        self.control = control.ControlVariate(state_path.with_suffix(".control"))
        self.info: dict = {"name": name, "round": None, "phase": "starting", "last": {}, "errors": 0}
        self._data: tuple[str, data.Shard] | None = None  # (job_id, this client's share of its data set)
        self._task: tuple | None = None  # a tabular job's (job_id, TabularTask, local-only model)
        self._model: torch.nn.Module | None = None
        self._model_lock = threading.Lock()
        self._encoding: dict | None = None  # a tabular job's encoding, for /predict of rows
        self._data_checked = float("-inf")
        self._failures = 0
        self._next_due = 0.0
        self._scheduler: BackgroundScheduler | None = None
        self.calls = CallLog()
        self.secure = SecureClient(self._call, lambda: self.identity["client_id"])
        self.logbook = Logbook()  # what goes to the operator with the next poll (flctl logs)

    # identity -----------------------------------------------------------
    def _load_identity(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def _save_identity(self, identity: dict | None) -> None:
        self.identity = identity
        self.control.clear()  # a control variate belongs to one job
        self._residual = {}  # and so does what int8 rounding left over
        if identity is None:
            self.state_path.unlink(missing_ok=True)
            return
        files.write_atomic(self.state_path, json.dumps(identity).encode())

    def _call(self, action: str, body: dict | None = None) -> dict:
        reply = None
        started = time.perf_counter()
        try:
            reply = self.transport.call(action, body, token=self.identity["token"] if self.identity else None)
            return reply
        finally:
            self.calls.count(action, reply, time.perf_counter() - started)

    # protocol -----------------------------------------------------------
    def _check_data(self) -> None:
        """Every DATA_CHECK_S, whether the device's declared data changed (then the function hears of it)."""
        if not self.settings.data_config or time.monotonic() < self._data_checked + DATA_CHECK_S:
            return
        self._data_checked = time.monotonic()
        try:
            self.device.report_if_changed()
        except Exception as exc:  # the next look tries again; training goes on meanwhile
            log.warning("%s: could not report changed data: %s", self.name, exc)

    def tick(self) -> float:
        """One step of the protocol; returns seconds until the next step."""
        self._check_data()
        if self.identity is None:
            return self._find_job()
        lines = self.logbook.take()
        try:
            reply = self._call("poll", {"log": lines} if lines else None)
        except FunctionError as exc:
            self.logbook.give_back(lines)
            if exc.status in (401, 403, 404):  # our job or identity is gone: start afresh
                log.warning("%s: identity refused (%s); joining again", self.name, exc)
                self._save_identity(None)
                return 0.0
            raise
        self.info.update(job_id=reply["job_id"], round=reply["round"])
        secure = reply.get("secure")
        if reply["action"] == "train" and secure and self.secure.holds(reply["job_id"], reply["round"]):
            return self.secure.advertise(reply["job_id"], reply["round"], secure["attempt"])  # a retry: fresh keys
        if reply["action"] == "secure":
            return self.secure.step(reply["job_id"], secure)
        if reply["action"] == "train":
            self.calls.trained()
            # the function replaces a picked client it has not heard from in client_timeout_s: say we
            # are alive while training (or waiting for a trainer slot) takes longer than half of that
            every = float((reply.get("config") or {}).get("client_timeout_s", 60.0)) / 2
            try:
                with self._heartbeat(every):
                    # async mode: "round" is the model version to start from, which may no longer be the newest
                    return self._train_round(reply["round"], on_version=reply.get("mode") == "async", offered=reply)
            except TrainingFailed as exc:
                self._leave(str(exc))
            finally:
                # the round's peak need not stay with this client while it waits; only once the round's
                # tensors are freed, as it returned (given back while they were alive, their pages stayed)
                memory.release()
            return 0.0
        if reply["action"] == "statistics":
            try:
                return self._send_statistics(reply)
            except TrainingFailed as exc:
                self._leave(str(exc))
            return 0.0
        if reply["action"] == "done":
            self._fetch_model()
            self.info["phase"] = reply["state"] if reply["state"] in ("done", "stopped") else "left"
            why = reply.get("stopped_because")
            log.info("%s: job %s is %s%s", self.name, reply["job_id"], self.info["phase"], f": {why}" if why else "")
            self._save_identity(None)  # free to join the next job
            return IDLE_RETRY_S
        self.info["phase"] = "waiting"
        return float(reply.get("retry_after") or 1.0)

    @contextlib.contextmanager
    def _heartbeat(self, every: float) -> Iterator[None]:
        """Tell the function every ``every`` seconds that this client is alive, until the block ends."""
        stop = threading.Event()
        token = self.identity["token"]

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self.transport.call("heartbeat", {}, token=token)
                except Exception as exc:  # the next beat, or the submit, tries again
                    log.info("%s: heartbeat failed: %s", self.name, exc)

        thread = threading.Thread(target=beat, name=f"{self.name}-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()

    def _find_job(self) -> float:
        """Register once, then join the best offer (or ``FL_JOB_ID``, or the job named in the file
        ``FL_JOB_ID_FILE`` once it exists); one job at a time."""
        pinned = self.settings.job_id or _job_in_file(self.settings.job_id_file)
        if pinned is None:  # the job is about to be created: the function may not even answer yet
            self.info["phase"] = "waiting for the job"
            if self.device.identity is None:  # register meanwhile, so that joining is one call once it exists
                with contextlib.suppress(OSError, FunctionError):  # not answering yet: the next tick tries again
                    self.device.token  # noqa: B018  (registers)
            return TICK_S
        try:
            token = self.device.token
            offers = [{"job_id": pinned}] if pinned else self.transport.call("offers", {}, token=token)["jobs"]
        except FunctionError as exc:
            if exc.status == 401:  # the function no longer knows this device (a new database)
                log.warning("%s: the function does not know this device (%s); registering again", self.name, exc)
                self.device.forget()
            self.info["phase"] = "looking for a job"
            if exc.status in (401, 404, 409):
                return IDLE_RETRY_S
            raise
        for offer in offers:
            try:
                reply = self.transport.call("join", {"job_id": offer["job_id"]}, token=token)
            except FunctionError as exc:
                if exc.status in (403, 404, 409):  # taken, full or not for us after all: the next offer
                    log.info("%s: could not join %s (%s)", self.name, offer["job_id"], exc)
                    continue
                raise
            self._save_identity(
                {
                    **{k: reply[k] for k in ("job_id", "client_id", "token", "index")},
                    "name": offer.get("name"),
                    "tags": offer.get("tags", []),
                }
            )
            self.info.update(client_id=reply["client_id"], job_id=reply["job_id"], phase="joined")
            log.info(
                "%s: joined %s as %s (partition %s)", self.name, reply["job_id"], reply["client_id"], reply["index"]
            )
            return 0.0
        self.info["phase"] = "looking for a job"
        return IDLE_RETRY_S

    def _leave(self, reason: str) -> None:
        """Tell the function this job cannot be done here, and free the client for the next offer."""
        log.warning("%s: leaving job %s: %s", self.name, self.identity["job_id"], reason)
        self.logbook.add("error", f"leaving the job: {reason}", self.info.get("round"))
        try:
            self._call("leave", {"reason": reason[:200]})
        finally:
            self.info.update(phase="left", left_reason=reason[:200])
            self._save_identity(None)

    def _shard(self, job_id: str) -> data.Shard:
        if self._data is None or self._data[0] != job_id:
            spec = self._call("partition")
            with _failures_as(TrainingFailed):
                self._data = (job_id, self._load_shard(spec))
        return self._data[1]

    @staticmethod
    def _load_shard(spec: dict) -> data.Shard:
        """This client's share of the data set: its train and evaluation examples."""
        images, labels = data.load_raw(spec["dataset"])
        mine = partition_indices(labels, spec)
        train_idx, eval_idx = train_eval_split(mine, spec["train_fraction"])
        if spec.get("max_train_examples"):  # a quick try: its evaluation is capped alike
            train_idx = train_idx[: spec["max_train_examples"]]
            eval_idx = eval_idx[: spec["max_train_examples"]]
        return data.Shard(spec["dataset"], (images[train_idx], labels[train_idx]), (images[eval_idx], labels[eval_idx]))

    def _tabular(self, reply: dict) -> TabularTask:
        """This job's work on the data set the device declared (read once per job)."""
        if self._task is None or self._task[0] != reply["job_id"]:
            name = reply["data"]["name"]
            with _failures_as(TrainingFailed):
                source = self.settings.declared().get(name)
                if source is None:
                    raise LookupError(f"this device declares no data set {name!r} (FL_DATA_CONFIG)")
                self._task = (reply["job_id"], TabularTask(source, reply), None)
        return self._task[1]

    def _send_statistics(self, reply: dict) -> float:
        """The statistics step of a tabular job: this device's sums and counts, never a row."""
        self.info["phase"] = "statistics"
        with _failures_as(TrainingFailed):
            stats = self._tabular(reply).stats()
        self._call("statistics", {"stats": stats})
        log.info("%s: sent the statistics of %d training rows for job %s", self.name, stats["rows"], reply["job_id"])
        self.info["phase"] = "waiting"
        return 0.5

    def _local_model(self, cfg: dict) -> torch.nn.Module:
        """The model this device trains on its own rows alone, from the job's initial weights (kept per job)."""
        job_id, task, local = self._task
        if local is None:
            local = models.build(self._model_def(cfg), seed=cfg["seed"])
            self._task = (job_id, task, local)
        return local

    @staticmethod
    def _model_def(cfg: dict) -> modeldef.ModelDef:
        return modeldef.for_job(cfg["model"], cfg["dataset"], cfg.get("data"))

    def _global_model(self, reply: dict) -> torch.nn.Module:
        cfg = reply["config"]
        model = models.build(self._model_def(cfg), seed=cfg["seed"])  # the job's shared initialisation
        blob = transfer.model_part(self._call, reply)
        if blob is not None:
            models.set_weights(model, wcodec.decode(blob))
        return model

    def _fetch_model(self) -> None:
        reply = self._call("get_model")
        if not self.serves_predictions:
            return
        with self._model_lock:
            self._model = self._global_model(reply)
            self._encoding = reply.get("encoding")
            self.info["model_round"] = reply["model_round"]
            self.info["dataset"] = reply["config"]["dataset"]

    def _train_round(self, rnd: int, on_version: bool = False, offered: dict | None = None) -> float:
        """Train on round ``rnd``'s model (the one ``offered`` with the poll's answer, else asked for) and
        submit; seconds until the function wants to hear from this client again."""
        self.info["phase"] = f"training {'on version' if on_version else 'round'} {rnd}"
        started = time.perf_counter()
        reply = (
            offered
            if offered and "round_config" in offered
            else self._call("get_model", {"round": rnd} if on_version else None)
        )
        cfg = reply["config"]
        model = self._global_model(reply)
        encoding = cfg.get("update_encoding", "float32")
        # int8 updates are changes from the model received, when the function holds it (not a seeded one)
        base = models.get_weights(model) if encoding == "int8" and reply.get("model_round") is not None else None
        clip = reply["round_config"].get("dp_clip_norm")  # a DP job: this device bounds its own change
        received = (base if base is not None else models.get_weights(model)) if clip else None
        # /predict serves the latest global model, not the one in training; while a job retrains on
        # changed data, the model of its last final version until the new one is final
        keep = reply.get("retraining") and self._model is not None and self._encoding is not None
        if self.serves_predictions and not keep:
            with self._model_lock:
                self._model = copy.deepcopy(model)
                self._encoding = reply.get("encoding")
        self.info.update(model_round=reply["model_round"], dataset=cfg["dataset"])
        task = self._tabular(reply) if cfg.get("data") else None
        rows = task.tensors(reply["encoding"]) if task is not None else None
        shard = self._shard(reply["job_id"]) if task is None else None
        hp = reply["round_config"]  # this round's hyperparameters, as the job sets them
        server_c = transfer.model_part(self._call, reply, "tensors") if hp.get("control_variates") else None
        asked = time.perf_counter()
        with self.slots.hold() if self.slots else contextlib.nullcontext(), _failures_as(TrainingFailed):
            fit_started = time.perf_counter()  # the device's own time starts: not the wait for a slot
            fit_cpu = time.thread_time()
            # an image shard's floats are made once this client may train, and freed after the round:
            # the clients waiting for a trainer never hold them
            xt, yt, xe, ye = rows if rows is not None else shard.tensors()
            if fails_in(self.name, self.identity, self.settings):
                raise RuntimeError("simulated failure (FL_FAIL_JOBS)")
            # federated evaluation of the received model
            before = (
                task.evaluate(model, reply["encoding"], xe, ye, "eval_") if task else trainer.evaluate(model, xe, ye)
            )
            scaffold = (
                control.ScaffoldRound(self.control, server_c, models.get_weights(model))
                if hp.get("control_variates")
                else None
            )
            seed = int(cfg["seed"]) * 1_000_003 + rnd * 1009 + self.identity["index"]
            fit = trainer.train(
                model,
                xt,
                yt,
                **trainer.sgd_settings(hp),
                proximal_mu=hp.get("proximal_mu", 0.0),
                restricted_softmax=hp.get("restricted_softmax", 1.0),
                correction=scaffold.correction() if scaffold else None,
                shift=int(hp.get("augment_shift", 0)),
                flip=bool(hp.get("augment_flip", False)),
                loss=task.loss if task else "cross_entropy",
                seed=seed,
            )
            update = models.get_weights(model)
            if task is not None and cfg["data"].get("compare_local", True):
                before.update(self._train_local(task, cfg, hp, reply["encoding"], (xt, yt, xe, ye), seed))
            if scaffold:
                update = scaffold.update(update, len(xt), hp)
            private = {}
            if received is not None:
                update, norm = clipping.clip_change(update, received, float(clip))
                private = {"dp_unclipped": norm <= clip}
                self.info["dp_change_norm"] = norm  # seen on this device only, never sent
        # the processor time of evaluating and training, beside its wall time: what other work on the
        # machine took from it (seen in the round's log line and the client's /status)
        self.info["train_cpu_seconds"] = round(time.thread_time() - fit_cpu, 2)
        if self.slowdown > 1:  # a slower device would have taken this much longer
            time.sleep((self.slowdown - 1) * (time.perf_counter() - fit_started))
        received = before if task else {"eval_loss": before["loss"], "eval_accuracy": before["accuracy"]}
        metrics = {
            **fit,
            **received,
            "eval_examples": float(len(xe)),
            "train_seconds": time.perf_counter() - started - (fit_started - asked),
        }
        if reply.get("secure"):  # secure aggregation: the update leaves only masked, stage by stage
            noise = {k: float(hp[k]) for k in ("dp_noise_stddev", "dp_count_stddev") if k in hp}
            trained = Trained(reply["job_id"], rnd, update, len(xt), metrics, private.get("dp_unclipped", True), noise)
            self.secure.keep(trained)
            self.info["last"] = {"round": rnd, **metrics, "accepted": None, "note": "secure: masked in stages"}
            self._round_line(rnd, metrics, fit, "; sent masked, in stages")
            return self.secure.advertise(reply["job_id"], rnd, reply["secure"]["attempt"])
        residual = self._residual if cfg.get("error_feedback") else None
        tensors = encodings.encode(update, encoding, base, residual)
        try:
            result = transfer.submit(
                self._call,
                {"round": rnd, "num_examples": len(xt), "metrics": metrics, **private},
                wcodec.encode(tensors),
            )
        except FunctionError as exc:
            if exc.status != 409 or "is not open" not in exc.message:
                raise
            # the round closed, or the job stopped, while this client trained: not an error of this client
            log.info("%s: round %d closed while it trained (%s); the next poll says what now", self.name, rnd, exc)
            self.info["last"] = {"round": rnd, **metrics, "accepted": False, "note": exc.message[:200]}
            return 0.0
        if scaffold:
            scaffold.commit()
        self.info["last"] = {"round": rnd, **metrics, "accepted": result.get("accepted")}
        self._round_line(rnd, metrics, fit)
        return float(result.get("retry_after") or 0.0)

    def _round_line(self, rnd: int, metrics: dict, fit: dict, note: str = "") -> None:
        """One line per round, in the client's log and to the operator (flctl logs)."""
        evaluated = (
            f"accuracy {metrics['eval_accuracy']:.4f}"
            if "eval_accuracy" in metrics
            else f"loss {metrics.get('eval_loss', math.nan):.4f}"
        )
        line = (
            f"round {rnd} trained in {metrics['train_seconds']:.1f}s "
            f"({self.info.get('train_cpu_seconds', math.nan):.1f}s of processor), loss {fit['train_loss']:.4f}, "
            f"eval {evaluated} of received model{note}"
        )
        log.info("%s: %s", self.name, line)
        self.logbook.add("info", line, rnd)

    def _train_local(self, task: TabularTask, cfg: dict, hp: dict, encoding: dict, rows: tuple, seed: int) -> dict:
        """Evaluate, then train one round further, the model this device learns from its own rows alone:
        evaluated before training, it has had as many epochs as the received global model."""
        xt, yt, xe, ye = rows
        local = self._local_model(cfg)
        got = task.evaluate(local, encoding, xe, ye, "local_")
        trainer.train(local, xt, yt, **trainer.sgd_settings(hp), loss=task.loss, seed=seed + 7)
        return got

    # serving ------------------------------------------------------------
    @property
    def learns_rows(self) -> bool:
        """Whether the model this client serves is a tabular job's (it answers rows, not images)."""
        return self._encoding is not None

    @torch.inference_mode()
    def predict_rows(self, rows: object, which: str = "global") -> dict:
        """Predictions for raw rows with the latest global model (``which="local"``: the model trained on
        this device's rows alone), encoded as the job encodes them; a ValueError names a bad row."""
        with self._model_lock:
            encoding = self._encoding
            if which == "local":
                model = self._task[2] if self._task is not None else None
            else:
                model = self._model
            if encoding is None or model is None:
                raise LookupError(f"no {which} model for rows yet")
            x = torch.from_numpy(tabular.encode_rows(encoding, rows))
            model.eval()
            out = model(x).numpy()
        return tabular.answers(encoding, out)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> tuple[int, list[float]]:
        with self._model_lock:
            if self._model is None:
                raise LookupError("no global model yet")
            self._model.eval()
            probs = torch.softmax(self._model(x), dim=1)[0]
        return int(probs.argmax()), [round(float(p), 6) for p in probs]

    # scheduling ---------------------------------------------------------
    def due(self) -> bool:
        """Whether the last protocol step asked to be called again by now."""
        return time.monotonic() >= self._next_due

    def run_tick(self) -> None:
        """Runs every TICK_S; does a protocol step only when the last one asked to be called again.

        One interval job, never re-added from inside itself: a job that re-adds
        itself while still running is skipped by APScheduler (max_instances=1),
        and a skipped one-shot job never runs again.
        """
        if not self.due():
            return
        try:
            delay = self.tick()
            for _ in range(IMMEDIATE_STEPS):  # "at once" (joined, submitted): the next step now, not a tick later
                if delay > 0:
                    break
                delay = self.tick()
            self._failures = 0
        except Exception as exc:  # keep polling whatever went wrong; report it in /status
            self._failures += 1
            self.info["errors"] += 1
            self.info["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
            delay = min(MAX_BACKOFF_S, 0.5 * 2**self._failures)
            log.warning("%s: %s; retrying in %.1fs", self.name, self.info["last_error"], delay)
            self.logbook.add("error", f"{self.info['last_error']}; retrying in {delay:.1f}s", self.info.get("round"))
        # +-20 % jitter keeps a fleet of clients from calling the function in lockstep
        self._next_due = time.monotonic() + delay * random.uniform(0.8, 1.2)

    def start(self) -> BackgroundScheduler:
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._scheduler.add_job(self.run_tick, "interval", seconds=TICK_S, id="poll", next_run_time=datetime.now())
        self._scheduler.start()
        return self._scheduler

    def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        with contextlib.suppress(OSError):  # what it asked of the function, for the run's report (flcli.run)
            files.write_atomic(self.state_path.with_suffix(".calls.json"), json.dumps(self.calls.as_dict()).encode())
