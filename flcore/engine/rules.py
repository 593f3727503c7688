"""Automation rules: a job reacting to its own results, evaluated as its rounds close.

A rule is ``{"when": <filter>, "then": <action>, "repeat": false}``. ``when`` is a
filter (:mod:`flcore.domain.filters`) over the round that just closed::

    round, clients, seconds, metrics.<name>, best.eval_accuracy, rounds_since_best

``then`` is one of ``{"set": {...}}`` (settings changed from the next round on,
as ``update_job``), ``{"stop": "<reason>"}`` or ``{"start_job": "<job_id>"}``.
Rules are evaluated by the invocation that holds the round's aggregation lease,
and their effects are committed by the same conditional update that closes the
round, so each rule fires at most once per round whatever runs concurrently;
without ``repeat`` it fires once in the job's life.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flcore.domain import filters
from flcore.domain.config import JobConfig, parse_changes, with_changes
from flcore.errors import DomainError, Invalid

MAX_RULES = 20
MAX_REASON = 200
ROUND_FIELDS = ("round", "clients", "seconds", "metrics.", "best.eval_accuracy", "rounds_since_best")
THEN = ("set", "stop", "start_job")


def parse_rules(raw: object, cfg: JobConfig) -> list[dict]:
    """Checked rules for a job with settings ``cfg``, or a 400 naming the rule and the problem."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        raise Invalid(f"rules must be a list of at most {MAX_RULES} rules")
    return [_parse_rule(rule, cfg, f"rules[{i}]") for i, rule in enumerate(raw)]


def _parse_rule(rule: object, cfg: JobConfig, where: str) -> dict:
    if not isinstance(rule, dict) or not {"when", "then"} <= set(rule) or not set(rule) <= {"when", "then", "repeat"}:
        raise Invalid(f"{where} must be an object with when, then and optionally repeat")
    when = filters.check(rule["when"], ROUND_FIELDS, f"{where}.when")
    repeat = rule.get("repeat", False)
    if not isinstance(repeat, bool):
        raise Invalid(f"{where}.repeat must be true or false")
    then = rule["then"]
    if not isinstance(then, dict) or len(then) != 1 or next(iter(then)) not in THEN:
        raise Invalid(
            f'{where}.then must be one of {{"set": {{...}}}}, {{"stop": "reason"}}, {{"start_job": "job_id"}}'
        )
    kind, arg = next(iter(then.items()))
    if kind == "set":
        try:
            arg = parse_changes(cfg, arg)
        except DomainError as exc:
            raise Invalid(f"{where}.then.set: {exc.message}") from None
    elif kind == "stop":
        arg = text(arg, f"{where}.then.stop", MAX_REASON)
    else:
        arg = text(arg, f"{where}.then.start_job", 64)
    return {"when": when, "then": {kind: arg}, "repeat": repeat}


def text(raw: object, where: str, limit: int) -> str:
    if not isinstance(raw, str) or not 0 < len(raw) <= limit:
        raise Invalid(f"{where} must be text of 1 to {limit} characters")
    return raw


def round_context(entry: dict, best: dict | None) -> dict:
    """What ``when`` filters see for a closed round (``entry`` is its history entry)."""
    ctx = {
        "round": entry["round"],
        "clients": entry["clients"],
        "seconds": entry["seconds"],
        "metrics": entry["metrics"],
        "best": {},
    }
    if best:
        ctx["best"] = {"eval_accuracy": best["eval_accuracy"]}
        ctx["rounds_since_best"] = entry["round"] - best["round"]
    return ctx


def best_after(best: dict | None, entry: dict) -> dict | None:
    """The best federated accuracy so far, with the round it came in, including this round."""
    acc = entry["metrics"].get("eval_accuracy")
    if acc is not None and (best is None or acc > best["eval_accuracy"]):
        return {"eval_accuracy": acc, "round": entry["round"]}
    return best


@dataclass
class Firing:
    """What the rules decided for one closed round; applied in the round's commit."""

    changes: dict = field(default_factory=dict)
    stop: str | None = None
    starts: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    fired: list[int] = field(default_factory=list)


def evaluate(rules: list[dict], fired: list[int], ctx: dict, cfg: JobConfig) -> Firing:
    """Fire every rule whose ``when`` holds (rules without ``repeat`` only once).

    A ``set`` that no longer fits the job (another change moved a limit) is
    recorded with its error and skipped; it never half-applies.
    """
    out = Firing()
    for i, rule in enumerate(rules):
        if (i in fired and not rule["repeat"]) or not filters.matches(rule["when"], ctx):
            continue
        kind, arg = next(iter(rule["then"].items()))
        record = {"rule": i, "then": rule["then"]}
        if kind == "set":
            try:
                out.changes.update(parse_changes(with_changes(cfg, out.changes), arg))
            except DomainError as exc:
                record["error"] = exc.message
        elif kind == "stop":
            out.stop = out.stop or arg
        else:
            out.starts.append(arg)
        out.records.append(record)
        if i not in fired:
            out.fired.append(i)
    return out
