"""MLflow bookkeeping of a finished sweep: each trial's outcome joined from Tune's results and
its MLflow child run, the best trial, and the child runs closed (finished, stopped by ASHA,
failed) with their final checkpoints as artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steermoe import tracking as trk
from steermoe.config import Config
from steermoe.model.checkpoint import MODEL_DIR

STOPPED_TAG = "steermoe.stopped_early"


@dataclass
class TrialOutcome:
    """What one trial left behind, read back from MLflow and Tune."""

    name: str
    overrides: dict[str, Any]
    run_id: str | None
    metrics: dict[str, float]
    steps: int
    stopped_early: bool
    error: str | None
    checkpoint: str | None
    # Stopped by an interruption of the sweep (Ctrl+C), not by ASHA: --resume continues it.
    interrupted: bool = False


@dataclass
class SweepResult:
    parent_run_id: str
    trials: list[TrialOutcome]
    best: TrialOutcome | None
    tracking_uri: str

    @property
    def interrupted(self) -> list[str]:
        """Names of the trials an interruption left unfinished (empty when it ran out)."""
        return [t.name for t in self.trials if t.interrupted]


def collect(grid, c, parent: str, config: Config) -> list[TrialOutcome]:
    """Join Tune's results with the trials' MLflow child runs (by trial name)."""
    children = {
        r.info.run_name: r.info.run_id
        for r in c.search_runs(
            [trk.experiment_id(c, config.mlflow.experiment)],
            filter_string=f"tags.mlflow.parentRunId = '{parent}'",
            max_results=1000,
        )
    }
    outcomes = []
    for result in grid:
        name = Path(result.path).name  # the trial's folder is named like the trial
        metrics = {
            k: float(v)
            for k, v in (result.metrics or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        steps = int(metrics.get("step", 0))
        error = str(result.error) if result.error else None
        outcomes.append(
            TrialOutcome(
                name=name,
                overrides={k: result.config.get(k) for k in config.sweep.space},
                run_id=children.get(name),
                metrics=metrics,
                steps=steps,
                stopped_early=error is None and steps < config.train.max_steps,
                error=error,
                checkpoint=(result.metrics or {}).get("checkpoint_path"),
            )
        )
    return sorted(outcomes, key=lambda o: o.name)


def pick_best(outcomes: list[TrialOutcome], metric: str, mode: str) -> TrialOutcome | None:
    """Best trial on ``metric`` among those that reported it (ties: the earlier trial)."""
    scored = [o for o in outcomes if metric in o.metrics and o.checkpoint]
    if not scored:
        return None
    sign = 1 if mode == "min" else -1
    return min(scored, key=lambda o: (sign * o.metrics[metric], o.name))


def finish_child(c, o: TrialOutcome) -> None:
    """Final checkpoint as an artifact, then the status: finished, stopped by ASHA, failed."""
    logged = {a.path for a in c.list_artifacts(o.run_id)}
    model_dir = Path(o.checkpoint or "") / MODEL_DIR
    if "final" not in logged and o.checkpoint and model_dir.is_dir():
        c.log_artifacts(o.run_id, str(model_dir), artifact_path="final/checkpoint")
    if o.error:
        c.set_tag(o.run_id, "steermoe.error", o.error[:5000])
        c.set_terminated(o.run_id, status="FAILED")
    elif o.stopped_early:
        c.set_tag(o.run_id, STOPPED_TAG, "asha")
        c.log_metric(o.run_id, "stopped_at_step", o.steps)
        c.set_terminated(o.run_id, status="KILLED")
    else:
        c.set_tag(o.run_id, STOPPED_TAG, "false")
        c.set_terminated(o.run_id, status="FINISHED")
