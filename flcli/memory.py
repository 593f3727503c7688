"""Peak memory of a set of process trees, counted the way the machine pays for it.

RSS double-counts pages that forked clients share; PSS splits each shared page
among the processes that map it, so the sum is the real footprint.
"""

from __future__ import annotations

import os
import threading
import time
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


def rss_kb(pids: set[int]) -> int:
    """The summed resident size of ``pids``: a cheap upper bound of their PSS, one small read each."""
    total = 0
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_kb
        except (OSError, IndexError, ValueError):
            continue
    return total


def system_used_mb() -> float:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


class PeakMemory:
    """Samples in a background thread until stopped; keeps the peaks.

    PSS is dear to read: the kernel walks every mapping of every process, about a quarter
    of a core-second for the default run's 28 processes, which is an eighth of a core when
    taken every 2 s. RSS is one small read per process, so it is read every interval and
    PSS only when the summed RSS passes its last high by 1 % (where a new PSS peak can be)
    or a while has passed since the last reading.
    """

    PSS_AT_LEAST_EVERY_S = 30.0

    def __init__(self, roots: Callable[[], list[int]], interval: float = 1.0):
        self.roots = roots
        self.interval = interval
        self.baseline_system_mb = system_used_mb()
        self.peak_pss_mb = 0.0
        self.peak_system_delta_mb = 0.0
        self.peak_processes = 0
        self.pss_readings = 0
        self._peak_rss_kb = 0
        self._last_pss_at = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self, force: bool = False) -> None:
        pids = tree(self.roots())
        rss = rss_kb(pids)
        now = time.monotonic()
        if force or rss > self._peak_rss_kb * 1.01 or now - self._last_pss_at >= self.PSS_AT_LEAST_EVERY_S:
            self.peak_pss_mb = max(self.peak_pss_mb, pss_mb(pids))
            self.pss_readings += 1
            self._last_pss_at = now
        self._peak_rss_kb = max(self._peak_rss_kb, rss)
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
            "pss_readings": self.pss_readings,
        }
