"""What a client asked of the function, round by round: the measure of what it costs to run.

Each call is put down to the job round it belongs to (a poll to the round its
answer names), with whether the client trained in that round, so a run can
report invocations per client per round for picked and waiting clients apart.
"""

from __future__ import annotations

from collections import Counter


class CallLog:
    """Calls by round: ``{round: {"calls": Counter(action -> n), "trained": bool}}``, and each call's
    seconds as this client saw them (its latency, queueing and retries included)."""

    def __init__(self) -> None:
        self.rounds: dict[int, dict] = {}
        self.current: int | None = None
        self.seconds: list[float] = []

    def _entry(self, rnd: int | None) -> dict:
        key = -1 if rnd is None else int(rnd)  # -1: before the job's first round
        return self.rounds.setdefault(key, {"calls": Counter(), "trained": False})

    def count(self, action: str, reply: dict | None, seconds: float | None = None) -> None:
        if seconds is not None:
            self.seconds.append(round(seconds, 4))
        if action == "poll" and reply is not None and "round" in reply:
            self.current = reply.get("version", reply["round"])  # async: the version being built
        self._entry(self.current)["calls"][action] += 1

    def trained(self) -> None:
        self._entry(self.current)["trained"] = True

    def as_dict(self) -> dict:
        return {
            "rounds": {
                str(r): {"calls": dict(e["calls"]), "trained": e["trained"]} for r, e in sorted(self.rounds.items())
            },
            "seconds": self.seconds,
        }
