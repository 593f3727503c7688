"""Local training and evaluation on tensors already in memory."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clients.sgd import MomentumSGD
from flcore.shared.modeldef import CLASSES, TRAIN_PRECISIONS


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    seed: int,
    proximal_mu: float = 0.0,
    restricted_softmax: float = 1.0,
    correction: dict[str, torch.Tensor] | None = None,
    shift: int = 0,
    flip: bool = False,
    weight_decay: float = 0.0,
    loss: str = "cross_entropy",
    precision: str = "float32",
) -> dict[str, float]:
    """SGD with momentum over shuffled mini-batches; returns the last epoch's loss and accuracy.

    With ``proximal_mu`` > 0 (FedProx) the loss gains (mu/2)·||w - w_start||², which
    keeps the local model near the global one it started from. With
    ``restricted_softmax`` < 1 (FedRS) the logits of classes absent from ``y`` are
    scaled by it, so local training does not push those classes down everywhere.
    With ``correction`` (SCAFFOLD's c - c_i, by parameter name) every gradient is
    shifted by it, steering local steps towards the global direction.

    Augmentation, when the job asks for it: ``shift`` moves each batch by up to
    that many pixels in each direction (one random offset per batch, so it costs
    next to nothing), ``flip`` mirrors a random half of each batch left to right
    (for images where that keeps the label, like clothes, not digits).

    ``loss``: ``cross_entropy`` (classes), or ``mse`` / ``huber`` for a regression's one output.

    ``precision``: ``float32``, ``bfloat16`` (the forward pass's convolutions and matrix products in
    bfloat16 under autocast; weights, gradients, optimiser and loss stay float32), or ``auto``:
    bfloat16 for image models on a processor with bfloat16 instructions, else float32
    (:func:`resolve_precision`).
    """
    images = x.dim() == 4
    low = resolve_precision(precision, images) == "bfloat16"
    if images:
        # channels-last: the same maths, 1.3x faster per epoch here on one thread (bench/trainer.py,
        # identical loss); the weights go back to the usual layout before anyone reads them
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    criterion = LOSSES[loss]
    classify = loss == "cross_entropy"
    scale = None
    if restricted_softmax < 1 and classify:
        with torch.no_grad():
            classes = CLASSES if images else int(model(x[:1]).shape[1])
        scale = class_scale(y, restricted_softmax, classes)
    opt = MomentumSGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    loss_sum, correct = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            if shift or flip:
                xb = augment(xb, shift, flip, gen)
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16) if low else contextlib.nullcontext():
                out = model(xb)
            out = out.float() if scale is None else out.float() * scale
            batch_loss = criterion(out, yb)
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                (batch_loss + 0.5 * proximal_mu * prox).backward()
            else:
                batch_loss.backward()
            if correction is not None:
                for name, p in params.items():
                    p.grad.add_(correction[name])
            opt.step()
            loss_sum += batch_loss.item() * len(idx)
            if classify:
                correct += int((out.argmax(1) == yb).sum())
    if images:
        model.to(memory_format=torch.contiguous_format)
    fit = {"train_loss": loss_sum / max(n, 1)}
    return {**fit, "train_accuracy": correct / max(n, 1)} if classify else fit


def resolve_precision(precision: str, images: bool = True) -> str:
    """The precision a device trains in: ``auto`` is bfloat16 only where it is faster, for image
    models (convolutions) on a processor with bfloat16 instructions; elsewhere autocast would
    emulate it, slower than float32."""
    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"unknown training precision {precision!r}: one of {', '.join(TRAIN_PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if images and native_bfloat16() else "float32"
    return precision


@functools.cache
def native_bfloat16() -> bool:
    """Whether this processor computes in bfloat16 natively (x86: AVX512-BF16 or AMX; Arm: BF16)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags to read, and a guess could make training slower
        return False
    flags = set()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def sgd_settings(hp: dict) -> dict:
    """The SGD settings of a round's hyperparameters (``round_config``), as :func:`train` takes them."""
    return {
        "epochs": hp["local_epochs"],
        "batch_size": hp["batch_size"],
        "lr": hp["lr"],
        "momentum": hp["momentum"],
        "weight_decay": float(hp.get("weight_decay", 0.0)),
        "precision": hp.get("train_precision", "float32"),
    }


def _regression(fn):
    """A regression loss on the model's one output column."""
    return lambda out, y: fn(out[:, 0], y)


LOSSES = {
    "cross_entropy": F.cross_entropy,
    "mse": _regression(F.mse_loss),
    "huber": _regression(F.huber_loss),
}


def augment(xb: torch.Tensor, shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """A batch moved by one random offset of up to ``shift`` pixels, and half of it mirrored if ``flip``."""
    if shift:
        dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
        xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
    if flip:
        mirrored = torch.rand(len(xb), generator=gen) < 0.5
        xb = torch.where(mirrored[:, None, None, None], xb.flip(3), xb)
    return xb.contiguous(memory_format=torch.channels_last)


def class_scale(y: torch.Tensor, alpha: float, classes: int) -> torch.Tensor:
    """Per-class logit factors: 1 for classes present in ``y``, ``alpha`` for the others."""
    scale = torch.full((classes,), float(alpha))
    scale[torch.unique(y)] = 1.0
    return scale


@torch.inference_mode()
def outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's raw outputs for every row of ``x``, in evaluation mode."""
    model.eval()
    if not len(x):
        return model(x)
    return torch.cat([model(x[start : start + batch_size]) for start in range(0, len(x), batch_size)])


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 200) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y).

    Small batches keep a client's peak memory low: activations of a 1000-image
    batch alone take ~80 MB, which malloc then keeps in every client.
    """
    model.eval()
    images = x.dim() == 4
    if images:  # channels-last, as in training: the same figures, faster
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        out = model(x[start : start + batch_size])
        yb = y[start : start + batch_size]
        loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    if images:
        model.to(memory_format=torch.contiguous_format)
    n = max(len(x), 1)
    return {"loss": loss_sum / n, "accuracy": correct / n}
