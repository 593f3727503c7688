"""Tabular data as the devices, the function and the operator all read it (numpy, no torch).

One place says how a cell is read, what a device tells the statistics step,
how a row becomes the network's input and how an output becomes a prediction,
so a device's training, the function's ``predict`` and the dashboard encode a
row identically.

- A *schema* (what the job fixed when its first device joined): the features in
  order, each ``numeric`` or ``categorical``, and the target.
- *Statistics* (what one device sends before round 1): per numeric feature the
  count, sum, sum of squares, min and max of its training rows; per categorical
  feature the counts of its most frequent values (capped); the same for the target.
- An *encoding* (what the function combines them into): per numeric feature a mean
  and a standard deviation, per categorical one the categories that get a one-hot
  slot (the rest share an "other" slot), and the target's scale or classes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

MISSING_TEXT = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL"})
MISSING = "(missing)"  # the category a missing categorical value falls in
MAX_CATEGORY_CHARS = 64  # longer values are cut to this, the same way everywhere
MAX_SENT_CATEGORIES = 100  # per feature, a device sends the counts of at most this many values
MAX_CLASSES_FOR_F1 = 32  # per-class counts travel (exact macro-F1) up to this many classes
MAX_ROWS = 1000  # rows one predict call takes
TRANSFORMS = ("none", "log1p")
KINDS = ("numeric", "categorical", "text", "empty")


class CellError(ValueError):
    """A value that cannot be read as its column needs; the message names the column."""


# cells -----------------------------------------------------------------------
def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in MISSING_TEXT)


def number(value: object, column: str) -> float:
    """A numeric cell as a float (NaN when missing), or a :class:`CellError` naming the column."""
    if is_missing(value):
        return math.nan
    if isinstance(value, bool):
        raise CellError(f"column {column!r} takes a number, not {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            raise CellError(f"column {column!r} takes a number, not {value[:40]!r}") from None
    else:
        raise CellError(f"column {column!r} takes a number, not {type(value).__name__}")
    if not math.isfinite(out):
        raise CellError(f"column {column!r} takes a finite number, not {value!r}")
    return out


def category(value: object) -> str:
    """A categorical cell as its category's text: 20, 20.0 and "20" are one category."""
    if is_missing(value):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()[:MAX_CATEGORY_CHARS]


def kind_of(cells: Sequence[str], max_categories: int = MAX_SENT_CATEGORIES) -> str:
    """``numeric`` if every present cell is a finite number, ``categorical`` if it has few distinct
    values, else ``text`` (free text is left out of features unless a job names it); ``empty`` when
    no cell is present (it fits a feature of any kind: every value is missing here)."""
    present = [c for c in cells if not is_missing(c)]
    if not present:
        return "empty"
    try:
        if all(math.isfinite(float(c)) for c in present):
            return "numeric"
    except ValueError:
        pass
    return "categorical" if len(set(present)) <= max_categories else "text"


def target_value(value: object, transform: str, column: str) -> float:
    """A regression target in the scale the model learns (``log1p`` for prices); NaN when missing."""
    y = number(value, column)
    if transform == "log1p" and not math.isnan(y):
        if y <= -1:
            raise CellError(f"column {column!r}: log1p needs values above -1, not {y:g}")
        return math.log1p(y)
    return y


def untransform(y: np.ndarray, transform: str) -> np.ndarray:
    """Predictions in the learnt scale back to the target's own units."""
    return np.expm1(y) if transform == "log1p" else y


# statistics (device side) ----------------------------------------------------------------
def numeric_stats(values: np.ndarray) -> dict:
    """What a device says about one numeric column: never a value, only these sums."""
    present = values[~np.isnan(values)]
    if not len(present):
        return {"count": 0, "sum": 0.0, "sumsq": 0.0, "min": None, "max": None}
    return {
        "count": int(len(present)),
        "sum": float(present.sum()),
        "sumsq": float(np.square(present).sum()),
        "min": float(present.min()),
        "max": float(present.max()),
    }


def category_stats(values: Sequence[str]) -> dict:
    """Counts of the most frequent categories (at most MAX_SENT_CATEGORIES; the rest as ``other``)."""
    counts = Counter(values)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_SENT_CATEGORIES]
    kept = dict(top)
    return {"counts": kept, "other": int(sum(counts.values()) - sum(kept.values()))}


def local_stats(table: Mapping[str, Sequence], schema: Mapping) -> dict:
    """A device's statistics for the job's schema, over the rows it trains on (``table``: column -> cells)."""
    out: dict = {"rows": len(next(iter(table.values()))) if table else 0, "features": {}}
    for name, kind in schema["features"]:
        cells = table[name]
        if kind == "numeric":
            out["features"][name] = numeric_stats(np.array([number(c, name) for c in cells], dtype=np.float64))
        else:
            out["features"][name] = category_stats([category(c) for c in cells])
    target, task = schema["target"], schema["task"]
    if task == "regression":
        ys = np.array([target_value(c, schema["transform"], target) for c in table[target]], dtype=np.float64)
        out["target"] = numeric_stats(ys)
    else:
        out["target"] = category_stats([category(c) for c in table[target] if not is_missing(c)])
    return out


# encoding (rows to the network's input, outputs to predictions) ------------------------------
def width(encoding: Mapping) -> int:
    """Input values per row: one per numeric feature, one per category plus "other" per categorical one."""
    return sum(1 if f["kind"] == "numeric" else len(f["categories"]) + 1 for f in encoding["features"])


def outputs(encoding: Mapping) -> int:
    """Output values per row: one for regression, one per class for classification."""
    target = encoding["target"]
    return 1 if target["task"] == "regression" else len(target["classes"])


def encode_features(encoding: Mapping, table: Mapping[str, Sequence], rows: int) -> np.ndarray:
    """``rows`` rows (``table``: column -> cells; a column left out is missing everywhere) as float32
    input: numeric features standardised (missing: the job's fill, the mean unless it says zero),
    categorical ones one-hot (missing: the "(missing)" category if the encoding kept it, else "other")."""
    x = np.zeros((rows, width(encoding)), dtype=np.float32)
    col = 0
    for f in encoding["features"]:
        cells = table.get(f["name"])
        if f["kind"] == "numeric":
            if cells is not None:
                v = np.array([number(c, f["name"]) for c in cells], dtype=np.float64)
                v = np.where(np.isnan(v), f.get("fill", f["mean"]), v)
                x[:, col] = (v - f["mean"]) / f["std"]
            else:  # a feature the rows leave out: missing everywhere, filled
                x[:, col] = (f.get("fill", f["mean"]) - f["mean"]) / f["std"]
            col += 1
            continue
        slots = {c: i for i, c in enumerate(f["categories"])}
        other = len(f["categories"])
        idx = np.array(
            [slots.get(category(c), other) for c in cells] if cells is not None else [slots.get(MISSING, other)] * rows,
            dtype=np.int64,
        )
        x[np.arange(rows), col + idx] = 1.0
        col += other + 1
    return x


def encode_rows(encoding: Mapping, rows: object, limit: int = 1000) -> np.ndarray:
    """Raw rows (objects of column values, as ``predict`` takes them) as the network's input, or a
    :class:`CellError` naming the row and the column that is wrong.

    A row may leave a feature out (it is then missing, filled as in training) and may carry the
    target (ignored); any other column is refused, so a typo is not silently treated as missing.
    """
    if not isinstance(rows, list) or not 0 < len(rows) <= limit:
        raise CellError(f"rows must be a list of 1 to {limit} objects of column values")
    kinds = {f["name"]: f["kind"] for f in encoding["features"]}
    allowed = set(kinds) | {encoding["target"]["name"]}
    table: dict[str, list] = {name: [] for name in kinds}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CellError(f"row {i} must be an object of column values")
        unknown = [c for c in row if c not in allowed]
        if unknown:
            raise CellError(f"row {i}: unknown column {str(unknown[0])[:40]!r}; the features are {sorted(kinds)[:20]}")
        for name, kind in kinds.items():
            value = row.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
                raise CellError(f"row {i}, column {name!r}: a value must be a number, a text or null")
            if isinstance(value, float) and not math.isfinite(value):
                raise CellError(f"row {i}, column {name!r}: NaN and infinities are not values (send null)")
            if kind == "numeric":
                try:
                    number(value, name)
                except CellError as exc:
                    raise CellError(f"row {i}: {exc}") from None
            table[name].append(value)
    return encode_features(encoding, table, len(rows))


def encode_target(encoding: Mapping, cells: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """The target as the model learns it, and which rows have one (a row without a target, or with a
    class the job does not know, is not trained or evaluated on)."""
    target = encoding["target"]
    if target["task"] == "regression":
        y = np.array([target_value(c, target["transform"], target["name"]) for c in cells], dtype=np.float64)
        keep = ~np.isnan(y)
        return ((y - target["mean"]) / target["std"]).astype(np.float32), keep
    index = {c: i for i, c in enumerate(target["classes"])}
    labels = np.array([index.get(category(c), -1) if not is_missing(c) else -1 for c in cells], dtype=np.int64)
    return labels, labels >= 0


def predictions(encoding: Mapping, out: np.ndarray) -> dict:
    """The network's outputs for a batch as answers: values in the target's units (and in the learnt
    scale), or class probabilities."""
    target = encoding["target"]
    if target["task"] == "regression":
        learnt = out[:, 0].astype(np.float64) * target["std"] + target["mean"]
        return {"learnt": learnt, "values": untransform(learnt, target["transform"])}
    z = out.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return {"probabilities": e / e.sum(axis=1, keepdims=True)}


def answers(encoding: Mapping, out: np.ndarray) -> dict:
    """The network's outputs for a batch as JSON answers, as the function's ``predict`` and a device's
    ``/predict`` give them: ``predictions`` in the target's units and ``learnt`` (the trained scale), or
    ``classes``, the predicted class per row and each row's ``probabilities``."""
    answer = predictions(encoding, out)
    if "values" in answer:
        return {"predictions": [float(v) for v in answer["values"]], "learnt": [float(v) for v in answer["learnt"]]}
    classes = list(encoding["target"]["classes"])
    probs = answer["probabilities"]
    return {
        "classes": classes,
        "predictions": [classes[int(i)] for i in probs.argmax(axis=1)],
        "probabilities": [[round(float(p), 6) for p in row] for row in probs],
    }


# metrics ---------------------------------------------------------------------
def regression_metrics(encoding: Mapping, out: np.ndarray, y: np.ndarray, prefix: str = "eval_") -> dict[str, float]:
    """Per-row means a device reports for its evaluation (combinable across devices by weighting with
    the rows); :func:`derived` turns the combined means into RMSE, MAE and R², in the learnt scale and in
    the target's units."""
    target = encoding["target"]
    pred = predictions(encoding, out)
    truth = y.astype(np.float64) * target["std"] + target["mean"]
    got: dict[str, float] = {}
    for scale, p, t in (
        ("", pred["learnt"], truth),
        ("_units", pred["values"], untransform(truth, target["transform"])),
    ):
        err = p - t
        got[f"{prefix}mse{scale}"] = float(np.mean(err**2)) if len(t) else 0.0
        got[f"{prefix}mae{scale}"] = float(np.mean(np.abs(err))) if len(t) else 0.0
        got[f"{prefix}y{scale}"] = float(np.mean(t)) if len(t) else 0.0
        got[f"{prefix}y2{scale}"] = float(np.mean(t**2)) if len(t) else 0.0
    return got


def classification_metrics(
    classes: int, out: np.ndarray, y: np.ndarray, prefix: str = "eval_", per_class: bool = True
) -> dict[str, float]:
    """Accuracy and macro-F1 of one device; up to MAX_CLASSES_FOR_F1 classes also the per-class rates of
    true positives, false positives and false negatives (per row), from which the combined macro-F1 is exact."""
    guess = out.argmax(axis=1)
    n = max(len(y), 1)
    got = {f"{prefix}accuracy": float((guess == y).sum()) / n, f"{prefix}macro_f1": macro_f1(guess, y, classes)}
    if per_class and classes <= MAX_CLASSES_FOR_F1:
        for k in range(classes):
            got[f"{prefix}tp_{k}"] = float(((guess == k) & (y == k)).sum()) / n
            got[f"{prefix}fp_{k}"] = float(((guess == k) & (y != k)).sum()) / n
            got[f"{prefix}fn_{k}"] = float(((guess != k) & (y == k)).sum()) / n
    return got


def macro_f1(guess: np.ndarray, y: np.ndarray, classes: int) -> float:
    """The mean over classes present (in truth or guesses) of each class's F1."""
    scores = []
    for k in range(classes):
        tp = float(((guess == k) & (y == k)).sum())
        fp = float(((guess == k) & (y != k)).sum())
        fn = float(((guess != k) & (y == k)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def derived(metrics: Mapping[str, float], prefix: str = "eval_") -> dict[str, float]:
    """RMSE, R² and exact macro-F1 from metrics combined over devices (row-weighted means), where present."""
    out: dict[str, float] = {}
    for scale in ("", "_units"):
        mse = metrics.get(f"{prefix}mse{scale}")
        if mse is None:
            continue
        out[f"{prefix}rmse{scale}"] = math.sqrt(max(mse, 0.0))
        var = metrics.get(f"{prefix}y2{scale}", 0.0) - metrics.get(f"{prefix}y{scale}", 0.0) ** 2
        if var > 0:
            out[f"{prefix}r2{scale}"] = 1.0 - mse / var
    tps = sorted(k for k in metrics if k.startswith(f"{prefix}tp_"))
    if tps:
        scores = []
        for key in tps:
            k = key.rsplit("_", 1)[1]
            tp, fp, fn = metrics[key], metrics.get(f"{prefix}fp_{k}", 0.0), metrics.get(f"{prefix}fn_{k}", 0.0)
            if tp + fp + fn > 0:
                scores.append(2 * tp / (2 * tp + fp + fn))
        out[f"{prefix}macro_f1"] = float(np.mean(scores)) if scores else 0.0
    return out


HEADLINE = ("rmse", "mae", "r2", "rmse_units", "mae_units", "r2_units", "accuracy", "macro_f1")


def headline(metrics: Mapping[str, float], prefixes: tuple[str, ...]) -> dict[str, float]:
    """The figures people read (after :func:`derived`) among ``metrics`` whose names start with a prefix,
    in name order: RMSE, MAE, R² (both scales), accuracy, macro-F1."""
    return {k: metrics[k] for k in sorted(metrics) if k.startswith(prefixes) and k.split("_", 1)[1] in HEADLINE}
