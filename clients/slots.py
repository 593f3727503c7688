"""At most as many clients of one machine compute at once as it has cores.

Twenty simulated clients on two cores, each training with one thread, run
twenty threads of work at once: they thrash caches and each other's time
slices, and a round ends no sooner than if they had taken turns (measured in
``make bench-default``). A slot is an exclusive ``flock`` on one of N files in
a directory every client of the machine uses: the kernel releases it when its
holder exits or is killed, so a crashed client never keeps one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

WAIT_S = 0.02  # how often a waiting client looks for a free slot


class TrainerSlots:
    """``count`` slots shared by every client that uses ``directory``."""

    def __init__(self, count: int, directory: Path | None = None):
        if count < 1:
            raise ValueError("a machine needs at least one trainer slot")
        self.directory = directory or Path(tempfile.gettempdir()) / f"serverless-fl-trainers-{os.getuid()}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.paths = [self.directory / f"slot-{i}" for i in range(count)]

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Wait for a free slot and keep it for the block."""
        while True:
            for path in self.paths:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield
                finally:
                    os.close(fd)  # closing releases the lock
                return
            time.sleep(WAIT_S)


def for_machine(trainers: int | None, default: int | None) -> TrainerSlots | None:
    """The machine's slots: ``trainers`` of them (``FL_TRAINERS``; 0: no limit), else ``default``
    (None: no limit)."""
    count = default or 0 if trainers is None else trainers
    return TrainerSlots(count) if count > 0 else None
