"""Ray Tune sweeps over expert count, top-k, learning rates and any model/train field.

Three layers, named as Ray names them: ``train_fn_per_worker`` (steermoe.train.loop) ->
``train_driver_fn`` (one trial: builds and fits a ``TorchTrainer`` whose reports reach Tune
through ``TuneReportCallback`` and MLflow through our controller callback) -> the ``Tuner``.

MLflow: a parent run per sweep (search space as params), one child run per trial (its
resolved config, metric history, final checkpoint); ASHA stops are tagged on the child runs.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steermoe import env
from steermoe import tracking as trk
from steermoe.config import Config, ConfigError, apply_overrides, set_path, to_dict, validate

STOPPED_TAG = "steermoe.stopped_early"


@dataclass(frozen=True)
class Trial:
    """One point of the search space: its index, overrides and validated config."""

    index: int
    overrides: dict[str, Any]
    config: Config

    @property
    def name(self) -> str:
        return f"{self.config.sweep.name}-{self.index:03d}"


def expand(config: Config) -> tuple[list[Trial], list[str]]:
    """Every combination of the search space whose config validates, each model once.

    Combinations that fail validation (e.g. ``top_k > num_experts``) are dropped, and so are
    combinations that train the same model as another one (``top_k == num_experts`` is dense
    routing; the dense spelling ``top_k: null`` is kept). The reasons are returned, so a
    3 x 3 grid over num_experts x top_k runs only valid, distinct pairs.

    Raises:
        ConfigError: a space key names no config field, or no combination is valid.
    """
    base = to_dict(config)
    keys = list(config.sweep.space)
    for key in keys:
        _check_key(base, key)
    valid, dropped = [], []
    for values in itertools.product(*(config.sweep.space[k] for k in keys)):
        overrides = dict(zip(keys, values))
        data = json.loads(json.dumps(base))
        for key, value in overrides.items():
            set_path(data, key.split("."), value)
        try:
            trial_config = validate(data)
        except ConfigError as exc:
            dropped.append(f"{overrides}: {str(exc).splitlines()[-1].strip()}")
            continue
        valid.append((overrides, trial_config, _canonical(trial_config)))
    # One combination per distinct model: the first one already written the canonical way
    # (dense as top_k: null), else the first one.
    chosen: dict[str, tuple[dict, Config, str]] = {}
    for item in valid:
        _, trial_config, canonical = item
        first = chosen.get(canonical)
        if first is None or (
            _canonical(first[1], normalise=False) != canonical
            and _canonical(trial_config, normalise=False) == canonical
        ):
            chosen[canonical] = item
    trials = []
    for item in valid:
        overrides, trial_config, canonical = item
        if chosen[canonical] is item:
            trials.append(Trial(len(trials), overrides, trial_config))
        else:
            dropped.append(f"{overrides}: trains the same model as {chosen[canonical][0]}")
    if not trials:
        raise ConfigError("sweep.space: no valid combination:\n  " + "\n  ".join(dropped))
    return trials, dropped


def _canonical(config: Config, *, normalise: bool = True) -> str:
    """The config as sorted JSON; ``normalise`` writes equivalent models one way."""
    data = to_dict(config)
    steering = data["model"]["steering"]
    if normalise:
        top_k = steering["top_k"]
        if top_k is not None and top_k >= steering["num_experts"]:
            steering["top_k"] = None  # keeping every expert is dense routing
        if not steering["enabled"]:
            # Projector-only baselines: the steering fields configure nothing.
            data["model"]["steering"] = {"enabled": False}
    return json.dumps(data, sort_keys=True)


def _check_key(base: dict, key: str) -> None:
    node: Any = base
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"sweep.space.{key}: no such config field")
        node = node[part]


def storage_path(config: Config) -> Path:
    root = config.train.storage_path or env.cache_dir() / "runs"
    return Path(root).expanduser().resolve() / "sweeps"


def train_driver_fn(trial_config: dict, context: dict) -> None:
    """One Tune trial: fit a ``TorchTrainer`` on the trial's config, forward its reports.

    Nothing is captured from globals: ``trial_config["trial"]`` is the index of this trial's
    combination and ``context`` (bound with ``tune.with_parameters``) holds the base config
    dict, the MLflow tracking URI and the parent run id.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    from steermoe.train.run import build_trainer

    env.apply_defaults()
    trial_config = {**context, **trial_config}
    base = validate(trial_config["base"])
    trials, _ = expand(base)
    trial = trials[trial_config["trial"]]
    trial_storage = storage_path(base) / base.sweep.name / "trials"
    config = validate(
        apply_overrides(
            to_dict(trial.config),
            [f"train.name={trial.name}", f"train.storage_path={trial_storage}"],
        )
    )
    uri = trial_config["tracking_uri"]
    c = trk.client(uri)
    exp = trk.experiment_id(c, config.mlflow.experiment)
    run_id = trk.find_or_create_run(
        c,
        exp,
        trial.name,
        parent_run_id=trial_config["parent_run_id"],
        tags={"steermoe.kind": "trial", "steermoe.sweep": base.sweep.name},
    )
    trk.log_config(c, run_id, config)
    for key, value in trial.overrides.items():
        c.set_tag(run_id, f"space.{key}", json.dumps(value))
    # MLflow first: once Tune sees a result it may stop this trial (ASHA) and end the actor.
    trainer = build_trainer(
        config, callbacks=[trk.make_report_callback(uri, run_id), TuneReportCallback()]
    )
    trainer.fit()


def build_tuner(config: Config, parent_run_id: str, uri: str):
    """The ``Tuner``: grid/random/Optuna search, ASHA, per-trial resources from config."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = config.sweep
    trials, _ = expand(config)
    indices = list(range(len(trials)))
    if s.search == "grid":
        space: Any = tune.grid_search(indices)
        num_samples, search_alg = 1, None
    else:
        space = tune.choice(indices)
        num_samples, search_alg = s.num_samples, None
        if s.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            search_alg = OptunaSearch(seed=config.train.seed)
    max_reports = math.ceil(config.train.max_steps / config.train.eval_every)
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_reports,
            grace_period=min(s.asha.grace_period, max_reports),
            reduction_factor=s.asha.reduction_factor,
        )
        if s.asha.enabled
        else FIFOScheduler()
    )
    return tune.Tuner(
        trainable(config, parent_run_id, uri),
        param_space={"trial": space},
        tune_config=tune.TuneConfig(
            metric=s.metric,
            mode=s.mode,
            scheduler=scheduler,
            search_alg=search_alg,
            num_samples=num_samples,
            max_concurrent_trials=s.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=s.name,
            storage_path=str(storage_path(config)),
            verbose=0,  # Tune's table would print every trial's config; we print one line
            callbacks=[progress_callback(trials, s.metric)],
        ),
    )


def progress_callback(trials: list[Trial], metric: str):
    """A Tune callback printing one line per trial event (Tune's own table is switched off:
    it would print the whole base config of every trial)."""
    from ray.tune import Callback

    names = {t.index: (t.name, t.overrides) for t in trials}

    class Progress(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            name, overrides = names[trial.config["trial"]]
            print(f"[sweep] {name} started {overrides}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            name, _ = names[trial.config["trial"]]
            value = result.get(metric, float("nan"))
            print(f"[sweep] {name} step {result.get('step')}: {metric}={value:.4g}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            print(f"[sweep] {names[trial.config['trial']][0]} finished", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"[sweep] {names[trial.config['trial']][0]} failed", flush=True)

    return Progress()


def trainable(config: Config, parent_run_id: str, uri: str):
    """``train_driver_fn`` with its context bound and the per-trial driver resources."""
    from ray import tune

    context = {"base": to_dict(config), "tracking_uri": uri, "parent_run_id": parent_run_id}
    return tune.with_resources(
        tune.with_parameters(train_driver_fn, context=context), {"cpu": config.sweep.trial_cpus}
    )


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


@dataclass
class SweepResult:
    parent_run_id: str
    trials: list[TrialOutcome]
    best: TrialOutcome | None
    tracking_uri: str


def run_sweep(config: Config, *, resume: bool = False, fresh: bool = False) -> SweepResult:
    """Run (or resume) the sweep and record it in MLflow; returns every trial's outcome.

    Args:
        resume: continue the interrupted sweep of the same name (``Tuner.restore``).
        fresh: discard an earlier sweep of the same name (its Tune and Train state) first.

    Raises:
        FileExistsError: an earlier sweep of this name exists and neither flag was given.
    """
    import shutil

    from steermoe.train.run import check_init_from

    check_init_from(config)
    path = storage_path(config) / config.sweep.name
    if path.exists() and not resume:
        if not fresh:
            raise FileExistsError(
                f"a sweep named {config.sweep.name!r} already exists at {path}: "
                "continue it with --resume, start over with --fresh, or change sweep.name"
            )
        shutil.rmtree(path)
    import ray
    from ray import tune

    from steermoe.train.run import local_ray_kwargs

    env.apply_defaults()
    trials, dropped = expand(config)
    for reason in dropped:
        print(f"[sweep] skipping invalid combination {reason}", flush=True)
    uri = trk.tracking_uri(config)
    c = trk.client(uri)
    exp = trk.experiment_id(c, config.mlflow.experiment)
    if fresh:
        trk.close_unfinished(c, exp, config.sweep.name)
    parent = trk.find_or_create_run(c, exp, config.sweep.name, tags={"steermoe.kind": "sweep"})
    if not c.get_run(parent).data.params.get("sweep.space"):
        trk.log_config(c, parent, config)
        c.log_param(parent, "num_trials", len(trials))
    print(
        f"[sweep] {config.sweep.name}: {len(trials)} trials ({config.sweep.search}), "
        f"MLflow parent run {parent} in {uri}",
        flush=True,
    )
    if not ray.is_initialized():
        ray.init(**local_ray_kwargs())

    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise FileNotFoundError(f"--resume: no sweep state at {path}")
        print(f"[sweep] resuming from {path}", flush=True)
        tuner = tune.Tuner.restore(
            str(path),
            trainable=trainable(config, parent, uri),
            resume_unfinished=True,
            resume_errored=True,
        )
    else:
        tuner = build_tuner(config, parent, uri)
    grid = tuner.fit()

    outcomes = collect(grid, trials, c, parent, config)
    best = pick_best(outcomes, config.sweep.metric, config.sweep.mode)
    for o in outcomes:
        if o.run_id:
            _finish_child(c, o)
    if best is not None:
        c.set_tag(parent, "best_trial", best.name)
        c.log_metric(parent, f"best_{config.sweep.metric}", best.metrics[config.sweep.metric])
    return SweepResult(parent, outcomes, best, uri)


def collect(grid, trials: list[Trial], c, parent: str, config: Config) -> list[TrialOutcome]:
    """Join Tune's results with the trials' MLflow child runs."""
    by_index = {t.index: t for t in trials}
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
        index = result.config["trial"]
        trial = by_index[index]
        metrics = {
            k: float(v)
            for k, v in (result.metrics or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        steps = int(metrics.get("step", 0))
        error = str(result.error) if result.error else None
        outcomes.append(
            TrialOutcome(
                name=trial.name,
                overrides=trial.overrides,
                run_id=children.get(trial.name),
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


def _finish_child(c, o: TrialOutcome) -> None:
    """Final checkpoint as an artifact, then the status: finished, stopped by ASHA, failed."""
    from steermoe.train.loop import MODEL_DIR

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


def finalize(result: SweepResult, config: Config) -> dict[str, Any]:
    """Evaluate the best trial in full, then register it (alias only if it is better).

    Returns:
        ``{"best": name, "eval": {dataset: metrics}, "registration": Registration | None}``.
    """
    from steermoe import registry
    from steermoe.train.loop import MODEL_DIR

    best = result.best
    if best is None or best.run_id is None:
        print("[sweep] no trial reported the sweep metric; nothing to register", flush=True)
        trk.client(result.tracking_uri).set_terminated(result.parent_run_id, status="FAILED")
        return {"best": None, "eval": {}, "registration": None}
    c = trk.client(result.tracking_uri)
    checkpoint = Path(best.checkpoint) / MODEL_DIR
    evaluation: dict[str, Any] = {}
    if config.sweep.evaluate_best:
        from steermoe.evaluate import evaluate_checkpoint

        print(f"[sweep] evaluating best trial {best.name} on {list(config.eval.datasets)}")
        evaluation = evaluate_checkpoint(
            checkpoint,
            config,
            output_dir=storage_path(config) / config.sweep.name / "eval",
            run_id=best.run_id,
            tracking_uri=result.tracking_uri,
        )
    metric, mode = config.sweep.metric, config.sweep.mode
    value = best.metrics[metric]
    if config.sweep.promote_metric:
        dataset, _, name = config.sweep.promote_metric.partition(".")
        found = evaluation.get(dataset, {}).get(name)
        if isinstance(found, int | float):
            metric, mode, value = config.sweep.promote_metric, config.sweep.promote_mode, found
        else:
            print(
                f"[sweep] promote_metric {config.sweep.promote_metric} unavailable; "
                f"promoting on {metric}",
                flush=True,
            )
    reg = registry.register(
        c,
        name=config.mlflow.registered_model,
        run_id=best.run_id,
        artifact_path="final/checkpoint",
        metric=metric,
        value=float(value),
        mode=mode,
        alias=config.mlflow.alias,
        tags={"steermoe.sweep": config.sweep.name, "steermoe.trial": best.name},
    )
    c.set_tag(result.parent_run_id, "registered_version", reg.version)
    c.set_terminated(result.parent_run_id, status="FINISHED")
    c.set_tag(result.parent_run_id, "promoted", str(reg.promoted).lower())
    verdict = "promoted to" if reg.promoted else "kept; the previous version holds"
    print(
        f"[sweep] registered {reg.name} v{reg.version} ({metric}={value:.4g}); {verdict} "
        f"@{config.mlflow.alias}",
        flush=True,
    )
    return {"best": best.name, "eval": evaluation, "registration": reg}


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
