"""Data sets a device declares (``FL_DATA_CONFIG``) and reads from its own disk; no torch here.

The file (JSON, or YAML ending .yaml/.yml) lists the device's data sets::

    datasets:
      - name: house_prices          # what jobs name in their data block
        format: csv
        path: data/house_prices.csv # a file, or a folder whose *.csv files are read in name order
        holdout_column: is_test     # optional: rows where it is 1/true/yes are held out for evaluation

Relative paths are relative to the file. What the device tells the function
about each (:func:`describe`) is the number of rows, the columns with their
kinds and a fingerprint of that schema: never a value.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flcore.shared import tabular

FORMATS = ("csv",)
MAX_DATASETS = 16
MAX_COLUMNS = 512
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_COLUMN = re.compile(r"^[^.$\x00-\x1f][^.\x00-\x1f]{0,63}$")
_TRUE = frozenset({"1", "true", "yes", "y", "t"})


class DataConfigError(ValueError):
    """A data-set file or a data set that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Source:
    """One declared data set: where its rows are and which column marks the held-out ones."""

    name: str
    format: str
    path: Path
    holdout_column: str = ""

    def files(self) -> list[Path]:
        if self.path.is_dir():
            found = sorted(self.path.glob("*.csv"))
            if not found:
                raise DataConfigError(f"data set {self.name!r}: the folder {self.path} holds no .csv file")
            return found
        if not self.path.is_file():
            raise DataConfigError(f"data set {self.name!r}: {self.path} does not exist")
        return [self.path]

    def version(self) -> tuple:
        """What changes when the data does: each file's name, size and modification time."""
        return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files())


@dataclass(frozen=True)
class Table:
    """A data set's rows, column by column as the text of its cells, and which rows are held out."""

    columns: dict[str, list[str]]
    holdout: np.ndarray | None  # bool per row, or None: the job's seeded split decides

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def take(self, index: np.ndarray) -> dict[str, list[str]]:
        return {name: [cells[i] for i in index] for name, cells in self.columns.items()}


def load_config(path: str | Path) -> dict[str, Source]:
    """The data sets a device declares, by name; a :class:`DataConfigError` says what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataConfigError(f"FL_DATA_CONFIG: cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as exc:  # noqa: BLE001  (any parse error is the file's fault)
        kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
        raise DataConfigError(f"FL_DATA_CONFIG: {path} is not valid {kind}: {exc}") from None
    entries = doc.get("datasets") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_DATASETS:
        raise DataConfigError(f"FL_DATA_CONFIG: {path} must list 1 to {MAX_DATASETS} data sets under 'datasets'")
    out: dict[str, Source] = {}
    for i, entry in enumerate(entries):
        source = _source(entry, f"{path}: data set {i + 1}", path.parent)
        if source.name in out:
            raise DataConfigError(f"FL_DATA_CONFIG: {path} declares {source.name!r} twice")
        out[source.name] = source
    return out


def _source(entry: object, where: str, base: Path) -> Source:
    if not isinstance(entry, dict):
        raise DataConfigError(f"{where} must be an object with name, format and path")
    unknown = sorted(set(entry) - {"name", "format", "path", "holdout_column"})
    if unknown:
        raise DataConfigError(f"{where} has unknown fields {unknown}; it takes name, format, path, holdout_column")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise DataConfigError(f"{where}: name must be 1 to 64 letters, digits, _ or -")
    fmt = entry.get("format", "csv")
    if fmt not in FORMATS:
        raise DataConfigError(f"{where} ({name}): format must be one of {list(FORMATS)}, not {fmt!r}")
    raw_path = entry.get("path")
    if not isinstance(raw_path, str) or not raw_path:
        raise DataConfigError(f"{where} ({name}): path is required")
    path = Path(raw_path) if Path(raw_path).is_absolute() else base / raw_path
    holdout = entry.get("holdout_column", "")
    if not isinstance(holdout, str):
        raise DataConfigError(f"{where} ({name}): holdout_column must be a column name")
    source = Source(name, fmt, path.resolve(), holdout)
    source.files()  # a missing file is said now, at start, not at the first job
    return source


def read(source: Source) -> Table:
    """All rows of a data set (every file of a folder, whose headers must agree)."""
    return _read_cached(source, source.version())


_CACHE: dict[Source, tuple[tuple, Table]] = {}


def _read_cached(source: Source, version: tuple) -> Table:
    held = _CACHE.get(source)
    if held is not None and held[0] == version:
        return held[1]
    header: list[str] | None = None
    cells: list[list[str]] = []
    for path in source.files():
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            if head is None:
                continue
            head = [h.strip() for h in head]
            if header is None:
                header = _checked_header(head, source, path)
            elif head != header:
                raise DataConfigError(f"data set {source.name!r}: {path.name} has other columns than the first file")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataConfigError(
                        f"data set {source.name!r}: {path.name} line {line} has {len(row)} cells, not {len(header)}"
                    )
                cells.append(row)
    if header is None:
        raise DataConfigError(f"data set {source.name!r}: no header row in {source.path}")
    columns = {name: [row[i] for row in cells] for i, name in enumerate(header)}
    holdout = None
    if source.holdout_column:
        if source.holdout_column not in columns:
            raise DataConfigError(f"data set {source.name!r}: no holdout column {source.holdout_column!r}")
        marks = columns.pop(source.holdout_column)
        holdout = np.array([m.strip().lower() in _TRUE for m in marks], dtype=bool)
    table = Table(columns, holdout)
    _CACHE[source] = (version, table)
    return table


def _checked_header(head: list[str], source: Source, path: Path) -> list[str]:
    if len(head) > MAX_COLUMNS:
        raise DataConfigError(f"data set {source.name!r}: {path.name} has {len(head)} columns; at most {MAX_COLUMNS}")
    if len(set(head)) != len(head):
        raise DataConfigError(f"data set {source.name!r}: {path.name} names a column twice")
    for name in head:
        if not _COLUMN.match(name):
            raise DataConfigError(
                f"data set {source.name!r}: column {name[:40]!r} of {path.name} cannot be used "
                "(1 to 64 characters, no dots, not starting with $): rename it"
            )
    return head


def describe(source: Source) -> dict:
    """What the device reports about a data set in ``info.datasets``: rows, column kinds, a fingerprint
    (worked out once per version of the files: a device looks every few seconds whether they changed)."""
    version = source.version()
    held = _DESCRIBED.get(source)
    if held is None or held[0] != version:
        held = (version, _describe(_read_cached(source, version)))
        _DESCRIBED[source] = held
    return dict(held[1])


_DESCRIBED: dict[Source, tuple[tuple, dict]] = {}


def _describe(table: Table) -> dict:
    kinds = {name: tabular.kind_of(cells) for name, cells in table.columns.items()}
    fingerprint = hashlib.sha256(json.dumps(sorted(kinds.items())).encode()).hexdigest()[:16]
    return {"rows": table.rows, "columns": kinds, "fingerprint": fingerprint, "format": "csv"}


def split(table: Table, seed: int, eval_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Row indices to train on and to evaluate on: the data's own marks, else a seeded share."""
    n = table.rows
    if table.holdout is not None:
        return np.flatnonzero(~table.holdout), np.flatnonzero(table.holdout)
    order = np.random.default_rng(seed).permutation(n)
    cut = n - int(round(n * eval_fraction))
    if eval_fraction > 0 and cut == n and n > 1:
        cut = n - 1  # at least one row to evaluate on
    return np.sort(order[:cut]), np.sort(order[cut:])
