"""What a closed round leaves in the job's history: who took part, how much data, what they reported."""

from __future__ import annotations

from flcore.shared import tabular

MAX_PER_CLIENT = 50  # a tabular round lists each device's own figures up to this many devices


def _weight(doc: dict, key: str) -> float:
    metrics = doc.get("metrics") or {}
    if key.startswith("eval_") and key != "eval_examples" and "eval_examples" in metrics:
        return float(metrics["eval_examples"])
    return float(doc["num_examples"])


def history_entry(docs: list[dict], job: dict, now: float, agg_s: float) -> dict:
    """What status shows for a closed round: who, how much data, what they reported."""
    examples = sum(int(d["num_examples"]) for d in docs)
    metrics: dict[str, float] = {}
    keys = {k for d in docs for k in (d.get("metrics") or {})}
    for key in sorted(keys):
        # evaluation metrics weigh by the examples evaluated, the rest by those trained on
        pairs = [(float(d["metrics"][key]), _weight(d, key)) for d in docs if key in (d.get("metrics") or {})]
        weight = sum(n for _, n in pairs)
        if weight:
            metrics[key] = sum(v * n for v, n in pairs) / weight
    # RMSE, R² and macro-F1 of a tabular job, over all devices' held-out rows (received and local-only models)
    metrics.update(tabular.derived(metrics, "eval_"))
    metrics.update(tabular.derived(metrics, "local_"))
    entry = {
        "round": job["round"],
        "clients": len(docs),
        "picked": len(job["picked"]),
        "client_ids": sorted(d["client_id"] for d in docs),
        "examples": examples,
        "metrics": metrics,
        "seconds": round(now - job["round_started_at"], 3),
        "aggregation_seconds": round(agg_s, 4),
        "closed": "complete" if len(docs) >= len(job["picked"]) else "deadline",
        "closed_at": now,
    }
    if job.get("encoding") and len(docs) <= MAX_PER_CLIENT:
        entry["per_client"] = {d["client_id"]: _own(d.get("metrics") or {}) for d in docs}
    return entry


def _own(metrics: dict) -> dict:
    """One device's headline figures: the received model's and its local-only model's, side by side."""
    own = {**metrics, **tabular.derived(metrics, "eval_"), **tabular.derived(metrics, "local_")}
    return tabular.headline(own, ("eval_", "local_"))
