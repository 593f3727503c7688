"""Where a run's processor time goes: core-seconds per part of the local stack, read from /proc.

A process's own user and system time, plus what its reaped children used
(``cutime``, ``cstime``), so each process of a tree counts once whether it is
still running or was waited for. Compared with the cores the run had for as
long as it trained, this says which part of the stack the round's time went to.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from flcli.memory import tree

_TICK = os.sysconf("SC_CLK_TCK")


def seconds(pid: int, children: bool = True) -> float:
    """The processor seconds ``pid`` used (with its reaped children's), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + ((cutime + cstime) if children else 0)) / _TICK


def tree_seconds(roots: Iterable[int]) -> float:
    return sum(seconds(pid) for pid in tree(list(roots)))


class CpuAccount:
    """Core-seconds of named groups of processes between two readings (``start``, ``stop``)."""

    def __init__(self, groups: dict[str, Callable[[], float]]):
        self.groups = groups
        self.first: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self.first = {name: read() for name, read in self.groups.items()}

    def stop(self) -> None:
        self.used = {name: round(read() - self.first.get(name, 0.0), 2) for name, read in self.groups.items()}

    def as_dict(self, wall_seconds: float, rounds: int) -> dict:
        """What each group used, what the machine's cores could have done meanwhile, and per round."""
        available = (os.cpu_count() or 1) * wall_seconds
        used = sum(self.used.values())
        return {
            "core_seconds": self.used,
            "core_seconds_per_round": {k: round(v / max(1, rounds), 2) for k, v in self.used.items()},
            "available_core_seconds": round(available, 1),
            "idle_core_seconds": round(available - used, 1),
            "busy_share": round(used / available, 3) if available else 0.0,
        }
