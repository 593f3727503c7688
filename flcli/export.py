"""``flctl export``: a job's rounds in the experiment trackers people already use.

- TensorBoard: event files written with the ``tensorboard`` package's writer (through torch's
  ``SummaryWriter``): every per-round figure as a scalar (``federated/…`` the devices' own, ``reported/…``
  the operator's, ``round/…`` timing and counts, ``privacy/epsilon``), the settings and each change of
  them as text at the round it took effect.
- MLflow (optional: ``pip install mlflow-skinny``): one run named after the job with the settings as
  parameters, the same figures as metrics by round, the job's state and reason as tags.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def scalars(status: dict) -> list[tuple[str, float, int]]:
    """(name, value, round) for every number a job's rounds recorded."""
    out = []
    for entry in status["history"]:
        rnd = int(entry["round"])
        for key, value in (entry.get("metrics") or {}).items():
            out.append((f"federated/{key}", float(value), rnd))
        for key, value in (entry.get("reported") or {}).items():
            out.append((f"reported/{key}", float(value), rnd))
        for key in ("seconds", "clients", "picked", "examples", "aggregation_seconds"):
            if isinstance(entry.get(key), (int, float)):
                out.append((f"round/{key}", float(entry[key]), rnd))
        epsilon = (entry.get("privacy") or {}).get("epsilon")
        if epsilon is not None:
            out.append(("privacy/epsilon", float(epsilon), rnd))
    return out


def flat_settings(config: dict) -> dict[str, str]:
    """The settings as name -> text (blocks as JSON): what MLflow takes as parameters."""
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in config.items()}


def to_tensorboard(status: dict, folder: Path) -> int:
    """Write the job's rounds as TensorBoard event files under ``folder/<job id>``; how many scalars."""
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

    points = scalars(status)
    writer = SummaryWriter(str(folder / status["job_id"]))
    try:
        for name, value, rnd in points:
            writer.add_scalar(name, value, rnd)
        writer.add_text("settings", "```\n" + json.dumps(status["config"], indent=1) + "\n```", 0)
        for change in status.get("changes", []):
            writer.add_text("changes", f"by {change['by']}: {json.dumps(change['set'])}", int(change["round"]))
        writer.add_text("job", f"{status.get('name') or status['job_id']}: {status['state']}"
                        + (f" ({status['stopped_because']})" if status.get("stopped_because") else ""), 0)  # fmt: skip
    finally:
        writer.close()
    return len(points)


def to_mlflow(status: dict, uri: str, experiment: str) -> str:
    """Log the job as one MLflow run at ``uri``; its run id. Needs the mlflow package."""
    try:
        import mlflow
    except ImportError:
        raise RuntimeError("--mlflow needs MLflow: pip install mlflow-skinny (or mlflow)") from None
    if uri.startswith("file:") or "://" not in uri:  # a local folder: the file store MLflow keeps for this
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=status.get("name") or status["job_id"]) as run:
        mlflow.log_params(flat_settings(status["config"]))
        mlflow.set_tags({"job_id": status["job_id"], "state": status["state"],
                         "stopped_because": status.get("stopped_because") or ""})  # fmt: skip
        for name, value, rnd in scalars(status):
            mlflow.log_metric(name.replace("/", "."), value, step=rnd)
    return run.info.run_id
