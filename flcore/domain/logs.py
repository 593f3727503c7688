"""Log lines a client sends with its poll (warnings, errors, one line per round): checked, text only."""

from __future__ import annotations

import math

from flcore.errors import Invalid
from flcore.shared.checks import is_int, is_number

LEVELS = ("info", "warning", "error")
PER_CALL, MAX_TEXT = 20, 500
KEEP_PER_CLIENT = 200  # the function keeps the last this many lines of each client of a job


def parse_lines(raw: object) -> list[dict]:
    """The lines of a poll's ``log``, or a 400 naming what is wrong."""
    if not isinstance(raw, list) or len(raw) > PER_CALL:
        raise Invalid(f"log must be a list of at most {PER_CALL} lines")
    lines = []
    for i, line in enumerate(raw):
        if not isinstance(line, dict) or set(line) - {"at", "level", "text", "round"}:
            raise Invalid(f"log[{i}] must be an object of at, level, text and (optionally) round")
        level, text, at = line.get("level"), line.get("text"), line.get("at")
        if level not in LEVELS:
            raise Invalid(f"log[{i}].level must be one of {list(LEVELS)}")
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise Invalid(f"log[{i}].text must be text of at most {MAX_TEXT} characters")
        if not is_number(at) or not math.isfinite(at):
            raise Invalid(f"log[{i}].at must be a time (seconds since 1970)")
        out = {"at": float(at), "level": level, "text": text}
        if "round" in line:
            if not is_int(line["round"]) or not 0 <= line["round"] < 2**31:
                raise Invalid(f"log[{i}].round must be a round number")
            out["round"] = line["round"]
        lines.append(out)
    return lines
