"""Devices with data of their own, as real client processes on this machine: for the tabular demo,
its tests, and anyone trying a data set before putting it on real devices.

Each device gets a folder with its CSV file and its ``FL_DATA_CONFIG`` file, and
runs ``python -m clients`` with them, exactly as it would on a Raspberry Pi.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from flcli.devstack import ROOT, free_port_block


def write_device(folder: Path, dataset: str, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """A device's folder: ``<dataset>.csv`` with these rows and the ``data.json`` declaring it; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{dataset}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    config = {"datasets": [{"name": dataset, "format": "csv", "path": f"{dataset}.csv"}]}
    (folder / "data.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder / "data.json"


@contextlib.contextmanager
def running(
    base_url: str, configs: Mapping[str, Path], state_dir: Path, log_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[list[subprocess.Popen]]:
    """One client process per device (name -> its data-set file), stopped on exit."""
    port = free_port_block(len(configs))
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for i, (name, config) in enumerate(configs.items()):
            child = {
                **os.environ,
                **(env or {}),
                "FL_DATA_CONFIG": str(config),
                "FL_DEVICE_DATASETS": "none",  # offer only the declared data set, not the built-in ones
                "PYTHONPATH": str(ROOT),
            }
            cmd = [sys.executable, "-m", "clients", "--name", name, "--port", str(port + i), "--base-url", base_url]
            cmd += ["--state-dir", str(state_dir / name)]
            with open(log_dir / f"{name}.log", "ab") as log:
                procs.append(subprocess.Popen(cmd, env=child, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
