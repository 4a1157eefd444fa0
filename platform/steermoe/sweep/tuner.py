"""Tune wiring. Three layers, named as Ray names them: ``train_fn_per_worker``
(steermoe.train.loop) -> ``train_driver_fn`` (one trial: builds and fits a ``TorchTrainer``
whose reports reach Tune through ``TuneReportCallback`` and MLflow through our controller
callback) -> the ``Tuner``. :func:`run_sweep` runs (or resumes) it under an MLflow parent run
(search space as params), one child run per trial.

Tune pickles ``train_driver_fn`` by reference: it must stay importable here, at
``steermoe.sweep.tuner.train_driver_fn``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from steermoe import env
from steermoe import tracking as trk
from steermoe.config import Config, apply_overrides, set_path, to_dict, validate
from steermoe.sweep.bookkeeping import SweepResult, collect, finish_child, pick_best
from steermoe.sweep.space import OptunaSpace, expand, random_space, search_space
from steermoe.train.run import (
    build_trainer,
    check_init_from,
    recover_torn_snapshot,
    start_local_ray,
)


def grid_searcher(points: list[dict[str, Any]], metric: str, mode: str):
    """Grid search as a Tune ``Searcher``: each of ``points`` once, in order, by dotted key.

    Tune's own grid would run every pair, ``top_k > num_experts`` too, and its
    ``points_to_evaluate`` cannot carry list values (``model.steering.layers``).
    """
    from ray.tune.search import Searcher  # heavy: Ray loads only when a sweep runs

    class GridPoints(Searcher):
        def __init__(self):
            super().__init__(metric=metric, mode=mode)
            self.next = 0  # saved with the sweep state, so --resume continues the grid

        def suggest(self, trial_id: str) -> dict | str:
            if self.next == len(points):
                return Searcher.FINISHED
            self.next += 1
            return json.loads(json.dumps(points[self.next - 1]))

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            pass

        def save(self, checkpoint_path: str) -> None:
            Path(checkpoint_path).write_text(json.dumps({"next": self.next}))

        def restore(self, checkpoint_path: str) -> None:
            self.next = json.loads(Path(checkpoint_path).read_text())["next"]

    return GridPoints()


class _TrialName:
    """Tune trial -> ``<sweep.name>-007``, its place in Tune's order (kept on resume).

    Grid search names its trials as :func:`expand` numbers them.
    """

    def __init__(self, sweep: str, first: int):
        self.sweep, self.first = sweep, first

    def __call__(self, trial) -> str:
        # Tune's experiment tag starts with its trial counter: from 0 for random search, from
        # 1 for a searcher (grid, Optuna).
        return f"{self.sweep}-{int(trial.experiment_tag.split('_', 1)[0]) - self.first:03d}"


def _plan(config: Config) -> int:
    """Check the space before any cluster work, print what it drops; the trial count."""
    if config.sweep.search == "grid":
        trials, dropped = expand(config)
        for reason in dropped:
            print(f"[sweep] skipping invalid combination {reason}", flush=True)
        return len(trials)
    _, cuts = search_space(config)
    for cut in cuts:
        print(f"[sweep] drawing {cut}", flush=True)
    return config.sweep.num_samples


def storage_path(config: Config) -> Path:
    """Where Tune keeps this config's sweeps (and their trials' Train runs)."""
    root = config.train.storage_path or env.cache_dir() / "runs"
    return Path(root).expanduser().resolve() / "sweeps"


def train_driver_fn(trial_config: dict, context: dict) -> None:
    """One Tune trial: fit a ``TorchTrainer`` on the trial's config, forward its reports.

    Nothing is captured from globals: ``trial_config`` holds what Tune drew, by dotted config
    key, and ``context`` (bound with ``tune.with_parameters``) holds the base config dict, the
    MLflow tracking URI and the parent run id. The trial is named by Tune (``_TrialName``).
    """
    from ray import tune  # heavy: Ray loads only when a sweep runs
    from ray.tune.integration.ray_train import TuneReportCallback

    env.apply_defaults()
    base = validate(context["base"])
    name = tune.get_context().get_trial_name()
    data = to_dict(base)
    for key, value in trial_config.items():
        set_path(data, key.split("."), value)
    trial_storage = storage_path(base) / base.sweep.name / "trials"
    config = validate(
        apply_overrides(data, [f"train.name={name}", f"train.storage_path={trial_storage}"])
    )
    uri = context["tracking_uri"]

    def open_trial_run() -> str:  # idempotent: a restarted trial finds its run by name
        c = trk.client(uri)
        exp = trk.experiment_id(c, config.mlflow.experiment)
        run_id = trk.find_or_create_run(
            c,
            exp,
            name,
            parent_run_id=context["parent_run_id"],
            tags={"steermoe.kind": "trial", "steermoe.sweep": base.sweep.name},
        )
        trk.log_config(c, run_id, config)
        for key, value in trial_config.items():
            c.set_tag(run_id, f"space.{key}", json.dumps(value))
        return run_id

    retry_s = config.mlflow.retry_s
    run_id = trk.with_retries(
        open_trial_run, uri=uri, budget_s=retry_s, what=f"opening the run of {name}"
    )
    # MLflow first: once Tune sees a result it may stop this trial (ASHA) and end the actor.
    report = trk.make_report_callback(uri, run_id, retry_s=retry_s)
    config = recover_torn_snapshot(config)  # the trial's last driver may have died mid-write
    trainer = build_trainer(config, callbacks=[report, TuneReportCallback()])
    trainer.fit()


def build_tuner(config: Config, parent_run_id: str, uri: str):
    """The ``Tuner``: grid/random/Optuna search on the dotted config keys, ASHA, per-trial
    resources from config."""
    from ray import tune  # heavy: Ray loads only when a sweep runs
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    s = config.sweep
    search_alg: Any
    if s.search == "random":
        param_space = random_space(search_space(config)[0])
        search_alg = BasicVariantGenerator(
            max_concurrent=s.max_concurrent_trials, random_state=config.train.seed
        )
        num_samples, first = s.num_samples, 0
    else:
        param_space = {}  # the searcher holds the space
        if s.search == "grid":
            points = [t.overrides for t in expand(config)[0]]
            searcher, num_samples = grid_searcher(points, s.metric, s.mode), len(points)
        else:
            from ray.tune.search.optuna import OptunaSearch  # optional: Optuna only for this search

            space = OptunaSpace(search_space(config)[0])
            searcher = OptunaSearch(space, metric=s.metric, mode=s.mode, seed=config.train.seed)
            num_samples = s.num_samples
        search_alg = ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent_trials)
        first = 1
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
    name = _TrialName(s.name, first)
    return tune.Tuner(
        trainable(config, parent_run_id, uri),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=s.metric,
            mode=s.mode,
            scheduler=scheduler,
            search_alg=search_alg,
            num_samples=num_samples,
            trial_name_creator=name,
            trial_dirname_creator=name,
        ),
        run_config=tune.RunConfig(
            name=s.name,
            storage_path=str(storage_path(config)),
            verbose=0,  # Tune's table would print every trial's config; we print one line
            # A trial whose driver is lost (its node left) starts again and its Train run
            # continues from its last checkpoint.
            failure_config=tune.FailureConfig(max_failures=config.train.max_failures),
            callbacks=[progress_callback(list(s.space), s.metric)],
        ),
    )


def progress_callback(keys: list[str], metric: str):
    """A Tune callback printing one line per trial event (Tune's own table is switched off:
    it would print the whole base config of every trial)."""
    from ray.tune import Callback  # heavy: Ray loads only when a sweep runs

    class Progress(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            drawn = {k: trial.config.get(k) for k in keys}
            print(f"[sweep] {trial} started {drawn}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(metric, float("nan"))
            print(f"[sweep] {trial} step {result.get('step')}: {metric}={value:.4g}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            print(f"[sweep] {trial} finished", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"[sweep] {trial} failed", flush=True)

    return Progress()


def trainable(config: Config, parent_run_id: str, uri: str):
    """``train_driver_fn`` with its context bound and the per-trial driver resources."""
    from ray import tune  # heavy: Ray loads only when a sweep runs

    context = {"base": to_dict(config), "tracking_uri": uri, "parent_run_id": parent_run_id}
    return tune.with_resources(
        tune.with_parameters(train_driver_fn, context=context), {"cpu": config.sweep.trial_cpus}
    )


def unfinished_trials(path: Path) -> list[str]:
    """The trials a sweep's saved Tune state holds as not yet ended: an interrupted sweep's.

    Tune saves the experiment state one last time before it stops an interrupted run's
    trials, which it then counts as terminated in memory; the saved state keeps them running
    (read back as pending), while a sweep that ran out holds only terminated and errored ones.
    """
    from ray.tune import ExperimentAnalysis

    ended = {"TERMINATED", "ERROR"}
    trials = ExperimentAnalysis(str(path)).trials
    return sorted(Path(t.path).name for t in trials if t.status not in ended)


def run_sweep(config: Config, *, resume: bool = False, fresh: bool = False) -> SweepResult:
    """Run (or resume) the sweep and record it in MLflow; returns every trial's outcome.

    Args:
        resume: continue the interrupted sweep of the same name (``Tuner.restore``).
        fresh: discard an earlier sweep of the same name (its Tune and Train state) first.

    Raises:
        FileExistsError: an earlier sweep of this name exists and neither flag was given.
    """
    check_init_from(config)
    path = storage_path(config) / config.sweep.name
    if path.exists() and not resume:
        if not fresh:
            raise FileExistsError(
                f"a sweep named {config.sweep.name!r} already exists at {path}: "
                "continue it with --resume, start over with --fresh, or change sweep.name"
            )
        shutil.rmtree(path)
    import ray  # heavy: Ray and Tune load only when a sweep runs
    from ray import tune

    env.apply_defaults()
    num_trials = _plan(config)
    uri = trk.tracking_uri(config)
    c = trk.client(uri)
    exp = trk.experiment_id(c, config.mlflow.experiment)
    if fresh:
        trk.close_unfinished(c, exp, config.sweep.name)
    parent = trk.find_or_create_run(c, exp, config.sweep.name, tags={"steermoe.kind": "sweep"})
    if not c.get_run(parent).data.params.get("sweep.space"):
        trk.log_config(c, parent, config)
        c.log_param(parent, "num_trials", num_trials)
    print(
        f"[sweep] {config.sweep.name}: {num_trials} trials ({config.sweep.search}), "
        f"MLflow parent run {parent} in {uri}",
        flush=True,
    )
    if not ray.is_initialized():
        start_local_ray()

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

    outcomes = collect(grid, c, parent, config)
    unfinished = unfinished_trials(path)
    if unfinished:
        # Interrupted (Ctrl+C): the trials are neither finished nor stopped by ASHA. Their
        # MLflow runs stay open and nothing is picked or registered; --resume continues them.
        for o in outcomes:
            o.interrupted = o.name in unfinished
        return SweepResult(parent, outcomes, None, uri)
    best = pick_best(outcomes, config.sweep.metric, config.sweep.mode)
    for o in outcomes:
        if o.run_id:
            finish_child(c, o)
    if best is not None:
        c.set_tag(parent, "best_trial", best.name)
        c.log_metric(parent, f"best_{config.sweep.metric}", best.metrics[config.sweep.metric])
    return SweepResult(parent, outcomes, best, uri)
