"""MLflow Model Registry: register a trained checkpoint, promote it to an alias if better.

A registered version's source is the run's ``final/checkpoint`` artifact folder (the
trainable-only checkpoint); ``steermoe.serve.loading`` downloads it for serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

METRIC_TAG = "steermoe.metric"


@dataclass
class Registration:
    name: str
    version: str
    promoted: bool
    value: float
    previous: float | None
    previous_version: str | None


def register(
    c,
    *,
    name: str,
    run_id: str,
    artifact_path: str,
    metric: str,
    value: float,
    mode: str,
    alias: str = "champion",
    tags: dict[str, str] | None = None,
) -> Registration:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of ``name``.

    The alias moves to the new version only when it beats the current holder on ``metric``
    (``mode`` min/max); the previous champion keeps its version either way.
    """
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="SteerMoE steering checkpoints")
    run = c.get_run(run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = c.create_model_version(name, source=source, run_id=run_id, tags=tags or {})
    c.set_model_version_tag(name, version.version, METRIC_TAG, metric)
    c.set_model_version_tag(name, version.version, metric, repr(float(value)))

    previous, previous_version = None, None
    try:
        holder = c.get_model_version_by_alias(name, alias)
        previous_version = holder.version
        raw = holder.tags.get(metric)
        previous = float(raw) if raw is not None else None
    except MlflowException:
        pass
    better = (
        previous is None
        or math.isnan(previous)
        or (value < previous if mode == "min" else value > previous)
    )
    if better:
        c.set_registered_model_alias(name, alias, version.version)
    return Registration(name, version.version, better, value, previous, previous_version)
