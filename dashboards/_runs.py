"""Read runs from MLflow as the dashboards see them: tags, params, metrics, histories, cost.

Nothing here imports ``steermoe``: the dashboards depend on what MLflow holds, not on code.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

KIND_TAG = "steermoe.kind"
PARENT_TAG = "mlflow.parentRunId"
STOPPED_TAG = "steermoe.stopped_early"
ERROR_TAG = "steermoe.error"
SPACE_TAG_PREFIX = "space."
USAGE_RE = re.compile(r"^routing\.usage\.l(\d+)\.e(\d+)$")
# Training-loss keys, most detailed first: their last step is how far a run trained.
TRAIN_LOSS_KEYS = ("history.train_loss", "train_loss")
# Logged once per Ray Train report (its step); its last timestamp is when a run last reported.
REPORT_KEY = "report_step"

History = list[tuple[int, float]]


def parse_json(text: str | None) -> Any:
    """A tag or param value as JSON when it parses, else the raw string."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def short_key(key: str) -> str:
    """``model.steering.top_k`` -> ``top_k``."""
    return key.rsplit(".", 1)[-1]


def value_label(key: str, value: Any) -> str:
    """How a search-space value is displayed: a null ``top_k`` is dense routing."""
    if value is None:
        return "dense" if key.endswith("top_k") else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fmt_number(value: float | None, digits: int = 4) -> str:
    """A metric value for a table cell; missing values read as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


@dataclass(frozen=True)
class RunView:
    """One MLflow run, flattened to what the dashboards read."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]  # the latest value of each key
    start_ms: int | None
    end_ms: int | None
    # When the run last reported (trials are closed together when their sweep ends).
    last_report_ms: int | None = None

    @classmethod
    def from_run(cls, run: Run) -> RunView:
        """Flatten an ``mlflow.entities.Run``."""
        info, data = run.info, run.data
        return cls(
            run_id=info.run_id,
            name=info.run_name or data.tags.get("mlflow.runName", info.run_id[:8]),
            experiment_id=info.experiment_id,
            status=info.status,
            params=dict(data.params),
            tags=dict(data.tags),
            metrics=dict(data.metrics),
            start_ms=info.start_time,
            end_ms=info.end_time,
        )

    @property
    def kind(self) -> str:
        """``sweep``, ``trial``, ``train`` or ``?``."""
        return self.tags.get(KIND_TAG, "?")

    @property
    def space(self) -> dict[str, Any]:
        """The trial's search-space values from its ``space.<dotted key>`` tags."""
        n = len(SPACE_TAG_PREFIX)
        return {
            k[n:]: parse_json(v) for k, v in self.tags.items() if k.startswith(SPACE_TAG_PREFIX)
        }

    @property
    def stopped_by(self) -> str | None:
        """The scheduler that stopped the run early (``asha``), or None."""
        value = self.tags.get(STOPPED_TAG, "").strip().lower()
        return None if value in ("", "false", "none", "0") else value

    @property
    def outcome(self) -> str:
        """``finished``, ``stopped (ASHA)``, ``failed``, ``killed`` or ``running``."""
        if self.stopped_by:
            return f"stopped ({self.stopped_by.upper()})"
        return {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(
            self.status, self.status.lower()
        )

    @property
    def wall_s(self) -> float | None:
        """Wall-clock seconds from run start to its last report, else to its end (None while
        running and never reported)."""
        end = self.last_report_ms or self.end_ms
        if self.start_ms is None or end is None:
            return None
        return max(0.0, (end - self.start_ms) / 1000.0)

    def param(self, key: str, default: Any = None) -> Any:
        """A param decoded from JSON (``"4"`` -> 4, ``"null"`` -> None)."""
        return parse_json(self.params[key]) if key in self.params else default


def load_run(client: MlflowClient, run_id: str) -> RunView:
    """The run with this id."""
    return RunView.from_run(client.get_run(run_id))


def children(client: MlflowClient, parent: RunView) -> list[RunView]:
    """The parent's child runs (its trials), sorted by run name."""
    runs = client.search_runs(
        [parent.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.run_id}'",
        max_results=5000,
    )
    return sorted((RunView.from_run(r) for r in runs), key=lambda v: v.name)


def with_last_report(client: MlflowClient, run: RunView) -> RunView:
    """``run`` with ``last_report_ms`` read from its report-step history."""
    stamps = [m.timestamp for m in client.get_metric_history(run.run_id, REPORT_KEY)]
    return replace(run, last_report_ms=max(stamps)) if stamps else run


def history(client: MlflowClient, run_id: str, key: str) -> History:
    """``[(step, value), ...]`` sorted by step; a step logged twice keeps its last value."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    by_step = {int(m.step): float(m.value) for m in points}
    return sorted(by_step.items())


def train_loss_history(client: MlflowClient, run_id: str) -> History:
    """The most detailed training-loss history the run logged (empty when none)."""
    for key in TRAIN_LOSS_KEYS:
        points = history(client, run_id, key)
        if points:
            return points
    return []


def steps_done(run: RunView, curves: list[History], max_steps: int | None) -> int:
    """Optimizer steps the run trained: ``stopped_at_step`` when ASHA stopped it, else the
    last logged step, else ``max_steps`` for a finished run that logged nothing."""
    if "stopped_at_step" in run.metrics:
        return int(run.metrics["stopped_at_step"])
    last = [c[-1][0] for c in curves if c]
    if last:
        return max(last)
    return int(max_steps or 0) if run.status == "FINISHED" else 0


def usage_matrix(metrics: dict[str, float]) -> tuple[list[int], list[int], list[list[float]]]:
    """Layers, experts and the ``layers x experts`` mean gate weights (NaN where missing)."""
    cells = {}
    for key, value in metrics.items():
        m = USAGE_RE.match(key)
        if m:
            cells[int(m.group(1)), int(m.group(2))] = value
    layers = sorted({layer for layer, _ in cells})
    experts = sorted({expert for _, expert in cells})
    grid = [[cells.get((layer, e), math.nan) for e in experts] for layer in layers]
    return layers, experts, grid


def find_runs(client: MlflowClient, ref: str, experiment_ids: list[str]) -> list[RunView]:
    """Runs named by an id or a run name (the most recent run of that name)."""
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        return [load_run(client, ref)]
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"tags.`mlflow.runName` = '{ref}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise LookupError(f"no run named or with id {ref!r}")
    return [RunView.from_run(runs[0])]
