"""A job's task over a data set its devices declare: the ``data`` block, the schema, the statistics step.

A built-in data set (MNIST, ...) is shared out by the function; a declared one
lives on the devices, each training on all of its own rows. For those the job
says what to learn (:class:`DataTask`), fixes a schema when its first device
joins (:func:`schema_for`), checks every later device against it
(:func:`schema_refusal`), takes each starting device's statistics
(:func:`checked_stats`) and, before round 1, combines them into the encoding
every device and the function's predictor use (:func:`combine`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from flcore.errors import Invalid
from flcore.shared import tabular
from flcore.shared.checks import is_int, is_number
from flcore.shared.datasets import DATASET_MODELS

MAX_FEATURES = 512
MAX_CLASSES = 1000
MAX_ENCODED_CATEGORIES = 100  # one-hot slots of one feature, besides "other"
COLUMN = re.compile(r"^[^.$\x00-\x1f][^.\x00-\x1f]{0,63}$")  # a usable document key: no dots, no leading $
NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
TASKS = ("regression", "classification")
LOSSES = {"regression": ("mse", "huber"), "classification": ("cross_entropy",)}
_FIELDS = (
    "name", "task", "target", "features", "exclude", "categorical", "classes",
    "transform", "loss", "eval_fraction", "min_category_count", "compare_local", "retrain_on_change", "fill",
)  # fmt: skip
# how a missing value is filled: a number with the pooled mean or with zero; a category as its own
# "(missing)" category (when frequent enough, like any other) or as "other"
FILLS = {"numeric": ("mean", "zero"), "categorical": ("missing", "other")}
RETRAIN = {"rounds": (1, 1000, None), "min_interval_s": (0, 10**7, 3600), "min_devices": (1, 10_000, 1)}


@dataclass(frozen=True)
class DataTask:
    """What a job learns from a declared data set. Stored with the job's settings as a dict."""

    name: str
    task: str
    target: str
    features: tuple[str, ...] | None = None  # None: every numeric or categorical column but the target
    exclude: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()  # read as categories even where the values are numbers
    classes: tuple[str, ...] | None = None  # classification: None takes them from the devices' data
    transform: str = "none"  # of a regression target: log1p for prices
    loss: str = ""  # "" : mse for regression, cross_entropy for classification
    eval_fraction: float = 0.2  # each device's rows held out (seeded) unless its data marks them
    min_category_count: int = 5  # a category seen fewer times over all devices joins "other"
    compare_local: bool = True  # devices also train a model on their own rows alone, and report it
    # once done, more rounds when enough devices report changed data: {rounds, min_interval_s, min_devices}
    retrain_on_change: dict | None = None
    # {"numeric": "mean" | "zero", "categorical": "missing" | "other"}; None: the first of each
    fill: dict | None = None

    def filled(self, kind: str) -> str:
        return (self.fill or {}).get(kind, FILLS[kind][0])

    @property
    def loss_name(self) -> str:
        """The loss named in the job, or the task's usual one."""
        return self.loss or LOSSES[self.task][0]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def of(cls, raw: Mapping) -> DataTask:
        """Rebuild one the function stored (trusted)."""
        d = {k: raw[k] for k in _FIELDS if k in raw}
        for k in ("features", "exclude", "categorical", "classes"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def parse(raw: object) -> DataTask:
    """A job's ``data`` block, or a 400 naming what is wrong with it."""
    if not isinstance(raw, dict):
        raise Invalid("data must be an object: name, task, target, and optionally features, categorical, ...")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise Invalid(f"data: unknown fields {unknown[:5]}; it takes {list(_FIELDS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise Invalid("data.name must be the data set's name as devices declare it: 1 to 64 letters, digits, _ or -")
    if name.lower() in DATASET_MODELS:
        raise Invalid(f"data.name {name!r} is a built-in data set; set dataset instead of a data block")
    task = raw.get("task")
    if task not in TASKS:
        raise Invalid(f"data.task must be one of {list(TASKS)}")
    target = _column(raw.get("target"), "data.target")
    features = _columns(raw, "features", None)
    exclude = _columns(raw, "exclude", ())
    categorical = _columns(raw, "categorical", ())
    if features is not None:
        if not features:
            raise Invalid("data.features must name at least one column (or be left out: every column)")
        if target in features:
            raise Invalid(f"data.features must not hold the target {target!r}")
        missing = [c for c in categorical if c not in features]
        if missing:
            raise Invalid(f"data.categorical names columns that are not features: {missing[:5]}")
    if target in categorical:
        raise Invalid("data.categorical must not hold the target (a classification target is categorical anyway)")
    classes = _classes(raw.get("classes"), task)
    transform = raw.get("transform", "none")
    if transform not in tabular.TRANSFORMS:
        raise Invalid(f"data.transform must be one of {list(tabular.TRANSFORMS)}")
    if transform != "none" and task != "regression":
        raise Invalid("data.transform applies to a regression target only")
    loss = raw.get("loss", "")
    if loss and loss not in LOSSES[task]:
        raise Invalid(f"data.loss for {task} must be one of {list(LOSSES[task])}")
    eval_fraction = _number(raw, "eval_fraction", 0.2, 0.0, 0.9)
    min_count = _number(raw, "min_category_count", 5, 1, 1_000_000, whole=True)
    compare = raw.get("compare_local", True)
    if not isinstance(compare, bool):
        raise Invalid("data.compare_local must be true or false")
    return DataTask(
        name, task, target, features, exclude, categorical, classes, transform, loss,
        float(eval_fraction), int(min_count), compare, _retrain(raw.get("retrain_on_change")), _fill(raw.get("fill")),
    )  # fmt: skip


def _fill(raw: object) -> dict | None:
    """``fill``: per kind of feature, how a missing value is filled."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - set(FILLS):
        raise Invalid(f"data.fill must be an object of {list(FILLS)}")
    for kind, value in raw.items():
        if value not in FILLS[kind]:
            raise Invalid(f"data.fill.{kind} must be one of {list(FILLS[kind])}")
    return dict(raw)


def _retrain(raw: object) -> dict | None:
    """``retrain_on_change``: how many more rounds, at most how often, after how many devices' changes."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - set(RETRAIN):
        raise Invalid(f"data.retrain_on_change must be an object of {list(RETRAIN)}")
    out = {}
    for key, (lo, hi, default) in RETRAIN.items():
        value = raw.get(key, default)
        if value is None:
            raise Invalid(f"data.retrain_on_change.{key} is required")
        if not is_int(value) or not lo <= value <= hi:
            raise Invalid(f"data.retrain_on_change.{key} must be a whole number from {lo} to {hi}")
        out[key] = value
    return out


def _column(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not COLUMN.match(raw):
        raise Invalid(f"{where} must be a column name: 1 to 64 characters, no dots, not starting with $")
    return raw


def _columns(raw: Mapping, key: str, default):
    value = raw.get(key, default)
    if value is default:
        return default
    if not isinstance(value, list) or len(value) > MAX_FEATURES:
        raise Invalid(f"data.{key} must be a list of at most {MAX_FEATURES} column names")
    names = tuple(_column(v, f"data.{key}") for v in value)
    if len(set(names)) != len(names):
        raise Invalid(f"data.{key} names a column twice")
    return names


def _classes(raw: object, task: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if task != "classification":
        raise Invalid("data.classes applies to classification only")
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_CLASSES:
        raise Invalid(f"data.classes must list 2 to {MAX_CLASSES} classes (or be left out: the devices' values)")
    if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in raw):
        raise Invalid("data.classes must be texts or whole numbers")
    names = tuple(tabular.category(c) for c in raw)
    if len(set(names)) != len(names):
        raise Invalid("data.classes lists a class twice")
    return names


def _number(raw: Mapping, key: str, default: float, lo: float, hi: float, whole: bool = False) -> float:
    value = raw.get(key, default)
    if not is_number(value) or not math.isfinite(value) or not lo <= value <= hi or (whole and not is_int(value)):
        raise Invalid(f"data.{key} must be a {'whole ' if whole else ''}number from {lo:g} to {hi:g}")
    return value


# the schema: fixed by the first device, checked for every later one ------------------------
def declared(info: Mapping, name: str) -> dict | None:
    """What a device declares about the data set ``name`` (None: it declares no such data set)."""
    entry = info.get("datasets", {}).get(name)
    return entry if isinstance(entry, dict) else None


def schema_for(task: DataTask, described: Mapping) -> dict:
    """The job's schema as this device's columns give it: the features in order, each numeric or
    categorical, the target and the task."""
    columns: dict = described.get("columns", {})
    if task.features is not None:
        names = list(task.features)
    else:
        skip = {task.target, *task.exclude}
        names = [c for c, kind in columns.items() if c not in skip and kind != "text"]
    features = [
        [c, "categorical" if c in task.categorical or columns.get(c) != "numeric" else "numeric"] for c in names
    ]
    return {"features": features, "target": task.target, "task": task.task, "transform": task.transform}


def schema_refusal(task: DataTask, schema: Mapping | None, info: Mapping) -> str | None:
    """Why a device's declared data does not fit the job (naming the column), or None when it fits."""
    described = declared(info, task.name)
    if described is None:
        return f"this device does not declare the data set {task.name!r} (FL_DATA_CONFIG)"
    columns = described.get("columns", {})
    if described.get("rows", 0) < 1:
        return f"this device's data set {task.name!r} has no rows"
    schema = schema or schema_for(task, described)
    if not schema["features"]:
        return f"the data set {task.name!r} has no numeric or categorical column besides the target"
    for column, kind in [*schema["features"], [task.target, "numeric" if task.task == "regression" else "any"]]:
        if column not in columns:
            return f"this device's data set {task.name!r} has no column {column!r}"
        if kind == "numeric" and columns[column] not in ("numeric", "empty"):
            return f"column {column!r} is numeric in this job but {columns[column]} on this device"
    return None


# the statistics step ---------------------------------------------------------
def checked_stats(raw: object, schema: Mapping, rows_declared: int) -> dict:
    """A device's statistics in the stored form (category counts as [value, count] pairs, since values
    may hold dots), or a 400 naming what is wrong. Never more than the schema asks for."""
    if not isinstance(raw, dict) or set(raw) != {"rows", "features", "target"}:
        raise Invalid("stats must be an object of rows, features and target")
    rows = raw["rows"]
    if not is_int(rows) or not 0 <= rows <= max(rows_declared, 0):
        raise Invalid(f"stats.rows must be a whole number up to the {rows_declared} rows the device declared")
    feats = raw["features"]
    names = [name for name, _ in schema["features"]]
    if not isinstance(feats, dict) or sorted(feats) != sorted(names):
        raise Invalid("stats.features must hold exactly the job's features")
    out = {"rows": rows, "features": {}}
    for name, kind in schema["features"]:
        where = f"stats.features[{name!r}]"
        out["features"][name] = (
            _numeric(feats[name], rows, where) if kind == "numeric" else _counts(feats[name], rows, where)
        )
    where = "stats.target"
    out["target"] = (
        _numeric(raw["target"], rows, where) if schema["task"] == "regression" else _counts(raw["target"], rows, where)
    )
    # stored by position, so no column name becomes a document key
    out["features"] = [out["features"][name] for name in names]
    return out


def _numeric(raw: object, rows: int, where: str) -> dict:
    if not isinstance(raw, dict) or set(raw) != {"count", "sum", "sumsq", "min", "max"}:
        raise Invalid(f"{where} must hold count, sum, sumsq, min and max")
    if not is_int(raw["count"]) or not 0 <= raw["count"] <= rows:
        raise Invalid(f"{where}.count must be a whole number up to stats.rows")
    for key in ("sum", "sumsq"):
        if not is_number(raw[key]) or not math.isfinite(raw[key]):
            raise Invalid(f"{where}.{key} must be a finite number")
    for key in ("min", "max"):
        if raw[key] is not None and (not is_number(raw[key]) or not math.isfinite(raw[key])):
            raise Invalid(f"{where}.{key} must be a finite number or null")
    if raw["sumsq"] < 0:
        raise Invalid(f"{where}.sumsq cannot be negative")
    return {k: raw[k] for k in ("count", "sum", "sumsq", "min", "max")}


def _counts(raw: object, rows: int, where: str) -> dict:
    if not isinstance(raw, dict) or set(raw) != {"counts", "other"}:
        raise Invalid(f"{where} must hold counts and other")
    counts = raw["counts"]
    if not isinstance(counts, dict) or len(counts) > tabular.MAX_SENT_CATEGORIES:
        raise Invalid(f"{where}.counts must hold at most {tabular.MAX_SENT_CATEGORIES} categories")
    pairs = []
    for value, n in counts.items():
        if len(value) > tabular.MAX_CATEGORY_CHARS:
            raise Invalid(f"{where}: categories are at most {tabular.MAX_CATEGORY_CHARS} characters")
        if not is_int(n) or n < 0:
            raise Invalid(f"{where}.counts must be whole numbers")
        pairs.append([value, n])
    if not is_int(raw["other"]) or raw["other"] < 0 or raw["other"] + sum(n for _, n in pairs) > rows:
        raise Invalid(f"{where}: the counts add up to more than stats.rows")
    return {"counts": pairs, "other": raw["other"]}


def combine(task: DataTask, schema: Mapping, stats: list[dict]) -> dict:
    """The job's encoding from every starting device's statistics (as :func:`checked_stats` stored them):
    pooled means and standard deviations, the categories seen at least ``min_category_count`` times over
    all devices, and the target's scale or classes. A ValueError says why none can be made."""
    features = []
    for i, (name, kind) in enumerate(schema["features"]):
        parts = [s["features"][i] for s in stats]
        if kind == "numeric":
            mean, std = _pooled(parts)
            fill = mean if task.filled("numeric") == "mean" else 0.0
            features.append({"name": name, "kind": "numeric", "mean": mean, "std": std, "fill": fill})
        else:
            kept = _frequent(parts, task.min_category_count)
            if task.filled("categorical") == "other":
                kept = [c for c in kept if c != tabular.MISSING]
            features.append({"name": name, "kind": "categorical", "categories": kept})
    target: dict = {"name": schema["target"], "task": task.task}
    if task.task == "regression":
        mean, std = _pooled([s["target"] for s in stats])
        target.update(transform=task.transform, mean=mean, std=std)
    else:
        seen = _frequent([s["target"] for s in stats], 1, cap=MAX_CLASSES)
        classes = list(task.classes) if task.classes else sorted(seen, key=_class_order)
        if len(classes) < 2:
            raise ValueError(
                f"the devices' data holds {len(classes)} class(es) of {schema['target']!r}; a classifier needs 2"
            )
        target["classes"] = classes
    encoding = {"features": features, "target": target, "rows": sum(s["rows"] for s in stats), "devices": len(stats)}
    encoding["width"] = tabular.width(encoding)
    encoding["outputs"] = tabular.outputs(encoding)
    return encoding


def _pooled(parts: list[dict]) -> tuple[float, float]:
    """Mean and standard deviation over the union of the devices' values, from their sums alone."""
    count = sum(p["count"] for p in parts)
    if not count:
        return 0.0, 1.0
    mean = sum(p["sum"] for p in parts) / count
    var = sum(p["sumsq"] for p in parts) / count - mean * mean
    std = math.sqrt(var) if var > 1e-12 * max(1.0, mean * mean) else 1.0
    return mean, std


def _frequent(parts: list[dict], min_count: int, cap: int = MAX_ENCODED_CATEGORIES) -> list[str]:
    """Categories whose counts over all devices reach ``min_count``, most frequent first (ties by name)."""
    total: dict[str, int] = {}
    for part in parts:
        for value, n in part["counts"]:
            total[value] = total.get(value, 0) + n
    kept = sorted((kv for kv in total.items() if kv[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
    return [value for value, _ in kept[:cap]]


def _class_order(name: str) -> tuple:
    """Classes in numeric order when they are numbers, else by name."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)
