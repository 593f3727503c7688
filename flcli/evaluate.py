"""A central metric for a tabular job on the operator's own file: its rows sent to the function's
``predict`` (the job's encoding, the global model), scored against their targets here.

What ``flctl jobs evaluate JOB FILE.csv`` runs, and how ``make demo-tabular`` scores the federated
model on its test houses. The file's rows never reach the devices; columns that are not features
or the target are left out before they are sent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flcli.operator import Operator
from flcore.shared import tabular
from fllocal import tables


def evaluate_csv(op: Operator, job_id: str, path: str | Path, rnd: int | None = None) -> dict:
    """Test metrics of the job's global model (of round ``rnd``, default the latest) on the file's rows:
    ``test_rmse``, ``test_mae``, ``test_r2`` (and ``_units``) for a regression, ``test_accuracy`` and
    ``test_macro_f1`` for a classification; with ``model_round`` and ``rows``."""
    status = op.status(job_id)
    encoding = status.get("encoding")
    if encoding is None:
        raise ValueError(f"job {job_id} has no encoding: it is not over a declared data set, or has not started")
    table = tables.read(tables.Source("evaluation", "csv", Path(path).resolve()))
    target = encoding["target"]["name"]
    if target not in table.columns:
        raise ValueError(f"{path} has no column {target!r}, the job's target")
    y, keep = tabular.encode_target(encoding, table.columns[target])
    index = np.flatnonzero(keep)
    features = [f["name"] for f in encoding["features"] if f["name"] in table.columns]
    rows = [{name: table.columns[name][i] for name in features} for i in index]
    if not rows:
        raise ValueError(f"{path} has no row with a target the job knows")
    outs, used = [], None
    for start in range(0, len(rows), tabular.MAX_ROWS):
        body = {"job_id": job_id, "rows": rows[start : start + tabular.MAX_ROWS]}
        if rnd is not None:
            body["round"] = rnd
        reply = op.call("predict", body)
        used = reply["model_round"]
        outs.append(_as_outputs(encoding, reply))
    out = np.concatenate(outs)
    if encoding["target"]["task"] == "regression":
        got = tabular.regression_metrics(encoding, out, y[index], "test_")
    else:
        got = tabular.classification_metrics(tabular.outputs(encoding), out, y[index], "test_")
    metrics = tabular.headline({**got, **tabular.derived(got, "test_")}, ("test_",))
    return {"model_round": used, "rows": len(rows), **metrics}


def _as_outputs(encoding: dict, reply: dict) -> np.ndarray:
    """A predict answer as the network's outputs (standardised values, or log-probabilities)."""
    if "learnt" in reply:
        t = encoding["target"]
        return ((np.asarray(reply["learnt"]) - t["mean"]) / t["std"])[:, None]
    return np.log(np.maximum(np.asarray(reply["probabilities"]), 1e-300))
