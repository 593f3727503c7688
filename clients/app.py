"""The client's Flask app: health, status, and predictions with the current global model."""

from __future__ import annotations

import io

import numpy as np
import torch
from flask import Flask, jsonify, request

from clients.federated_client import FederatedClient
from flcore.shared.datasets import INPUT_SHAPES
from fllocal import data

MAX_UPLOAD_BYTES = 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096  # refuse decompression bombs


class ImageTooLarge(ValueError):
    """An upload whose pixels would not fit in memory (Pillow's decompression-bomb guard)."""


def image_tensor(raw: bytes, dataset: str) -> torch.Tensor:
    """An uploaded image (PNG, JPEG, ...) as one normalised input for ``dataset``'s model.

    Pillow is imported here, not at the top: a tabular device (a Raspberry Pi) need not install it.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    channels, side, _ = INPUT_SHAPES[dataset]
    try:
        img = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    img = img.convert("L" if channels == 1 else "RGB").resize((side, side))
    pixels = np.asarray(img, dtype=np.uint8)
    pixels = pixels[None, None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)[None]
    return data.to_tensors(dataset, pixels, np.zeros(1))[0]


def pixels_tensor(pixels: object, dataset: str) -> torch.Tensor:
    """A JSON array of side x side grey values (0-255) as one normalised input."""
    channels, side, _ = INPUT_SHAPES[dataset]
    arr = np.asarray(pixels, dtype=np.float64)
    if channels != 1 or arr.shape != (side, side) or not np.isfinite(arr).all():
        raise ValueError(f"pixels must be a {side}x{side} array of numbers")
    arr = np.clip(arr, 0, 255).astype(np.uint8)[None, None]
    return data.to_tensors(dataset, arr, np.zeros(1))[0]


def create_app(client: FederatedClient) -> Flask:
    app = Flask(f"fl-{client.name}")
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES

    @app.get("/health")
    def health():
        return jsonify(ok=True, name=client.name)

    @app.get("/status")
    def status():
        ident = client.identity or {}
        return jsonify(
            {
                **client.info,
                "client_id": ident.get("client_id", client.info.get("client_id")),
                "job_id": ident.get("job_id", client.info.get("job_id")),
            }
        )

    @app.post("/predict")
    def predict():
        body = request.get_json(silent=True) if request.is_json else None
        if isinstance(body, dict) and "rows" in body:
            return predict_rows(body)
        if client.learns_rows:
            return jsonify(error='this job learns from rows: send {"rows": [{column: value, ...}, ...]}'), 400
        dataset = client.info.get("dataset")
        if dataset is None:
            return jsonify(error="no global model yet"), 409
        try:
            if "image" in request.files:
                x = image_tensor(request.files["image"].read(), dataset)
            elif request.is_json:
                x = pixels_tensor((request.get_json(silent=True) or {}).get("pixels"), dataset)
            else:
                x = image_tensor(request.get_data(), dataset)
        except (ValueError, OSError) as exc:  # ImageTooLarge is a ValueError
            return jsonify(error=f"cannot read the input as an image: {exc}"), 400
        try:
            label, probs = client.predict(x)
        except LookupError as exc:
            return jsonify(error=str(exc)), 409
        return jsonify(prediction=label, probabilities=probs, model_round=client.info.get("model_round"))

    def predict_rows(body: dict):
        """Rows of a tabular job, with the global model or (``"model": "local"``) the device's own."""
        which = body.get("model", "global")
        if which not in ("global", "local"):
            return jsonify(error='model must be "global" or "local"'), 400
        try:
            answer = client.predict_rows(body["rows"], which)
        except LookupError as exc:
            return jsonify(error=str(exc)), 409
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(**answer, model=which, model_round=client.info.get("model_round"))

    return app
