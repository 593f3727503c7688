"""What a client tells its operator: its warnings, errors and one line per round, sent with its polls.

Bounded on the device, before anything travels: at most ``PER_MINUTE`` lines a minute (the rest are
counted and said to be dropped), ``MAX_TEXT`` characters a line, ``PENDING`` lines waiting (oldest go
first), ``PER_CALL`` lines per poll. Text only; the function keeps the last lines per job and device.
"""

from __future__ import annotations

import threading
import time
from collections import deque

PER_MINUTE, MAX_TEXT, PENDING, PER_CALL = 60, 500, 200, 20


class Logbook:
    def __init__(self) -> None:
        self._pending: deque[dict] = deque(maxlen=PENDING)
        self._sent_times: deque[float] = deque()
        self._dropped = 0
        self._lock = threading.Lock()

    def add(self, level: str, text: str, rnd: int | None = None) -> None:
        now = time.time()
        with self._lock:
            while self._sent_times and self._sent_times[0] < now - 60:
                self._sent_times.popleft()
            if len(self._sent_times) >= PER_MINUTE:
                self._dropped += 1
                return
            self._sent_times.append(now)
            line = {"at": now, "level": level, "text": text[:MAX_TEXT]}
            if rnd is not None:
                line["round"] = int(rnd)
            self._pending.append(line)

    def take(self) -> list[dict]:
        """Up to PER_CALL lines for the next call (give them back with :meth:`give_back` if it fails)."""
        with self._lock:
            if self._dropped:
                said = f"{self._dropped} log lines dropped (more than {PER_MINUTE} a minute)"
                self._pending.append({"at": time.time(), "level": "warning", "text": said})
                self._dropped = 0
            return [self._pending.popleft() for _ in range(min(PER_CALL, len(self._pending)))]

    def give_back(self, lines: list[dict]) -> None:
        with self._lock:
            self._pending.extendleft(reversed(lines))
