"""Tabular data without a database: the data-set file, cells, the statistics step's exact combination,
its caps and "other", the encoding, and the metrics combined over devices."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flcore.domain import data as tasks
from flcore.errors import Invalid
from flcore.shared import modeldef, tabular
from fllocal import tables


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(str(c) for c in r) for r in rows)]) + "\n")
    return path


# the data-set file -----------------------------------------------------------------------
def test_a_data_set_file_in_yaml_or_json_declares_csv_files_and_folders(tmp_path):
    write_csv(tmp_path / "one.csv", ["a", "b"], [[1, "x"], [2, "y"]])
    (tmp_path / "many").mkdir()
    write_csv(tmp_path / "many" / "1.csv", ["a", "b"], [[1, "x"]])
    write_csv(tmp_path / "many" / "2.csv", ["a", "b"], [[3, "z"], [4, "z"]])
    (tmp_path / "d.yaml").write_text(
        "datasets:\n  - {name: one, format: csv, path: one.csv}\n  - {name: many, path: many}\n"
    )
    sources = tables.load_config(tmp_path / "d.yaml")
    assert tables.read(sources["one"]).rows == 2
    many = tables.read(sources["many"])
    assert many.rows == 3 and many.columns["a"] == ["1", "3", "4"]
    described = tables.describe(sources["one"])
    assert described["rows"] == 2 and described["columns"] == {"a": "numeric", "b": "categorical"}
    assert "x" not in json.dumps(described)  # never a value


@pytest.mark.parametrize(
    "config, message",
    [
        ("{", "is not valid JSON"),
        ('{"datasets": []}', "must list 1 to 16 data sets"),
        ('{"datasets": [{"name": "a b", "path": "x.csv"}]}', "name must be 1 to 64 letters"),
        ('{"datasets": [{"name": "a", "path": "x.csv", "format": "xlsx"}]}', "format must be one of ['csv']"),
        ('{"datasets": [{"name": "a", "path": "nowhere.csv"}]}', "does not exist"),
        ('{"datasets": [{"name": "a", "path": "x.csv", "sep": ";"}]}', "unknown fields ['sep']"),
        ('{"datasets": [{"name": "a", "path": "x.csv"}, {"name": "a", "path": "x.csv"}]}', "declares 'a' twice"),
    ],
)
def test_a_bad_data_set_file_is_refused_naming_the_problem(tmp_path, config, message):
    write_csv(tmp_path / "x.csv", ["a"], [[1]])
    (tmp_path / "d.json").write_text(config)
    with pytest.raises(tables.DataConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tables.load_config(tmp_path / "d.json")


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (["a.b", "c"], [[1, 2]], "column 'a.b' of x.csv cannot be used"),
        (["a", "a"], [[1, 2]], "names a column twice"),
        (["a", "b"], [[1]], "line 2 has 1 cells, not 2"),
    ],
)
def test_a_bad_csv_is_refused_naming_the_file(tmp_path, header, rows, message):
    write_csv(tmp_path / "x.csv", header, rows)
    source = tables.Source("x", "csv", tmp_path / "x.csv")
    with pytest.raises(tables.DataConfigError, match=message):
        tables.read(source)


def test_a_holdout_column_marks_the_evaluation_rows_and_is_no_feature(tmp_path):
    write_csv(tmp_path / "x.csv", ["a", "test"], [[1, 0], [2, 1], [3, "yes"], [4, ""]])
    table = tables.read(tables.Source("x", "csv", tmp_path / "x.csv", "test"))
    assert "test" not in table.columns
    train, held = tables.split(table, seed=0, eval_fraction=0.5)
    assert list(train) == [0, 3] and list(held) == [1, 2]


# cells and kinds ---------------------------------------------------------------------------
def test_cells_read_the_same_from_a_file_and_from_json():
    assert math.isnan(tabular.number("NA", "a")) and math.isnan(tabular.number(None, "a"))
    assert tabular.number("2.5", "a") == tabular.number(2.5, "a") == 2.5
    assert tabular.category("20") == tabular.category(20) == tabular.category(20.0) == "20"
    assert tabular.category("") == tabular.MISSING
    assert tabular.category("x" * 100) == "x" * tabular.MAX_CATEGORY_CHARS
    with pytest.raises(tabular.CellError, match="column 'a' takes a number, not 'abc'"):
        tabular.number("abc", "a")
    assert tabular.kind_of(["1", "2", "NA"]) == "numeric"
    assert tabular.kind_of(["a", "b", "a"]) == "categorical"
    assert tabular.kind_of([f"free text {i}" for i in range(200)]) == "text"
    assert tabular.kind_of(["NA", "", "NA"]) == "empty"


# the statistics step --------------------------------------------------------------------
TASK = tasks.parse({"name": "shop", "task": "regression", "target": "y", "transform": "log1p", "min_category_count": 3})
SCHEMA = {
    "features": [["size", "numeric"], ["town", "categorical"]],
    "target": "y",
    "task": "regression",
    "transform": "log1p",
}


def device_table(rng, n, towns):
    size = [("NA" if rng.random() < 0.1 else f"{rng.normal(100, 30):.3f}") for _ in range(n)]
    town = [towns[int(rng.integers(len(towns)))] for _ in range(n)]
    y = [f"{rng.uniform(1e4, 1e6):.2f}" for _ in range(n)]
    return {"size": size, "town": town, "y": y}


def test_combined_statistics_equal_numpy_on_the_union_of_the_devices_rows():
    rng = np.random.default_rng(0)
    parts = [device_table(rng, n, towns) for n, towns in ((50, ["a", "b"]), (70, ["b", "c"]), (5, ["rare"]))]
    stats = [tasks.checked_stats(tabular.local_stats(p, SCHEMA), SCHEMA, 10**6) for p in parts]
    enc = tasks.combine(TASK, SCHEMA, stats)
    sizes = np.array([float(v) for p in parts for v in p["size"] if v != "NA"])
    size = enc["features"][0]
    assert size["mean"] == pytest.approx(sizes.mean(), rel=1e-12)
    assert size["std"] == pytest.approx(sizes.std(), rel=1e-9)  # the population deviation, as standardising uses
    ys = np.log1p([float(v) for p in parts for v in p["y"]])
    assert enc["target"]["mean"] == pytest.approx(ys.mean(), rel=1e-12)
    assert enc["target"]["std"] == pytest.approx(ys.std(), rel=1e-9)
    # "rare" was seen 5 times: kept at min_category_count 3; its rows are its own slot
    towns = [t for p in parts for t in p["town"]]
    assert enc["features"][1]["categories"] == sorted(set(towns), key=lambda t: (-towns.count(t), t))
    assert enc["width"] == 1 + 4 + 1 and enc["outputs"] == 1 and enc["rows"] == 125


def test_rare_categories_become_other_and_what_a_device_sends_is_capped():
    many = [f"v{i:03d}" for i in range(150)] * 2 + ["common"] * 10
    sent = tabular.category_stats(many)
    assert len(sent["counts"]) == tabular.MAX_SENT_CATEGORIES and sent["counts"]["common"] == 10
    assert sent["other"] == len(many) - sum(sent["counts"].values())
    schema = {"features": [["t", "categorical"]], "target": "y", "task": "regression", "transform": "none"}
    task = tasks.parse({"name": "s", "task": "regression", "target": "y", "min_category_count": 3})
    stats = tasks.checked_stats(
        {"rows": 310, "features": {"t": sent}, "target": tabular.numeric_stats(np.ones(310))}, schema, 310
    )
    enc = tasks.combine(task, schema, [stats])
    assert enc["features"][0]["categories"] == ["common"]  # each v### was seen twice: "other"
    x = tabular.encode_features(enc, {"t": ["common", "v001", "never seen"]}, 3)
    assert x.tolist() == [[1, 0], [0, 1], [0, 1]]
    assert tabular.encode_features(enc, {"t": []}, 0).shape == (0, 2)  # no held-out rows (eval_fraction 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update(rows=10**7), "up to the 1000 rows"),
        (lambda s: s["features"].pop("town"), "exactly the job's features"),
        (lambda s: s["features"]["size"].update(sum=float("inf")), "sum must be a finite number"),
        (lambda s: s["features"]["town"]["counts"].update({"x" * 65: 1}), "at most 64 characters"),
        (lambda s: s["features"]["town"].update(other=10**6), "add up to more than stats.rows"),
        (lambda s: s["features"]["town"]["counts"].update({f"c{i}": 0 for i in range(101)}), "at most 100 categories"),
    ],
)
def test_bad_statistics_are_refused(change, message):
    stats = tabular.local_stats(device_table(np.random.default_rng(1), 20, ["a"]), SCHEMA)
    change(stats)
    with pytest.raises(Invalid, match=message):
        tasks.checked_stats(stats, SCHEMA, 1000)


# the job's data block and its model ---------------------------------------------------
@pytest.mark.parametrize(
    "block, message",
    [
        ({"name": "x", "task": "clustering", "target": "y"}, "data.task must be one of"),
        ({"name": "mnist", "task": "regression", "target": "y"}, "is a built-in data set"),
        ({"name": "x", "task": "regression", "target": "a.b"}, "data.target must be a column name"),
        ({"name": "x", "task": "regression", "target": "y", "features": ["y"]}, "must not hold the target"),
        ({"name": "x", "task": "regression", "target": "y", "features": ["a"], "categorical": ["b"]}, "not features"),
        ({"name": "x", "task": "classification", "target": "y", "classes": ["a"]}, "2 to 1000 classes"),
        ({"name": "x", "task": "classification", "target": "y", "transform": "log1p"}, "regression target only"),
        (
            {"name": "x", "task": "regression", "target": "y", "loss": "cross_entropy"},
            "must be one of ['mse', 'huber']",
        ),
        ({"name": "x", "task": "regression", "target": "y", "eval_fraction": 0.95}, "eval_fraction must be"),
        ({"name": "x", "task": "regression", "target": "y", "colour": 1}, "unknown fields ['colour']"),
    ],
)
def test_a_bad_data_block_is_refused_naming_the_problem(block, message):
    with pytest.raises(Invalid, match=message.replace("[", r"\[").replace("]", r"\]")):
        tasks.parse(block)


def test_a_schema_misfit_names_the_column():
    task = tasks.parse({"name": "s", "task": "regression", "target": "y"})
    good = {"datasets": {"s": {"rows": 5, "columns": {"a": "numeric", "b": "categorical", "y": "numeric"}}}}
    schema = tasks.schema_for(task, good["datasets"]["s"])
    assert schema["features"] == [["a", "numeric"], ["b", "categorical"]]
    assert tasks.schema_refusal(task, schema, good) is None
    lacks = {"datasets": {"s": {"rows": 5, "columns": {"a": "numeric", "y": "numeric"}}}}
    assert tasks.schema_refusal(task, schema, lacks) == "this device's data set 's' has no column 'b'"
    empty = {"datasets": {"s": {"rows": 5, "columns": {"a": "empty", "b": "numeric", "y": "numeric"}}}}
    assert tasks.schema_refusal(task, schema, empty) is None  # nothing present here fits a numeric feature
    assert tasks.schema_for(task, empty["datasets"]["s"])["features"][0] == ["a", "categorical"]
    texty = {"datasets": {"s": {"rows": 5, "columns": {"a": "text", "b": "numeric", "y": "numeric"}}}}
    assert "column 'a' is numeric in this job but text on this device" == tasks.schema_refusal(task, schema, texty)
    assert "does not declare the data set 's'" in tasks.schema_refusal(task, schema, {"datasets": {}})


def test_tabular_presets_take_the_encoded_width_and_the_task_size():
    mlp = modeldef.for_job("", "s", {"input_width": 7, "outputs": 3})
    assert mlp.name == "mlp" and mlp.spec["fc1.weight"] == (64, 7) and mlp.spec["out.weight"] == (3, 64)
    linear = modeldef.for_job("linear", "s", {"input_width": 7, "outputs": 1})
    assert linear.spec == {"out.weight": (1, 7), "out.bias": (1,)}
    layers = [{"type": "dense", "out": 4}, {"type": "relu"}, {"type": "dropout"}, {"type": "dense"}]
    custom = modeldef.for_job(layers, "s",
                              {"input_width": 7, "outputs": 2})  # fmt: skip
    assert custom.spec["3.weight"] == (2, 4)
    with pytest.raises(Invalid, match="it must be 2 values"):
        modeldef.for_job([{"type": "linear", "out": 5}], "s", {"input_width": 7, "outputs": 2})


# metrics combined over devices -----------------------------------------------------------
def test_regression_metrics_combined_over_devices_equal_those_of_the_union():
    rng = np.random.default_rng(2)
    enc = {"target": {"name": "y", "task": "regression", "transform": "log1p", "mean": 11.0, "std": 0.4}}
    parts = [(rng.normal(size=(n, 1)).astype(np.float32), rng.normal(size=n).astype(np.float32)) for n in (30, 70)]
    sums = [tabular.regression_metrics(enc, out, y) for out, y in parts]
    combined = {k: (30 * sums[0][k] + 70 * sums[1][k]) / 100 for k in sums[0]}
    got = tabular.derived(combined)
    out = np.concatenate([p[0][:, 0] for p in parts]).astype(np.float64) * 0.4 + 11
    y = np.concatenate([p[1] for p in parts]).astype(np.float64) * 0.4 + 11
    assert got["eval_rmse"] == pytest.approx(np.sqrt(np.mean((out - y) ** 2)), rel=1e-9)
    assert got["eval_r2"] == pytest.approx(1 - np.sum((out - y) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-9)
    units = np.sqrt(np.mean((np.expm1(out) - np.expm1(y)) ** 2))
    assert got["eval_rmse_units"] == pytest.approx(units, rel=1e-6)


def test_macro_f1_combined_over_devices_is_that_of_the_union():
    rng = np.random.default_rng(3)
    parts = [(rng.normal(size=(n, 3)), rng.integers(0, 3, n)) for n in (40, 60)]
    sums = [tabular.classification_metrics(3, out, y) for out, y in parts]
    combined = {k: (40 * sums[0][k] + 60 * sums[1][k]) / 100 for k in sums[0]}
    guess = np.concatenate([p[0].argmax(1) for p in parts])
    truth = np.concatenate([p[1] for p in parts])
    assert tabular.derived(combined)["eval_macro_f1"] == pytest.approx(tabular.macro_f1(guess, truth, 3), rel=1e-9)


def test_the_job_says_how_missing_values_are_filled():
    schema = {"features": [["n", "numeric"], ["c", "categorical"]], "target": "y", "task": "regression",
              "transform": "none"}  # fmt: skip
    table = {"n": ["1", "3", "NA", "5"], "c": ["a", "", "a", ""], "y": ["1", "2", "3", "4"]}
    stats = [tasks.checked_stats(tabular.local_stats(table, schema), schema, 4)]
    block = {"name": "s", "task": "regression", "target": "y", "min_category_count": 1}
    usual = tasks.combine(tasks.parse(block), schema, stats)
    assert usual["features"][1]["categories"] == ["(missing)", "a"]  # missing is a category of its own
    x = tabular.encode_features(usual, {"n": [None], "c": [None]}, 1)
    assert x.tolist() == [[0.0, 1.0, 0.0, 0.0]]  # the mean, standardised; the "(missing)" slot
    zero = tasks.combine(tasks.parse({**block, "fill": {"numeric": "zero", "categorical": "other"}}), schema, stats)
    assert zero["features"][1]["categories"] == ["a"]
    x = tabular.encode_features(zero, {"n": [None], "c": [""]}, 1)
    mean, std = zero["features"][0]["mean"], zero["features"][0]["std"]
    assert x[0, 0] == pytest.approx((0 - mean) / std) and x[0, 1:].tolist() == [0.0, 1.0]  # zero; "other"
    with pytest.raises(Invalid, match=r"data.fill.numeric must be one of \['mean', 'zero'\]"):
        tasks.parse({**block, "fill": {"numeric": "median"}})
