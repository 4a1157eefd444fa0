"""MLflow Model Registry: register a trained checkpoint, promote it to an alias if better.

A registered version is an MLflow pyfunc model (``steermoe.pyfunc``) logged in the trial's run:
its artifacts are the trainable-only checkpoint and the resolved config, so
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work on it, and
``steermoe.serve.loading`` finds the checkpoint inside it for Ray Serve. Versions registered
before (a bare checkpoint folder) still serve through Ray Serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from steermoe import pyfunc

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
    checkpoint: str | Path,
    config: dict[str, Any],
    metric: str,
    value: float,
    mode: str,
    alias: str = "champion",
    tags: dict[str, str] | None = None,
    example_audio: str | Path | None = None,
) -> Registration:
    """Log ``checkpoint`` as a pyfunc model in run ``run_id`` and register it under ``name``.

    The alias moves to the new version only when it beats the current holder on ``metric``
    (``mode`` min/max); the previous champion keeps its version either way.

    Args:
        c: MLflow client of the tracking/registry store.
        checkpoint: local checkpoint folder (``save_checkpoint`` output).
        config: the resolved run config, stored beside it.
        example_audio: a clip for the model's input example (MLflow checks it is answered).
    """
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="SteerMoE steering checkpoints")
    logged = pyfunc.log_model(
        run_id=run_id,
        checkpoint=checkpoint,
        config=config,
        tracking_uri=c.tracking_uri,
        example_audio=example_audio,
    )
    version = c.create_model_version(
        name, source=logged.model_uri, run_id=run_id, tags=tags or {}, model_id=logged.model_id
    )
    c.set_model_version_tag(name, version.version, METRIC_TAG, metric)
    c.set_model_version_tag(name, version.version, metric, repr(float(value)))

    previous, previous_version = None, None
    try:
        holder = c.get_model_version_by_alias(name, alias)
        previous_version = str(holder.version)
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
    return Registration(name, str(version.version), better, value, previous, previous_version)
