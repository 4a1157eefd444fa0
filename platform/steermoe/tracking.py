"""MLflow: one writer, explicit run ids, SQLite by default.

Workers never talk to MLflow. The Ray Train controller forwards every report to
:class:`MlflowReportCallback`, which logs rank 0's metrics once per report: a restarted worker
resumes after the last reported checkpoint, so no step is logged twice or lost.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from steermoe.config import Config, flatten, to_dict

# Metrics that are not numbers (history) or are already logged elsewhere.
_NOT_METRICS = {"train_history", "backfill", "step", "checkpoint_dir_name"}
# Logged with every report at its step; makes logging idempotent across driver restarts.
REPORT_MARKER = "report_step"


def fmt_seconds(seconds: float | None) -> str:
    """A duration for people: ``75.0`` -> ``1m 15s``, ``3725`` -> ``1h 02m``, ``None`` -> ``–``.
    The training log's time left and the dashboards' run times both read this way."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def tracking_uri(config: Config) -> str:
    """Config value, else :func:`default_tracking_uri`."""
    return config.mlflow.tracking_uri or default_tracking_uri()


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or the embedded SQLite store ``<cwd>/mlflow.db`` (absolute)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class TrackingUnavailable(RuntimeError):
    """The tracking server stayed unreachable for the whole retry budget."""


# Signs that a call never reached a working server (as opposed to a refused request).
_UNREACHABLE = (
    "Max retries exceeded",
    "Connection refused",
    "Connection aborted",
    "Connection reset",
    "timed out",
    "error code 502",
    "error code 503",
    "error code 504",
)


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says the tracking server could not be reached (or was restarting)."""
    text = str(exc)
    return any(sign in text for sign in _UNREACHABLE)


def with_retries(fn, *, uri: str, budget_s: float, what: str, sleep=time.sleep):
    """``fn()``, retried with backoff (1, 2, 4 ... 30 s) while the server at ``uri`` is
    unreachable, for at most ``budget_s`` seconds.

    Every step ``fn`` takes must be idempotent (the calls here are: runs are found by name,
    params already logged are skipped, a report's step is logged once).

    Raises:
        TrackingUnavailable: still unreachable after ``budget_s``; names the server and what
            was being recorded.
    """
    deadline = time.monotonic() + budget_s
    delay = 1.0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not unreachable(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise TrackingUnavailable(
                    f"MLflow at {uri} was unreachable for {budget_s:.0f} s while {what} "
                    f"(mlflow.retry_s); checkpoints are kept, rerun the same command to "
                    f"continue. Last error: {str(exc)[:300]}"
                ) from exc
            print(f"[mlflow] {uri} unreachable while {what}; retrying in {delay:.0f} s", flush=True)
            sleep(delay)
            delay = min(2 * delay, 30.0)


def client(uri: str):
    import mlflow  # heavy: training workers and Serve replicas import this module

    if uri.startswith(("http://", "https://")):
        # with_retries owns the waiting (mlflow.retry_s); MLflow's own per-request retries
        # (7, up to 2 min apart, by default) would hide that bound. Explicit settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    mlflow.set_tracking_uri(uri)
    # The platform keeps its model registry in the tracking store.
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(c, name: str) -> str:
    """Id of experiment ``name``, created on first use."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location(c, name))
    except Exception:  # created concurrently
        return c.get_experiment_by_name(name).experiment_id


def artifact_location(c, name: str) -> str | None:
    """For a SQLite store, artifacts live beside the database (``<db dir>/mlartifacts``),
    not in the creating process's working directory (a job's temporary copy under
    ``ray job submit``). Other stores keep their server's default."""
    uri = str(c.tracking_uri) if hasattr(c, "tracking_uri") else ""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts" / name).as_uri()


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


def close_unfinished(c, exp_id: str, name: str) -> None:
    """Mark unfinished runs called ``name`` (and their children) KILLED, so a fresh start
    does not continue them."""
    for run in c.search_runs([exp_id], filter_string=f"attributes.run_name = '{name}'"):
        if run.info.status in ("RUNNING", "SCHEDULED"):
            children = c.search_runs(
                [exp_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
            )
            for child in children:
                if child.info.status in ("RUNNING", "SCHEDULED"):
                    c.set_terminated(child.info.run_id, status="KILLED")
            c.set_terminated(run.info.run_id, status="KILLED")


def log_config(c, run_id: str, config: Config) -> dict[str, tuple[str, str]]:
    """Params = the resolved config, flattened (MLflow caps values at 6000 characters).

    MLflow params never change, so a continued run keeps the ones of its first start. A
    setting given a different value since (``train.max_steps=8000`` to train further) is
    recorded as the tag ``continued.<key>`` holding its current value. Returns those
    settings as ``{key: (first value, current value)}``.
    """
    from mlflow.entities import Param, RunTag  # heavy: see client()

    existing = c.get_run(run_id).data.params
    data = to_dict(config)
    # Search-space keys are dotted paths themselves: keep the space as one JSON param.
    data["sweep"]["space"] = json.dumps(data["sweep"]["space"])
    flat = {
        k: (v if isinstance(v, str) else json.dumps(v))[:6000] for k, v in flatten(data).items()
    }
    params = [Param(k, v) for k, v in flat.items() if k not in existing]
    for i in range(0, len(params), 100):
        c.log_batch(run_id, params=params[i : i + 100])
    changed = {k: (existing[k], v) for k, v in flat.items() if k in existing and existing[k] != v}
    tags = [RunTag(f"continued.{k}", now) for k, (_, now) in changed.items()]
    for i in range(0, len(tags), 100):
        c.log_batch(run_id, tags=tags[i : i + 100])
    return changed


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
    """Log one report (and any re-sent earlier report it carries) exactly once.

    A report's metrics go in at its step, plus the train-loss history inside it. Reports
    whose step was already logged (a marker metric records them) are skipped, so a report
    re-sent after a restart never duplicates a step.
    """
    logged = {m.step for m in c.get_metric_history(run_id, REPORT_MARKER)}
    for report in [*json.loads(metrics.get("backfill") or "[]"), metrics]:
        step = int(report.get("step", 0))
        if step in logged:
            continue
        _log_one(c, run_id, report, step)
        logged.add(step)


def _log_one(c, run_id: str, metrics: dict[str, Any], step: int) -> None:
    from mlflow.entities import Metric  # heavy: see client()

    now = int(time.time() * 1000)
    rows = [Metric(k, v, now, step) for k, v in numeric_metrics(metrics).items()]
    for entry in json.loads(metrics.get("train_history") or "[]"):
        for k, v in entry.items():
            if k != "step" and isinstance(v, int | float) and math.isfinite(float(v)):
                rows.append(Metric(f"history.{k}", float(v), now, int(entry["step"])))
    rows.append(Metric(REPORT_MARKER, float(step), now, step))
    for i in range(0, len(rows), 500):
        c.log_batch(run_id, metrics=rows[i : i + 500])


def make_report_callback(uri: str, run_id: str, *, retry_s: float):
    """A Ray Train ``UserCallback`` (runs on the controller) logging every report once.

    A report sent while the tracking server is down is retried for ``retry_s`` seconds
    (:func:`with_retries`); after that the run fails with :class:`TrackingUnavailable`.
    """
    from ray.train import UserCallback  # heavy: Serve and evaluation import this module

    class MlflowReportCallback(UserCallback):
        def __init__(self) -> None:
            self.uri = uri
            self.run_id = run_id
            self.retry_s = retry_s

        def after_report(self, run_context, metrics, checkpoint) -> None:
            if metrics:
                report = metrics[0]
                with_retries(
                    lambda: log_report(client(self.uri), self.run_id, report),
                    uri=self.uri,
                    budget_s=self.retry_s,
                    what=f"logging the report of step {report.get('step')}",
                )

    return MlflowReportCallback()
