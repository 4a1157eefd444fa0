"""Report queries: a sweep's trials read back from MLflow (the demo's table)."""

from __future__ import annotations

from typing import Any

from steermoe import tracking as trk
from steermoe.sweep.bookkeeping import STOPPED_TAG


def latest_parent(client, experiment: str, sweep_name: str):
    """The MLflow parent run of the latest sweep called ``sweep_name`` (None if there is none)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"attributes.run_name = '{sweep_name}' and tags.`steermoe.kind` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return parents[0] if parents else None


def summary_rows(uri: str, experiment: str, sweep_name: str) -> list[dict[str, Any]]:
    """One row per trial of the latest sweep called ``sweep_name``, read back from MLflow."""
    c = trk.client(uri)
    parent = latest_parent(c, experiment, sweep_name)
    if parent is None:
        return []
    children = c.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        order_by=["attributes.run_name ASC"],
    )
    rows = []
    for r in children:
        m, p = r.data.metrics, r.data.params
        reports = c.get_metric_history(r.info.run_id, trk.REPORT_MARKER)
        # Time to the last report (runs are closed together when the sweep ends).
        end = max((x.timestamp for x in reports), default=r.info.end_time or r.info.start_time)
        rows.append(
            {
                "trial": r.info.run_name,
                "num_experts": p.get("model.steering.num_experts"),
                "top_k": "dense"
                if p.get("model.steering.top_k") in (None, "null")
                else p.get("model.steering.top_k"),
                "wer": m.get("val_wer"),
                "aqa_accuracy": m.get("val_aqa_accuracy"),
                "fc_accuracy": m.get("val_fc_accuracy"),
                "minutes": (end - r.info.start_time) / 60000,
                "status": (r.data.tags.get(STOPPED_TAG) == "asha" and "stopped (ASHA)")
                or r.info.status.lower(),
            }
        )
    return rows
