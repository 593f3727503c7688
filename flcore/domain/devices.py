"""Devices: client machines with a lasting identity, what they report, what the function counts.

A device registers once and then joins jobs; each job it joins gives it a
client identity as ``subscribe`` does. Its ``info`` is what it says about
itself (checked here: closed set of keys, types, sizes); its ``stats`` are
what the function observed, so criteria can trust them more than the info.
"""

from __future__ import annotations

import json
import re

from flcore.domain.data import COLUMN
from flcore.errors import Invalid
from flcore.shared import tabular
from flcore.shared.checks import is_int

MAX_INFO_BYTES = 64 * 1024  # a declared data set lists its columns
MAX_ENTRIES = 16
MAX_COLUMNS = 512
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")  # usable as a filter path part: no dots, no $

# counters the function keeps per device (see ``view`` for the derived figures)
STATS = (
    "jobs_joined",
    "rounds_trained",
    "updates_accepted",
    "deadlines_missed",
    "failures_reported",
    "train_seconds_total",
    "timed_updates",
    "contribution",
)


def parse_info(raw: object) -> dict:
    """A device's self-description, or a 400 naming what is wrong with it."""
    if not isinstance(raw, dict):
        raise Invalid("info must be an object: platform, cpus, memory_mb, datasets, labels")
    unknown = [k for k in raw if k not in ("platform", "cpus", "memory_mb", "datasets", "labels")]
    if unknown:
        raise Invalid(f"info: unknown fields {', '.join(repr(k[:40]) for k in unknown[:5])}")
    if len(json.dumps(raw)) > MAX_INFO_BYTES:
        raise Invalid(f"info is larger than {MAX_INFO_BYTES} bytes")
    info: dict = {}
    if "platform" in raw:
        if not isinstance(raw["platform"], str) or not 0 < len(raw["platform"]) <= 64:
            raise Invalid("info.platform must be text of 1 to 64 characters, e.g. linux/aarch64")
        info["platform"] = raw["platform"]
    for name, high in (("cpus", 4096), ("memory_mb", 100_000_000)):
        if name in raw:
            info[name] = _whole(raw[name], f"info.{name}", 1, high)
    if "datasets" in raw:
        info["datasets"] = {
            k: _declared(v, f"info.datasets.{k}") if isinstance(v, dict) else _whole(v, f"info.datasets.{k}", 0, 10**12)
            for k, v in _entries(raw["datasets"], "info.datasets").items()
        }
    if "labels" in raw:
        info["labels"] = parse_labels(raw["labels"], "info.labels")
    return info


def parse_labels(raw: object, where: str) -> dict[str, str]:
    """Labels (name -> text of at most 128 characters), as a device reports them or an operator sets them."""
    labels = _entries(raw, where)
    for key, value in labels.items():
        if not isinstance(value, str) or len(value) > 128:
            raise Invalid(f"{where}.{key} must be text of at most 128 characters")
    return labels


def parse_name(raw: object) -> str | None:
    """An operator's name for a device: text of 1 to 64 characters, or null to clear it."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not 0 < len(raw.strip()) <= 64:
        raise Invalid("name must be text of 1 to 64 characters (null clears it)")
    return raw.strip()


def _declared(raw: dict, where: str) -> dict:
    """A data set the device declares (FL_DATA_CONFIG): its rows, columns and their kinds, a fingerprint
    of that schema and, when it changed, when; never a value."""
    unknown = sorted(set(raw) - {"rows", "columns", "fingerprint", "format", "changed_at"})
    if unknown:
        raise Invalid(f"{where}: unknown fields {unknown[:5]}; it takes rows, columns, fingerprint, format")
    out: dict = {"rows": _whole(raw.get("rows"), f"{where}.rows", 0, 10**12)}
    columns = raw.get("columns", {})
    if not isinstance(columns, dict) or len(columns) > MAX_COLUMNS:
        raise Invalid(f"{where}.columns must be an object of at most {MAX_COLUMNS} columns")
    for name, kind in columns.items():
        if not COLUMN.match(name):
            raise Invalid(f"{where}.columns: {name[:40]!r} is not a usable column name (no dots, no leading $)")
        if kind not in tabular.KINDS:
            raise Invalid(f"{where}.columns.{name}: the kind must be one of {list(tabular.KINDS)}")
    out["columns"] = dict(columns)
    for key, pattern in (("fingerprint", _HEX), ("format", _FORMAT)):
        if key in raw:
            if not isinstance(raw[key], str) or not pattern.match(raw[key]):
                raise Invalid(f"{where}.{key} is not valid")
            out[key] = raw[key]
    if "changed_at" in raw:
        if not isinstance(raw["changed_at"], (int, float)) or isinstance(raw["changed_at"], bool):
            raise Invalid(f"{where}.changed_at must be a time in seconds")
        out["changed_at"] = float(raw["changed_at"])
    return out


_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_FORMAT = re.compile(r"^[a-z]{1,16}$")


def _entries(raw: object, where: str) -> dict:
    if not isinstance(raw, dict) or len(raw) > MAX_ENTRIES:
        raise Invalid(f"{where} must be an object of at most {MAX_ENTRIES} entries")
    for key in raw:
        if not _NAME.match(key):
            raise Invalid(f"{where}: names are 1 to 64 letters, digits, '_' or '-', not {key[:40]!r}")
    return dict(raw)


def _whole(raw: object, where: str, low: int, high: int) -> int:
    if not is_int(raw) or not low <= raw <= high:
        raise Invalid(f"{where} must be a whole number between {low} and {high}")
    return raw


def new_stats() -> dict:
    return {name: 0 for name in STATS}


def view(doc: dict) -> dict:
    """A device as operators and criteria see it: info, and stats with the derived figures.

    ``contribution`` adds up, over every round the device's update was aggregated
    in, its share of that round's training examples: a device that was one of ten
    equal contributors in ten rounds has 1.0, one round's worth of the global model.
    """
    raw = {**new_stats(), **doc.get("stats", {})}
    timed = raw.pop("timed_updates")
    total = raw.pop("train_seconds_total")
    stats = {
        **raw,
        "mean_train_seconds": round(total / timed, 3) if timed else None,
        "contribution": round(raw["contribution"], 4),
        "last_seen": doc.get("last_seen"),
    }
    return {
        "device_id": doc["_id"],
        "name": doc.get("name"),  # set by an operator (label_device), not by the device
        "labels": doc.get("labels", {}),  # the operator's labels; the device's own are info.labels
        "info": doc.get("info", {}),
        "stats": stats,
        "registered_at": doc.get("registered_at"),
        "jobs": doc.get("jobs", []),
        "left_jobs": doc.get("left_jobs", []),
        "last_failure": doc.get("last_failure"),
        "disabled": bool(doc.get("disabled")),
        **({"revoked_at": doc["revoked_at"]} if "revoked_at" in doc else {}),
    }


def holds_dataset(info: dict, dataset: str) -> bool:
    """Whether a device says it has the job's data (a device that reports no datasets has none)."""
    held = info.get("datasets", {}).get(dataset, 0)
    return (held.get("rows", 0) if isinstance(held, dict) else held) > 0
