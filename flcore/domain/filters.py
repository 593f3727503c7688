"""A small, safe filter language: a subset of MongoDB's query syntax, as data.

Jobs carry filters from the network (device criteria, rule conditions), so a
filter is parsed against a closed grammar when the job is created and then
evaluated by walking it; nothing is ever ``eval``-ed. The grammar::

    filter     := { clause, ... }                      (all clauses must hold)
    clause     := "$and": [filter, ...] | "$or": [filter, ...]
                | <field path>: value                  (same as {"$eq": value})
                | <field path>: { op: operand, ... }
    op         := $eq $ne $gt $gte $lt $lte            (operand: a scalar)
                | $in $nin                             (operand: a list of scalars)
                | $exists                              (operand: true or false)
                | $not                                 (operand: { op: operand, ... })
    scalar     := number | string | true | false | null

Field paths are dotted names under the prefixes the caller allows (``info.``,
``stats.`` for device criteria). As in MongoDB, comparisons hold only between
values of the same kind (numbers with numbers, strings with strings), a missing
field fails every comparison but ``$ne``/``$nin``, and ``null`` equals a missing field.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping

from flcore.errors import Invalid

MAX_DEPTH = 6
MAX_NODES = 200
MAX_LIST = 100
MAX_TEXT = 200
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}(\.[A-Za-z0-9_\-]{1,64}){0,5}$")
_ORDER = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
_COMPARE = ("$eq", "$ne", *_ORDER)
_LISTS = ("$in", "$nin")
OPERATORS = frozenset(_COMPARE + _LISTS + ("$exists", "$not", "$and", "$or"))
_MISSING = object()


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0

    def spend(self, what: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise Invalid(f"{what}: filter is larger than {MAX_NODES} terms")


def check(flt: object, fields: Iterable[str], what: str = "filter") -> dict:
    """``flt`` if it is a valid filter over ``fields`` (exact names, or prefixes ending in '.'); else a 400."""
    allowed = tuple(fields)
    _check_filter(flt, allowed, what, 1, _Budget())
    return flt  # type: ignore[return-value]


def _check_filter(flt: object, fields: tuple[str, ...], what: str, depth: int, budget: _Budget) -> None:
    if depth > MAX_DEPTH:
        raise Invalid(f"{what}: filter is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(flt, dict):
        raise Invalid(f"{what}: a filter must be an object")
    for key, value in flt.items():
        budget.spend(what)
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not 0 < len(value) <= MAX_LIST:
                raise Invalid(f"{what}: {key} takes a list of 1 to {MAX_LIST} filters")
            for sub in value:
                _check_filter(sub, fields, what, depth + 1, budget)
        elif key.startswith("$"):
            raise Invalid(f"{what}: unknown operator {key[:40]!r}; allowed: {sorted(OPERATORS)}")
        else:
            _check_field(key, fields, what)
            if isinstance(value, dict):
                _check_condition(value, what, depth + 1, budget)
            else:
                _check_scalar(value, f"{what}: {key}")


def _check_field(path: str, fields: tuple[str, ...], what: str) -> None:
    ok = _PATH.match(path) and any(path == f or (f.endswith(".") and path.startswith(f)) for f in fields)
    if not ok:
        raise Invalid(f"{what}: field {path[:64]!r} is not one of {', '.join(fields)}")


def _check_condition(cond: dict, what: str, depth: int, budget: _Budget) -> None:
    if depth > MAX_DEPTH:
        raise Invalid(f"{what}: filter is nested deeper than {MAX_DEPTH} levels")
    if not cond:
        raise Invalid(f"{what}: an empty condition matches nothing useful")
    for op, operand in cond.items():
        budget.spend(what)
        if op in _COMPARE:
            _check_scalar(operand, f"{what}: {op}")
        elif op in _LISTS:
            if not isinstance(operand, list) or len(operand) > MAX_LIST:
                raise Invalid(f"{what}: {op} takes a list of at most {MAX_LIST} values")
            for item in operand:
                _check_scalar(item, f"{what}: {op}")
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise Invalid(f"{what}: $exists takes true or false")
        elif op == "$not":
            if not isinstance(operand, dict):
                raise Invalid(f'{what}: $not takes a condition such as {{"$gt": 3}}')
            _check_condition(operand, what, depth + 1, budget)
        else:
            raise Invalid(f"{what}: unknown operator {str(op)[:40]!r}; allowed: {sorted(OPERATORS)}")


def _check_scalar(value: object, where: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise Invalid(f"{where}: numbers must be finite")
        return
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise Invalid(f"{where}: text longer than {MAX_TEXT} characters")
        return
    raise Invalid(f"{where}: values must be numbers, text, true, false or null")


def matches(flt: Mapping, doc: Mapping) -> bool:
    """Whether ``doc`` satisfies the (already checked) filter."""
    for key, value in flt.items():
        if key == "$and":
            if not all(matches(sub, doc) for sub in value):
                return False
        elif key == "$or":
            if not any(matches(sub, doc) for sub in value):
                return False
        elif not _holds(value if isinstance(value, dict) else {"$eq": value}, lookup(doc, key)):
            return False
    return True


def lookup(doc: Mapping, path: str) -> object:
    """The value at a dotted path, or a marker for a missing one."""
    value: object = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


def _equal(a: object, b: object) -> bool:
    if b is None:
        return a is None or a is _MISSING
    return a is not _MISSING and _kind(a) == _kind(b) and a == b


def _holds(cond: Mapping, value: object) -> bool:
    for op, operand in cond.items():
        if op == "$eq":
            ok = _equal(value, operand)
        elif op == "$ne":
            ok = not _equal(value, operand)
        elif op in _ORDER:
            ok = _kind(value) in ("number", "text") and _kind(value) == _kind(operand) and _ORDER[op](value, operand)
        elif op == "$in":
            ok = any(_equal(value, item) for item in operand)
        elif op == "$nin":
            ok = not any(_equal(value, item) for item in operand)
        elif op == "$exists":
            ok = (value is not _MISSING) == operand
        else:  # $not
            ok = not _holds(operand, value)
        if not ok:
            return False
    return True
