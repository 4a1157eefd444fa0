"""Ray Tune sweeps over expert count, top-k, learning rates and any model/train field.

Three layers, named as Ray names them: ``train_fn_per_worker`` (steermoe.train.loop) ->
``train_driver_fn`` (one trial: builds and fits a ``TorchTrainer`` whose reports reach Tune
through ``TuneReportCallback`` and MLflow through our controller callback) -> the ``Tuner``.

The search space is Tune's, key by key: each ``sweep.space`` key is a Tune domain under its
own dotted name (``tune.loguniform`` for a learning rate, ``tune.choice`` for a list), so Tune's
results, Optuna and MLflow all see ``model.steering.num_experts``, never an index. Grid search
runs every valid combination of the lists once; random search draws from Tune domains (top_k
conditional on num_experts through ``tune.sample_from``); Optuna suggests define-by-run, where
lists become categorical. No search ever runs ``top_k > num_experts``.

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
    3 x 3 grid over num_experts x top_k runs only valid, distinct pairs. Grid search runs
    these trials in this order.

    Raises:
        ConfigError: no combination is valid.
    """
    base = to_dict(config)
    keys = list(config.sweep.space)
    valid, dropped = [], []
    for values in itertools.product(*(_form(config.sweep.space[k])[1] for k in keys)):
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


# ------------------------------------------------------------------------ search spaces

EXPERTS, TOP_K = "model.steering.num_experts", "model.steering.top_k"


def _form(spec: Any) -> tuple[str, tuple]:
    """A ``sweep.space`` entry as (form, arguments); a list of values is a ``choice``."""
    if isinstance(spec, dict):
        ((form, args),) = spec.items()
        return form, tuple(args)
    return "choice", tuple(spec)


def tune_domain(spec: Any):
    """A ``sweep.space`` entry as the Ray Tune domain of the same name (a list: ``choice``)."""
    from ray import tune

    form, args = _form(spec)
    if form == "choice":
        return tune.choice(list(args))
    make = {
        "uniform": tune.uniform,
        "quniform": tune.quniform,
        "loguniform": tune.loguniform,
        "qloguniform": tune.qloguniform,
        "randint": tune.randint,
    }
    return make[form](*args)


def search_space(config: Config) -> tuple[dict[str, Any], list[str]]:
    """``sweep.space`` as random and Optuna search draw it, checked before any cluster work.

    Every value must make a valid config on its own (a domain is probed at its bounds and at
    a point inside). ``top_k <= num_experts`` is built in: num_experts keeps the values some
    top_k fits, a fixed num_experts cuts top_k's values, and when both are searched top_k is
    drawn per trial among its values that fit the trial's num_experts (:class:`TopKFitting`,
    :class:`OptunaSpace`), so no search draws an invalid pair.

    Returns:
        The space (num_experts before top_k) and one line per value range it cut.

    Raises:
        ConfigError: naming the key: a value no config takes, or no valid num_experts x top_k.
    """
    space = dict(config.sweep.space)
    for key, spec in space.items():
        for value in _probes(spec):
            _probe(config, key, value)
    if EXPERTS not in space and TOP_K not in space:
        return space, []
    for key in (EXPERTS, TOP_K):
        if key in space and _form(space[key])[0] not in ("choice", "randint"):
            raise ConfigError(
                f"sweep.space.{key}: takes a list, choice or randint (it is drawn so that "
                "top_k <= num_experts)"
            )
    steering = config.model.steering
    experts = space.get(EXPERTS, (steering.num_experts,))
    top_k = space.get(TOP_K, (steering.top_k,))
    least = _least(top_k)
    fitting = experts if least is None else _cut(experts, low=least)
    if fitting is None:
        where = EXPERTS if EXPERTS in space else TOP_K
        raise ConfigError(
            f"sweep.space.{where}: no pair with top_k <= num_experts "
            f"(num_experts {_shown(experts)}, top_k {_shown(top_k)})"
        )
    cuts = []
    if EXPERTS in space and fitting != experts:
        cuts.append(f"{EXPERTS} from {_shown(fitting)}: top_k is at least {least}")
        space[EXPERTS] = fitting
    if TOP_K in space and EXPERTS not in space:
        fitting = _cut(top_k, high=steering.num_experts)
        if fitting != top_k:
            cuts.append(f"{TOP_K} from {_shown(fitting)}: num_experts is {steering.num_experts}")
            space[TOP_K] = fitting
    if TOP_K in space:
        space[TOP_K] = space.pop(TOP_K)  # drawn after num_experts
    return space, cuts


def _least(top_k: Any) -> int | None:
    """The fewest experts some top_k value fits (None: dense routing, top_k null, fits all)."""
    form, args = _form(top_k)
    if form == "randint":
        return args[0]
    return None if None in args else min(args)


def _cut(spec: Any, *, low: int = 1, high: int | None = None) -> Any:
    """A num_experts/top_k entry cut to the values in [low, high] (a null top_k, dense routing,
    is kept), in the entry's own form; None when nothing is left."""
    form, args = _form(spec)
    if form == "randint":
        a, b = max(args[0], low), args[1] if high is None else min(args[1], high + 1)
        return {"randint": (a, b)} if a < b else None
    kept = tuple(v for v in args if v is None or (low <= v and (high is None or v <= high)))
    if not kept:
        return None
    return {"choice": kept} if isinstance(spec, dict) else kept


def _shown(spec: Any) -> str:
    form, args = _form(spec)
    return f"{list(args)}" if form == "choice" else f"{form} {list(args)}"


def _probes(spec: Any) -> list[Any]:
    """Values that stand for an entry: a list's values, a domain's bounds and a point inside."""
    form, args = _form(spec)
    if form == "choice":
        return list(args)
    if form == "randint":
        return [args[0], args[1] - 1]  # Tune's randint excludes b
    a, b, *q = args
    # Off-centre, so a float domain over an integer field shows a fractional value.
    inside = a * (b / a) ** 0.382 if "log" in form else a + (b - a) * 0.382
    if q:
        inside = round(inside / q[0]) * q[0]
    return [a, b, inside]


def _probe(config: Config, key: str, value: Any) -> None:
    """Raise naming ``key`` unless ``value`` makes a valid config on its own."""
    data = to_dict(config)
    steering = data["model"]["steering"]
    steering["top_k"] = None  # the pair is search_space's business; each value is probed alone
    if key == TOP_K and isinstance(value, int) and not isinstance(value, bool):
        steering["num_experts"] = max(value, 1)
    set_path(data, key.split("."), value)
    try:
        validate(data)
    except ConfigError as exc:
        reason = str(exc).splitlines()[-1].strip()
        raise ConfigError(f"sweep.space.{key}: {value!r} makes no valid config: {reason}") from None


def random_space(space: dict[str, Any]) -> dict[str, Any]:
    """Tune's ``param_space`` for random search: one Tune domain per dotted key; top_k drawn
    by ``tune.sample_from`` among its values that fit the trial's num_experts."""
    from ray import tune

    param_space = {key: tune_domain(spec) for key, spec in space.items()}
    if EXPERTS in space and TOP_K in space:
        param_space[TOP_K] = tune.sample_from(TopKFitting(space[TOP_K]))
    return param_space


class TopKFitting:
    """The ``tune.sample_from`` body: top_k drawn among its values that fit num_experts."""

    def __init__(self, top_k: Any):
        self.top_k = top_k

    def __call__(self, config: dict) -> Any:
        # A Tuner passes the trial's drawn config; bare ``generate_variants`` passes its spec,
        # read by attribute so that its resolver draws num_experts first.
        experts = config[EXPERTS] if EXPERTS in config else getattr(config.config, EXPERTS)
        return tune_domain(_cut(self.top_k, high=experts)).sample()


class OptunaSpace:
    """Define-by-run space for ``OptunaSearch``: one Optuna parameter per dotted key.

    Lists are categorical. top_k, when num_experts is searched too, is suggested among its
    values that fit the trial's num_experts: a categorical top_k under a name that carries
    num_experts whenever that cuts its choices (``model.steering.top_k|num_experts=2``;
    Optuna keeps one set of choices per name), a randint top_k with its upper bound cut.
    """

    def __init__(self, space: dict[str, Any]):
        self.space = space

    def __call__(self, trial) -> dict[str, Any]:
        # Suggest on Optuna's own trial: Ray's wrapper would copy every suggested name into
        # the trial config, conditional names too; the returned dict is the config instead.
        trial = getattr(trial, "ot_trial", trial)
        config: dict[str, Any] = {}
        for key, spec in self.space.items():
            name = key
            if key == TOP_K and EXPERTS in config:
                fitting = _cut(spec, high=config[EXPERTS])
                if fitting != spec and _form(spec)[0] == "choice":
                    name = f"{key}|num_experts={config[EXPERTS]}"
                spec = fitting
            config[key] = suggest(trial, name, spec)
        return config


def suggest(trial, name: str, spec: Any) -> Any:
    """One value of a ``sweep.space`` entry from an Optuna trial."""
    form, args = _form(spec)
    if form == "choice":
        return trial.suggest_categorical(name, list(args))
    if form == "randint":
        return trial.suggest_int(name, args[0], args[1] - 1)  # Tune's randint excludes b
    a, b, *q = args
    step = q[0] if form == "quniform" else None
    value = trial.suggest_float(name, a, b, step=step, log="log" in form)
    if form == "qloguniform":
        value = round(value / q[0]) * q[0]  # Optuna has no quantized log scale; round as Tune
    return value


def grid_searcher(points: list[dict[str, Any]], metric: str, mode: str):
    """Grid search as a Tune ``Searcher``: each of ``points`` once, in order, by dotted key.

    Tune's own grid would run every pair, ``top_k > num_experts`` too, and its
    ``points_to_evaluate`` cannot carry list values (``model.steering.layers``).
    """
    from ray.tune.search import Searcher

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
    root = config.train.storage_path or env.cache_dir() / "runs"
    return Path(root).expanduser().resolve() / "sweeps"


def train_driver_fn(trial_config: dict, context: dict) -> None:
    """One Tune trial: fit a ``TorchTrainer`` on the trial's config, forward its reports.

    Nothing is captured from globals: ``trial_config`` holds what Tune drew, by dotted config
    key, and ``context`` (bound with ``tune.with_parameters``) holds the base config dict, the
    MLflow tracking URI and the parent run id. The trial is named by Tune (``_TrialName``).
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from steermoe.train.run import build_trainer

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
    # MLflow first: once Tune sees a result it may stop this trial (ASHA) and end the actor.
    trainer = build_trainer(
        config, callbacks=[trk.make_report_callback(uri, run_id), TuneReportCallback()]
    )
    trainer.fit()


def build_tuner(config: Config, parent_run_id: str, uri: str):
    """The ``Tuner``: grid/random/Optuna search on the dotted config keys, ASHA, per-trial
    resources from config."""
    from ray import tune
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
            from ray.tune.search.optuna import OptunaSearch

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
            callbacks=[progress_callback(list(s.space), s.metric)],
        ),
    )


def progress_callback(keys: list[str], metric: str):
    """A Tune callback printing one line per trial event (Tune's own table is switched off:
    it would print the whole base config of every trial)."""
    from ray.tune import Callback

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

    outcomes = collect(grid, c, parent, config)
    best = pick_best(outcomes, config.sweep.metric, config.sweep.mode)
    for o in outcomes:
        if o.run_id:
            _finish_child(c, o)
    if best is not None:
        c.set_tag(parent, "best_trial", best.name)
        c.log_metric(parent, f"best_{config.sweep.metric}", best.metrics[config.sweep.metric])
    return SweepResult(parent, outcomes, best, uri)


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
        if not isinstance(found, int | float):
            c.set_terminated(result.parent_run_id, status="FAILED")
            produced = sorted(f"{d}.{m}" for d, ms in evaluation.items() for m in ms)
            raise RuntimeError(
                f"sweep.promote_metric {config.sweep.promote_metric} was not produced by the "
                f"evaluation of {best.name} (it produced {produced}); nothing was registered"
            )
        metric, mode, value = config.sweep.promote_metric, config.sweep.promote_mode, found
    resolved = to_dict(config)
    for key, override in best.overrides.items():
        set_path(resolved, key.split("."), override)
    reg = registry.register(
        c,
        name=config.mlflow.registered_model,
        run_id=best.run_id,
        checkpoint=checkpoint,
        config=resolved,
        example_audio=_example_clip(config),
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


def _example_clip(config: Config) -> str | None:
    """The first validation clip (the registered model's input example), if there is one."""
    from steermoe.data.examples import read_manifest
    from steermoe.train.data import data_root

    for spec in config.data.validation:
        path = data_root(config.data) / spec
        if path.is_file():
            examples = read_manifest(path)
            if examples:
                return examples[0].audio_path
    return None


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
