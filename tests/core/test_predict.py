"""predict in the function (numpy, no torch) against the torch model the clients train, on real test images."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from flcore.shared import inference, modeldef
from flcore.shared import weights as wcodec
from fllocal import data, models
from helpers import call, random_weights, snapshot, subscribe_all


@pytest.fixture(scope="module")
def test_images():
    images, labels = data.load_raw("mnist", train=False)
    return images[:64], labels[:64]


def torch_probs(weights, images, dataset="mnist"):
    model = models.build("cnn_mnist" if dataset != "cifar10" else "cnn_cifar10", dataset)
    models.set_weights(model, weights)
    x, _ = data.to_tensors(dataset, images, np.zeros(len(images), np.int64))
    with torch.inference_mode():
        return torch.softmax(model(x), dim=1).numpy()


@pytest.mark.parametrize("model, dataset", [("cnn_mnist", "mnist"), ("cnn_cifar10", "cifar10")])
def test_numpy_forward_matches_torch(model, dataset):
    weights = models.get_weights(models.build(model, dataset, seed=3))
    rng = np.random.default_rng(0)
    side, c = (28, 1) if dataset == "mnist" else (32, 3)
    pixels = rng.integers(0, 256, size=(16, c, side, side)).astype(np.uint8)
    ours = inference.probabilities(modeldef.resolve(model, dataset), weights, inference.preprocess(dataset, pixels))
    np.testing.assert_allclose(ours, torch_probs(weights, pixels, dataset), atol=1e-4)


def trained_job(store, test_images, **cfg):
    """A job whose round 1 closed with three clients' (different) models."""
    job_id = call(
        "create_job",
        {
            "num_clients": 3,
            "clients_per_round": 3,
            "rounds": 2,
            "weights": wcodec.to_b64(models.get_weights(models.build("cnn_mnist", seed=0))),
            **cfg,
        },
    )["job_id"]
    subs = subscribe_all(job_id, 3)
    trained = []
    for i, sub in enumerate(subs):
        w = models.get_weights(models.build("cnn_mnist", seed=10 + i))
        trained.append(w)
        call("submit", {"round": 1, "weights": wcodec.to_b64(w), "num_examples": 100}, sub["token"])
    call("aggregate", {"job_id": job_id})
    return job_id, subs, trained


def test_global_and_ensemble_predictions_match_torch_on_real_test_images(store, test_images):
    images, _ = test_images
    job_id, subs, trained = trained_job(store, test_images)
    inputs = images[:, 0].tolist()  # 64 images of 28x28 raw pixels
    got = call("predict", {"job_id": job_id, "inputs": inputs})
    global_w = wcodec.from_b64(call("get_model", {"job_id": job_id})["weights"])
    expected = torch_probs(global_w, images)
    np.testing.assert_allclose(np.array(got["probabilities"]), expected, atol=1e-4)
    assert got["classes"] == expected.argmax(1).tolist() and got["model_round"] == 1 and got["mode"] == "global"
    ens = call("predict", {"job_id": job_id, "inputs": inputs, "mode": "ensemble"}, token=subs[0]["token"])
    expected = sum(torch_probs(w, images) for w in trained) / 3
    np.testing.assert_allclose(np.array(ens["probabilities"]), expected, atol=1e-4)
    assert ens["models"] == 3
    assert call("get_model", {"job_id": job_id, "round": 0})["weights"] is not None  # the initial model stays
    first = call("predict", {"job_id": job_id, "inputs": inputs[:2], "round": 0})
    np.testing.assert_allclose(
        np.array(first["probabilities"]),
        torch_probs(models.get_weights(models.build("cnn_mnist", seed=0)), images[:2]),
        atol=1e-4,
    )


def test_a_png_image_is_decoded_like_the_pixels(store, test_images):
    """A 10x enlargement, in grey and in colour, shrinks back to the same pixels: the same probabilities."""
    images, _ = test_images
    job_id, _, _ = trained_job(store, test_images)
    direct = call("predict", {"job_id": job_id, "inputs": images[5:8, 0].tolist()})
    for i in range(3):
        for mode in ("L", "RGB"):
            buf = io.BytesIO()
            big = Image.fromarray(images[5 + i, 0]).resize((280, 280), Image.Resampling.NEAREST)
            big.convert(mode).save(buf, format="PNG")
            got = call("predict", {"job_id": job_id, "image": base64.b64encode(buf.getvalue()).decode()})
            assert np.allclose(got["probabilities"][0], direct["probabilities"][i], atol=1e-5)


def test_a_jpeg_is_refused_with_what_to_send_instead(store, test_images):
    images, _ = test_images
    job_id, _, _ = trained_job(store, test_images)
    buf = io.BytesIO()
    Image.fromarray(images[5, 0]).save(buf, format="JPEG")
    error = call("predict", {"job_id": job_id, "image": base64.b64encode(buf.getvalue()).decode()}, expect=400)["error"]
    assert "PNG" in error and "send pixels" in error


def test_who_may_predict(store, test_images, monkeypatch):
    monkeypatch.setenv("FL_ADMIN_TOKEN", "op")
    job_id = call(
        "create_job", {"num_clients": 1, "clients_per_round": 1, "weights": wcodec.to_b64(random_weights())}, token="op"
    )["job_id"]
    public = call(
        "create_job",
        {"num_clients": 1, "clients_per_round": 1, "public_predict": True, "weights": wcodec.to_b64(random_weights())},
        token="op",
    )["job_id"]
    one = [test_images[0][0, 0].tolist()]
    assert call("predict", {"job_id": job_id, "inputs": one}, expect=401)["error"]
    assert call("predict", {"job_id": job_id, "inputs": one}, token="op")["classes"]
    assert call("predict", {"job_id": public, "inputs": one})["classes"]  # anyone
    other = call("subscribe", {"job_id": public})
    assert "own job" in call("predict", {"job_id": job_id, "inputs": one}, token=other["token"], expect=403)["error"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "either inputs"),
        (
            {
                "inputs": [],
            },
            "1 to 64 images",
        ),
        ({"inputs": [[[0] * 28] * 28] * 65}, "1 to 64 images"),
        ({"inputs": [[[0] * 27] * 28]}, "must be 28x28"),
        ({"inputs": [[[300] * 28] * 28]}, "between 0 and 255"),
        ({"inputs": [[["x"] * 28] * 28]}, "only numbers"),
        ({"inputs": [[[0] * 28] * 28], "image": "x"}, "either inputs"),
        ({"image": "%%%"}, "not valid base64"),
        ({"image": base64.b64encode(b"GIF89a....").decode()}, "must be a PNG"),
        ({"inputs": [[[0] * 28] * 28], "mode": "vote"}, "mode must be one of"),
        ({"inputs": [[[0] * 28] * 28], "round": 7}, "round must be an integer between 0 and 1"),
        ({"inputs": [[[0] * 28] * 28], "round": 0, "mode": "ensemble"}, "round 0 is the initial model"),
    ],
)
def test_bad_predict_requests_are_refused_and_change_nothing(store, raw_db, test_images, body, message):
    job_id, _, _ = trained_job(store, test_images)
    before = snapshot(raw_db)
    assert (
        message in call("predict", {"job_id": job_id, **body}, expect=400 if "round 0" not in message else 404)["error"]
    )
    assert snapshot(raw_db) == before
