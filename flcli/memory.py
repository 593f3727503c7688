"""Peak memory of a set of process trees, counted the way the machine pays for it.

RSS double-counts pages that forked clients share; PSS splits each shared page
among the processes that map it, so the sum is the real footprint.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def children_map() -> dict[int, list[int]]:
    """Every process's children, from one reading of /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(roots: list[int]) -> set[int]:
    kids = children_map()
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(kids.get(pid, []))
    return seen


def pss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total / 1024


def system_used_mb() -> float:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


class PeakMemory:
    """Samples in a background thread until stopped; keeps the peaks."""

    def __init__(self, roots: Callable[[], list[int]], interval: float = 2.0):
        self.roots = roots
        self.interval = interval
        self.baseline_system_mb = system_used_mb()
        self.peak_pss_mb = 0.0
        self.peak_system_delta_mb = 0.0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        pids = tree(self.roots())
        self.peak_pss_mb = max(self.peak_pss_mb, pss_mb(pids))
        self.peak_processes = max(self.peak_processes, len(pids))
        self.peak_system_delta_mb = max(self.peak_system_delta_mb, system_used_mb() - self.baseline_system_mb)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def as_dict(self) -> dict:
        return {
            "peak_pss_mb": round(self.peak_pss_mb, 1),
            "peak_system_used_delta_mb": round(self.peak_system_delta_mb, 1),
            "peak_processes": self.peak_processes,
        }
