"""MLflow: one writer, explicit run ids, SQLite by default.

Workers never talk to MLflow. The Ray Train controller forwards every report to
:class:`MlflowReportCallback`, which logs rank 0's metrics once per report: a restarted worker
resumes after the last reported checkpoint, so no step is logged twice or lost.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from steermoe.config import Config, flatten, to_dict

# Metrics that are not numbers (history) or are already logged elsewhere.
_NOT_METRICS = {"train_history", "step", "checkpoint_dir_name"}


def tracking_uri(config: Config) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    if config.mlflow.tracking_uri:
        return config.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def client(uri: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def experiment_id(c, name: str) -> str:
    """Id of experiment ``name``, created on first use."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name)
    except Exception:  # created concurrently
        return c.get_experiment_by_name(name).experiment_id


def find_or_create_run(
    c, exp_id: str, name: str, *, parent_run_id: str | None = None, tags: dict | None = None
) -> str:
    """The unfinished run called ``name`` (a restart continues it) or a new one."""
    query = f"attributes.run_name = '{name}'"
    if parent_run_id:
        query += f" and tags.mlflow.parentRunId = '{parent_run_id}'"
    for run in c.search_runs([exp_id], filter_string=query, max_results=5):
        if run.info.status in ("RUNNING", "SCHEDULED", "FAILED", "KILLED"):
            c.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return c.create_run(exp_id, run_name=name, tags=all_tags).info.run_id


def log_config(c, run_id: str, config: Config) -> None:
    """Params = the resolved config, flattened (MLflow caps values at 6000 characters)."""
    from mlflow.entities import Param

    existing = c.get_run(run_id).data.params
    params = [
        Param(k, json.dumps(v) if not isinstance(v, str) else v)
        for k, v in flatten(to_dict(config)).items()
        if k not in existing
    ]
    for i in range(0, len(params), 100):
        c.log_batch(run_id, params=[Param(p.key, p.value[:6000]) for p in params[i : i + 100]])


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among reported metrics, with MLflow-safe names."""
    out = {}
    for key, value in metrics.items():
        if key in _NOT_METRICS or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(float(value)):
            out[key.replace("/", ".")] = float(value)
    return out


def log_report(c, run_id: str, metrics: dict[str, Any]) -> None:
    """Log one report: its metrics at its step plus the train-loss history inside it."""
    import time

    from mlflow.entities import Metric

    step = int(metrics.get("step", 0))
    now = int(time.time() * 1000)
    rows = [Metric(k, v, now, step) for k, v in numeric_metrics(metrics).items()]
    for entry in json.loads(metrics.get("train_history") or "[]"):
        for k, v in entry.items():
            if k != "step" and isinstance(v, int | float) and math.isfinite(float(v)):
                rows.append(Metric(f"history.{k}", float(v), now, int(entry["step"])))
    for i in range(0, len(rows), 500):
        c.log_batch(run_id, metrics=rows[i : i + 500])


def make_report_callback(uri: str, run_id: str):
    """A Ray Train ``UserCallback`` (runs on the controller) logging every report once."""
    from ray.train import UserCallback

    class MlflowReportCallback(UserCallback):
        def __init__(self) -> None:
            self.uri = uri
            self.run_id = run_id

        def after_report(self, run_context, metrics, checkpoint) -> None:
            if metrics:
                log_report(client(self.uri), self.run_id, metrics[0])

    return MlflowReportCallback()
