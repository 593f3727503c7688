"""Trainer slots: at most N clients of a machine compute at once, and a dead holder frees its slot."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from clients import slots as trainer_slots
from clients.settings import ClientSettings, ClientSettingsError
from clients.slots import TrainerSlots


def _hold(directory: str, count: int, seconds: float, log: str) -> None:
    with TrainerSlots(count, directory=Path(directory)).hold():
        start = time.monotonic()
        time.sleep(seconds)
        with open(log, "a") as fh:
            fh.write(f"{start} {time.monotonic()}\n")


def test_no_more_than_count_hold_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    log = tmp_path / "held.txt"
    procs = [ctx.Process(target=_hold, args=(str(tmp_path / "slots"), 2, 0.3, str(log))) for _ in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    spans = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    assert len(spans) == 5
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2


def test_a_killed_holder_frees_its_slot(tmp_path):
    ctx = multiprocessing.get_context("fork")
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "slots"), 1, 60, str(tmp_path / "never.txt")))
    holder.start()
    slots = TrainerSlots(1, directory=tmp_path / "slots")
    deadline = time.monotonic() + 10
    while not any(p.exists() for p in slots.paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the holder has the lock now
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    started = time.monotonic()
    with slots.hold():
        waited = time.monotonic() - started
    assert waited < 2.0


def test_the_count_comes_from_fl_trainers():
    def slots(**environ):
        return trainer_slots.for_machine(ClientSettings.from_env(environ).trainers, default=2)

    assert slots(FL_TRAINERS="0") is None  # 0: no limit
    assert len(slots(FL_TRAINERS="3").paths) == 3
    with pytest.raises(ClientSettingsError, match="FL_TRAINERS='two' must be a whole number"):
        slots(FL_TRAINERS="two")
    assert len(slots().paths) == 2
