"""Micro-benchmark of the client's local training: the same maths, done in different ways.

One client of the default job (2,700 MNIST examples, batch 50, SGD lr 0.01 momentum 0.5,
one torch thread, as each client runs), timed over a few epochs per variant, interleaved
and repeated so drift hits every variant alike. Reports median seconds per epoch, the
speed-up over the plain loop, and the final loss of each (same seed: same maths should
give the same loss within float noise). Results in bench/results/trainer.json.

    python bench/trainer.py [--repeats 5] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fllocal import data, models

ROOT = Path(__file__).resolve().parent.parent


def plain(model, x, y, epochs, gen, channels_last=False, gather_once=False, foreach=None):
    """The loop a user of any FL framework writes, with switches for each option."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5, foreach=foreach)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    loss_sum = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        xs, ys = (x[order], y[order]) if gather_once else (x, y)
        loss_sum = 0.0
        for start in range(0, len(x), 50):
            if gather_once:
                xb, yb = xs[start : start + 50], ys[start : start + 50]
            else:
                idx = order[start : start + 50]
                xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(yb)
    return loss_sum / len(x)


VARIANTS = {
    "plain": {},
    "channels_last": {"channels_last": True},
    "gather_once": {"gather_once": True},
    "foreach_off": {"foreach": False},
    "channels_last+gather_once": {"channels_last": True, "gather_once": True},
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    images, labels = data.load_raw("mnist")
    x, y = data.to_tensors("mnist", images[:2700], labels[:2700])
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    losses: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, opts in VARIANTS.items():
            model = models.build("cnn_mnist", seed=0)
            gen = torch.Generator().manual_seed(1)
            t0 = time.perf_counter()
            losses[name] = plain(model, x, y, args.epochs, gen, **opts)
            times[name].append((time.perf_counter() - t0) / args.epochs)
    base = statistics.median(times["plain"])
    out = {
        name: {
            "seconds_per_epoch": round(statistics.median(t), 4),
            "speedup": round(base / statistics.median(t), 3),
            "final_loss": round(losses[name], 5),
        }
        for name, t in times.items()
    }
    for name, r in out.items():
        print(f"{name:28s} {r['seconds_per_epoch']:.3f} s/epoch  x{r['speedup']:.2f}  loss {r['final_loss']:.5f}")
    result = {
        "variants": out,
        "repeats": args.repeats,
        "epochs_per_run": args.epochs,
        "examples": len(x),
        "torch": torch.__version__,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (ROOT / "bench" / "results" / "trainer.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
