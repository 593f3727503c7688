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


def pss_kb_each(pids: set[int]) -> dict[int, int]:
    """Each live process's PSS in kB (one that exited meanwhile is left out)."""
    out = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out[pid] = int(line.split()[1])
                    break
        except OSError:
            continue
    return out


def pss_mb(pids: set[int]) -> float:
    return sum(pss_kb_each(pids).values()) / 1024


def process_kind(pid: int) -> str:
    """What a process is, for a memory breakdown: the module a Python runs (``-m``), the script, or
    the program."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "exited"
    args = [a for a in args if a]
    if "-m" in args[:-1]:
        return args[args.index("-m") + 1]
    if "-c" in args[:-1]:
        code = args[args.index("-c") + 1]
        return "multiprocessing worker" if "multiprocessing" in code else "python -c"
    program = Path(args[0]).name if args else "?"
    script = next((a for a in args[1:] if not a.startswith("-")), None) if program.startswith("python") else None
    return Path(script).name if script else program


def by_kind(pss_kb: dict[int, int]) -> dict[str, dict]:
    """PSS grouped by :func:`process_kind`, largest first: how many processes, how many MB."""
    groups: dict[str, list[int]] = {}
    for pid, kb in pss_kb.items():
        groups.setdefault(process_kind(pid), []).append(kb)
    rows = sorted(groups.items(), key=lambda kv: -sum(kv[1]))
    return {kind: {"processes": len(kbs), "pss_mb": round(sum(kbs) / 1024, 1)} for kind, kbs in rows}


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
        self.at_peak: dict[str, dict] = {}  # the processes' kinds and PSS when the peak was read
        self.peak_after_s = 0.0
        self._started = time.monotonic()
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
            each = pss_kb_each(pids)
            total_mb = sum(each.values()) / 1024
            if total_mb > self.peak_pss_mb:
                self.peak_pss_mb = total_mb
                self.at_peak = by_kind(each)
                self.peak_after_s = now - self._started
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
            "peak_after_s": round(self.peak_after_s, 1),
            "at_peak": self.at_peak,
        }
