"""Search-space expansion: the grid (every valid, distinct combination), Tune domains under
their dotted config keys, and Optuna's define-by-run space. No search ever runs
``top_k > num_experts``.

The search space is Tune's, key by key: each ``sweep.space`` key is a Tune domain under its
own dotted name (``tune.loguniform`` for a learning rate, ``tune.choice`` for a list), so Tune's
results, Optuna and MLflow all see ``model.steering.num_experts``, never an index. Grid search
runs every valid combination of the lists once; random search draws from Tune domains (top_k
conditional on num_experts through ``tune.sample_from``); Optuna suggests define-by-run, where
lists become categorical.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from steermoe.config import Config, ConfigError, set_path, to_dict, validate


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


EXPERTS, TOP_K = "model.steering.num_experts", "model.steering.top_k"


def _form(spec: Any) -> tuple[str, tuple]:
    """A ``sweep.space`` entry as (form, arguments); a list of values is a ``choice``."""
    if isinstance(spec, dict):
        ((form, args),) = spec.items()
        return form, tuple(args)
    return "choice", tuple(spec)


def tune_domain(spec: Any):
    """A ``sweep.space`` entry as the Ray Tune domain of the same name (a list: ``choice``)."""
    from ray import tune  # heavy: config checks and reports import this module without Ray

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
    from ray import tune  # heavy: config checks and reports import this module without Ray

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
