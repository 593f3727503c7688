"""``make bench-encoding``: the default job with each update encoding, in one sitting.

For float32, float16, int8 and int8 with error feedback, it runs the default
``make run`` job (MNIST, 20 clients, 10 per round, 10 local epochs, 10 rounds)
on a fresh local stack and records: the bytes of one update as stored and as
it travels (base64 in the submit's JSON), the function's billed time (in all,
and per round), the median round time and the test accuracy after 10 rounds.
Writes bench/results/encoding.json and encoding.png. ``BENCH_ENCODINGS`` picks
a subset (comma-separated names from the list below).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from flcli.run import _exit_on_sigterm, run_job
from flcore.domain.config import parse_config
from flcore.shared import encodings
from flcore.shared import weights as wcodec

OUT = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "float32": {"update_encoding": "float32"},
    "float16": {"update_encoding": "float16"},
    "int8": {"update_encoding": "int8"},
    "int8+ef": {"update_encoding": "int8", "error_feedback": 1},
}


def update_bytes(overrides: dict) -> dict:
    """One update of the default model in this encoding: bytes stored, and on the wire (base64 in JSON)."""
    cfg = parse_config(overrides)
    rng = np.random.default_rng(0)
    base = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in cfg.model_def.spec.items()}
    trained = {k: v + np.float32(0.01) for k, v in base.items()}
    blob = wcodec.encode(encodings.encode(trained, cfg.update_encoding, base))
    wire = len(json.dumps({"round": 1, "weights": base64.b64encode(blob).decode(), "num_examples": 2700}))
    return {"stored": len(blob), "wire": wire}


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    names = [n for n in os.environ.get("BENCH_ENCODINGS", ",".join(VARIANTS)).split(",") if n]
    rows = {}
    for name in names:
        overrides = VARIANTS[name]
        print(f"\n=== default job, update_encoding {name} ===", flush=True)
        s = run_job(dict(overrides))
        inv = s["invocations"]
        size = update_bytes(overrides)
        rows[name] = {
            "settings": overrides,
            "update_bytes_stored": size["stored"],
            "update_bytes_on_the_wire": size["wire"],
            "test_accuracy": s["test_accuracy"],
            "round_seconds_median": round(statistics.median(s["round_seconds"]), 2),
            "wall_seconds": s["wall_seconds"],
            "function_billed_seconds": inv["billed_seconds"],
            "function_billed_seconds_per_round": round(inv["billed_seconds"] / max(1, len(s["round_seconds"])), 3),
            "invocations": inv["total"],
        }
        print(json.dumps(rows[name]), flush=True)
    ref = rows.get("float32")
    if ref:
        for row in rows.values():
            row["bytes_vs_float32"] = round(row["update_bytes_stored"] / ref["update_bytes_stored"], 3)
    result = {
        "workload": "make run defaults: MNIST iid, 20 clients, 10 per round, 10 local epochs, 10 rounds",
        "cpu_count": os.cpu_count(),
        "encodings": rows,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "encoding.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, OUT / "encoding.png")
    print(f"\nwrote {OUT / 'encoding.json'} and encoding.png", flush=True)
    return 0


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = [
        ("bytes per update (KB, stored)", [rows[n]["update_bytes_stored"] / 1024 for n in names]),
        ("test accuracy after 10 rounds (%)", [100 * rows[n]["test_accuracy"] for n in names]),
        ("function billed seconds per round", [rows[n]["function_billed_seconds_per_round"] for n in names]),
    ]
    for ax, (title, values) in zip(axes, panels):
        ax.bar(names, values, color=["#2563eb", "#16a34a", "#dc2626", "#9333ea"][: len(names)])
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(values):
            ax.annotate(f"{v:.2f}" if v < 100 else f"{v:.1f}", (i, v), ha="center", va="bottom", fontsize=8)
        if "accuracy" in title:
            ax.set_ylim(min(values) - 1, 100)
    fig.suptitle("The default job with each update encoding (one sitting)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
