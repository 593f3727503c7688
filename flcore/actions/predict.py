"""``predict``: answers from a job's global model, or from the ensemble of its clients' models.

The ensemble averages the class probabilities of the models the round's clients
submitted: an inference built from every participant's own model, without
contacting any of them (their updates are already in the database).
"""

from __future__ import annotations

import numpy as np

from flcore.actions.request import Request
from flcore.domain.job import Job
from flcore.errors import Forbidden, Invalid, NotFound
from flcore.shared import inference, png, tabular
from flcore.shared import weights as wcodec
from flcore.shared.datasets import INPUT_SHAPES

MAX_IMAGES = 64
MAX_ROWS = tabular.MAX_ROWS
MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_IMAGE_SIDE = 1024  # decoding is numpy and a byte loop for two of PNG's filters: keep it well under a second
MODES = ("global", "ensemble")


def predict(req: Request) -> dict:
    """Classes and probabilities for ``inputs`` (raw pixel lists) or one base64 ``image``; for a job over
    a declared data set, predictions for ``rows`` (objects of column values)."""
    job = Job.load(req.store, req.job_id(), history=True)
    if not job.doc.get("public_predict"):
        client = req.caller.member().client  # the operator or a client; anyone else is refused
        if client is not None and client["job_id"] != job.id:
            raise Forbidden("a client can only use its own job's model")
    mode = req.body.get("mode", "global")
    if mode not in MODES:
        raise Invalid(f"mode must be one of {list(MODES)}")
    if job.config.task is not None:
        return _predict_rows(req, job, mode)
    pixels = _pixels(req.body, job.config.dataset)
    rnd = _round(req, job)
    x = inference.preprocess(job.config.dataset, pixels)
    if mode == "global":
        blob = req.store.get_model(job.id, rnd, job.model_owner(rnd))
        if blob is None:
            raise NotFound(f"no model for round {rnd}")
        probs = inference.probabilities(job.config.model_def, wcodec.decode(blob), x)
        used = 1
    else:
        models = _client_models(req, job, rnd)
        probs = sum(inference.probabilities(job.config.model_def, w, x) for w in models) / len(models)
        used = len(models)
    return {
        "job_id": job.id,
        "model_round": rnd,
        "mode": mode,
        "models": used,
        "classes": [int(c) for c in probs.argmax(axis=1)],
        "probabilities": [[round(float(p), 6) for p in row] for row in probs],
    }


def _outputs(req: Request, job: Job, mode: str, rnd: int, x: np.ndarray) -> tuple[np.ndarray, int]:
    """The network's raw outputs for ``x``: the global model's, or the mean over the clients' models
    (of the probabilities for a classifier, of the values for a regression)."""
    mdef = job.config.model_def
    if mode == "global":
        blob = req.store.get_model(job.id, rnd, job.model_owner(rnd))
        if blob is None:
            raise NotFound(f"no model for round {rnd}")
        return inference.logits(mdef, wcodec.decode(blob), x), 1
    models = _client_models(req, job, rnd)
    if job.config.task.task == "regression":
        return sum(inference.logits(mdef, w, x) for w in models) / len(models), len(models)
    probs = sum(inference.probabilities(mdef, w, x) for w in models) / len(models)
    return np.log(np.maximum(probs, 1e-300)), len(models)  # as logits whose softmax is the mean


def _predict_rows(req: Request, job: Job, mode: str) -> dict:
    """Predictions for raw ``rows`` of a tabular job, encoded with the job's stored encoding."""
    encoding = job.doc.get("encoding")
    if encoding is None:
        raise NotFound(f"job {job.id} has no encoding yet: its devices have not sent their statistics")
    rows = req.body.get("rows")
    if "inputs" in req.body or "image" in req.body:
        raise Invalid(f"job {job.id} learns from rows: send rows, a list of objects of column values")
    x = rows_input(encoding, rows)
    rnd = _round(req, job)
    out, used = _outputs(req, job, mode, rnd, x)
    reply = {"job_id": job.id, "model_round": rnd, "mode": mode, "models": used, "target": encoding["target"]["name"]}
    answer = tabular.answers(encoding, out)
    if "learnt" in answer:
        return {**reply, **answer, "transform": encoding["target"]["transform"]}
    return {**reply, **answer}


def rows_input(encoding: dict, rows: object) -> np.ndarray:
    """Raw rows as the network's input, or a 400 naming the row and the column that is wrong."""
    try:
        return tabular.encode_rows(encoding, rows, MAX_ROWS)
    except tabular.CellError as exc:
        raise Invalid(str(exc)) from None


def _round(req: Request, job: Job) -> int:
    latest = job.doc.get("model_round")
    if latest is None:
        raise NotFound(f"job {job.id} has no model yet")
    rnd = req.integer("round", 0, latest, required=False)
    if rnd is None and job.doc.get("retrain_from") is not None and not job.finished:
        return job.doc["retrain_from"]  # retraining on changed data: the last final version until the new one is
    return latest if rnd is None else rnd


def _client_models(req: Request, job: Job, rnd: int) -> list[dict[str, np.ndarray]]:
    """The models the clients submitted in round ``rnd`` and the aggregation counted (model tensors only)."""
    entry = next((h for h in job.doc.get("history", []) if h["round"] == rnd), None)
    if entry is None:
        raise NotFound(f"round {rnd} has no client models (round 0 is the initial model)")
    counted = set(entry["client_ids"])
    names = set(job.config.model_def.spec)  # not SCAFFOLD's control variates beside them
    models = [
        {k: v for k, v in wcodec.decode(req.store.update_weights(d)).items() if k in names}
        for d in req.store.load_updates(job.id, rnd)
        if d["client_id"] in counted
    ]
    if not models:
        raise NotFound(f"the client models of round {rnd} are no longer stored")
    return models


def _pixels(body: dict, dataset: str) -> np.ndarray:
    """The request's images as an N x C x H x W array of 0..255 values, or a 400."""
    c, side, _ = INPUT_SHAPES[dataset]
    if ("inputs" in body) == ("image" in body):
        raise Invalid("send either inputs (a list of images as pixel lists) or image (base64 PNG)")
    if "image" in body:
        return _decode_image(body["image"], c, side)[None]
    raw = body["inputs"]
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_IMAGES:
        raise Invalid(f"inputs must be a list of 1 to {MAX_IMAGES} images")
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (ValueError, TypeError):
        raise Invalid("inputs must hold only numbers, every image the same shape") from None
    shape = arr.shape[1:]
    if c == 1 and shape in ((side, side), (1, side, side)):
        arr = arr.reshape(len(arr), 1, side, side)
    elif c > 1 and shape == (side, side, c):
        arr = arr.transpose(0, 3, 1, 2)
    elif shape != (c, side, side):
        want = f"{side}x{side}" if c == 1 else f"{c}x{side}x{side} or {side}x{side}x{c}"
        raise Invalid(f"each image of {dataset} must be {want} pixel values")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        raise Invalid("pixel values must be between 0 and 255")
    return arr


def _decode_image(raw: object, channels: int, side: int) -> np.ndarray:
    """A base64 PNG as C x side x side pixels (converted to the data set's channels, area-resized)."""
    if not isinstance(raw, str) or len(raw) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise Invalid(f"image must be base64 text of at most {MAX_IMAGE_BYTES} bytes")
    data = wcodec.b64_field(raw.split(",", 1)[-1] if raw.startswith("data:") else raw, "image")
    try:
        if max(png.size(data)) > MAX_IMAGE_SIDE:  # from the header, before any pixel is decoded
            raise Invalid(f"image is larger than {MAX_IMAGE_SIDE} pixels on a side: scale it down")
        return png.resize(png.to_channels(png.decode(data), channels), side)
    except png.PngError as exc:
        raise Invalid(f"image must be a PNG: {exc}") from None
