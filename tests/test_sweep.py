"""Sweeps: search spaces (grid expansion, Tune domains, top_k <= num_experts in every
search), a tiny two-trial grid sweep end to end with a driver kill, and a tiny Optuna sweep.

The grid end-to-end test runs ``python -m jobs.sweep`` as a user would, SIGKILLs the whole
driver (and its local Ray cluster) once trial 000 has finished and trial 001 has its first
checkpoint, resumes with ``--resume``, and then checks what MLflow holds.
"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow_poll import reported_steps
from synth_fixtures import write_suite

from steermoe.config import ConfigError, load_config, to_dict, validate
from steermoe.sweep import (
    EXPERTS,
    TOP_K,
    OptunaSpace,
    TopKFitting,
    TrialOutcome,
    expand,
    pick_best,
    random_space,
    run_sweep,
    search_space,
    storage_path,
    trainable,
    tune_domain,
    tuner,
)

ROOT = Path(__file__).resolve().parents[1]


def test_expand_drops_invalid_combinations_with_reasons():
    cfg = load_config(
        None,
        [
            "sweep.space={'model.steering.num_experts': [1, 2, 4], "
            "'model.steering.top_k': [1, 2, null]}"
        ],
    )
    trials, dropped = expand(cfg)
    pairs = [(t.config.model.steering.num_experts, t.config.model.steering.top_k) for t in trials]
    # top_k == num_experts is dense routing: (1, 1) and (2, 2) train the same model as the
    # dense (top_k null) trial of their row and are dropped; (1, 2) is invalid.
    assert pairs == [(1, None), (2, 1), (2, None), (4, 1), (4, 2), (4, None)]
    assert len(dropped) == 3
    assert any("top_k" in d and "must be <= num_experts" in d for d in dropped)
    same = [d for d in dropped if "trains the same model as" in d]
    assert len(same) == 2 and all("'model.steering.top_k': None" in d for d in same)
    assert [t.name for t in trials][:2] == ["steermoe-sweep-000", "steermoe-sweep-001"]


def test_expand_runs_one_projector_only_trial_whatever_the_expert_count():
    cfg = load_config(
        None,
        [
            "sweep.space={'model.steering.enabled': [true, false], "
            "'model.steering.num_experts': [2, 4]}"
        ],
    )
    trials, dropped = expand(cfg)
    got = [(t.config.model.steering.enabled, t.config.model.steering.num_experts) for t in trials]
    # Without steering the expert count configures nothing: one projector-only trial.
    assert got == [(True, 2), (True, 4), (False, 2)]
    assert len(dropped) == 1 and "trains the same model as" in dropped[0]


def test_expand_rejects_unknown_fields_and_empty_spaces():
    with pytest.raises(ConfigError, match=r"sweep\.space\.model\.steering\.experts: no such"):
        load_config(None, ["sweep.space={'model.steering.experts': [1]}"])
    cfg = load_config(
        None,
        ["sweep.space={'model.steering.num_experts': [1], 'model.steering.top_k': [2]}"],
    )
    with pytest.raises(ConfigError, match="no valid combination"):
        expand(cfg)


def test_expand_covers_learning_rates():
    cfg = load_config(None, ["sweep.space={'train.optim.lr_steering': [0.01, 0.003]}"])
    trials, _ = expand(cfg)
    assert [t.config.train.optim.lr_steering for t in trials] == [0.01, 0.003]


LR = "train.optim.lr_projector"


def space_config(space: str, search: str = "random", *extra: str):
    return load_config(None, [f"sweep.search={search}", f"sweep.space={{{space}}}", *extra])


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("[0.001, 0.01]", (0.001, 0.01)),
        ("{choice: [1.0e-3, 1.0e-2]}", {"choice": (0.001, 0.01)}),
        ("{uniform: [1.0e-4, 1.0e-2]}", {"uniform": (1e-4, 1e-2)}),
        ("{quniform: [0.001, 0.01, 0.001]}", {"quniform": (0.001, 0.01, 0.001)}),
        # YAML 1.1 reads 1e-5 (no dot) as a string: bounds are read as numbers.
        ("{loguniform: [1e-5, 1e-2]}", {"loguniform": (1e-5, 1e-2)}),
        ("{qloguniform: [1.0e-5, 1.0e-2, 1.0e-5]}", {"qloguniform": (1e-5, 1e-2, 1e-5)}),
        ("{randint: [1, 4]}", {"randint": (1, 4)}),
    ],
)
def test_space_entries_parse_and_round_trip(entry, parsed):
    cfg = space_config(f"'{LR}': {entry}")
    assert cfg.sweep.space[LR] == parsed
    assert validate(to_dict(cfg)).sweep.space == cfg.sweep.space  # what travels to trials


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{logunif: [1, 2]}", "unknown search domain 'logunif'"),
        ("{uniform: [1]}", r"uniform takes 2 numbers \[a, b\], got \[1\]"),
        ("{qloguniform: [1.0e-5, 1.0e-2]}", "qloguniform takes 3 numbers"),
        ("{uniform: [a, b]}", "uniform takes 2 numbers"),
        ("{uniform: [0.1, 0.01]}", "uniform needs a < b"),
        ("{loguniform: [0.01, 0.01]}", "loguniform needs a < b"),
        ("{loguniform: [0, 0.1]}", "loguniform needs a > 0"),
        (
            "{qloguniform: [1.0e-5, 1.0e-2, 3.0e-5]}",
            "qloguniform needs q > 0 with a and b multiples",
        ),
        ("{randint: [1.5, 4]}", "randint takes integers"),
        ("{choice: []}", "choice takes"),
        ("{uniform: [0.1, 1], choice: [1]}", "expected a list of values or one domain"),
        ("0.01", "expected a list of values or one domain"),
        ("[]", "needs at least one value"),
    ],
)
def test_bad_space_entries_fail_naming_the_key(entry, message):
    with pytest.raises(ConfigError, match=rf"sweep\.space\.train\.optim\.lr_projector: {message}"):
        space_config(f"'{LR}': {entry}")


def test_space_keys_and_search_are_checked_at_load():
    with pytest.raises(ConfigError, match=r"sweep\.space\.train\.optim\.lr_proj: no such"):
        space_config("'train.optim.lr_proj': {loguniform: [1.0e-5, 1.0e-2]}")
    with pytest.raises(ConfigError, match=rf"sweep\.space\.{LR}: grid search runs lists"):
        space_config(f"'{LR}': {{loguniform: [1.0e-5, 1.0e-2]}}", "grid")
    grid = space_config(f"'{EXPERTS}': {{choice: [2, 4]}}", "grid")  # choice enumerates
    assert [t.config.model.steering.num_experts for t in expand(grid)[0]] == [2, 4]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        # Each value must make a valid config on its own, probed before any cluster work.
        (f"'{EXPERTS}': {{randint: [0, 4]}}", rf"{EXPERTS}: 0 makes no valid config"),
        (f"'{EXPERTS}': {{uniform: [1, 8]}}", rf"{EXPERTS}: 3\.6.* makes no valid config"),
        (f"'{LR}': [0.01, -1]", rf"{LR}: -1 makes no valid config"),
        (f"'{TOP_K}': {{uniform: [1, 4]}}", rf"{TOP_K}: .* makes no valid config"),
        (f"'{EXPERTS}': {{quniform: [2, 8, 2]}}", rf"{EXPERTS}: takes a list, choice or randint"),
        (f"'{EXPERTS}': [1, 2], '{TOP_K}': [4, 8]", rf"{EXPERTS}: no pair with top_k <="),
    ],
)
def test_search_space_rejects_values_no_config_takes(entry, message):
    cfg = space_config(entry)
    with pytest.raises(ConfigError, match=rf"sweep\.space\.{message}"):
        search_space(cfg)


def test_search_space_cuts_to_pairs_that_fit_and_says_so():
    cfg = space_config(f"'{TOP_K}': [1, 2, 8, null]", "random", "model.steering.num_experts=4")
    space, cuts = search_space(cfg)
    assert space == {TOP_K: (1, 2, None)} and cuts == [
        f"{TOP_K} from [1, 2, None]: num_experts is 4"
    ]
    cfg = space_config(f"'{EXPERTS}': {{randint: [1, 9]}}", "optuna", "model.steering.top_k=2")
    space, cuts = search_space(cfg)
    assert space == {EXPERTS: {"randint": (2, 9)}} and "at least 2" in cuts[0]
    cfg = space_config(f"'{TOP_K}': [2, 1], '{EXPERTS}': [1, 2, 4]")
    space, _ = search_space(cfg)
    assert list(space) == [EXPERTS, TOP_K]  # num_experts is drawn first


def test_space_entries_map_onto_tune_domains():
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized, Uniform

    lr = tune_domain({"loguniform": (1e-5, 1e-2)})
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-5, 1e-2)
    assert isinstance(lr.get_sampler(), LogUniform)
    assert isinstance(tune_domain({"uniform": (0.0, 1.0)}).get_sampler(), Uniform)
    q = tune_domain({"qloguniform": (1e-5, 1e-2, 1e-5)}).get_sampler()
    assert isinstance(q, Quantized) and q.q == 1e-5 and isinstance(q.get_sampler(), LogUniform)
    assert isinstance(tune_domain({"quniform": (0.0, 1.0, 0.25)}).get_sampler(), Quantized)
    k = tune_domain({"randint": (1, 4)})
    assert isinstance(k, Integer) and (k.lower, k.upper) == (1, 4)
    assert isinstance(tune_domain((1, None)), Categorical)
    assert tune_domain({"choice": (2, 4)}).categories == [2, 4]
    draws = [tune_domain({"qloguniform": (1e-5, 1e-2, 1e-5)}).sample() for _ in range(50)]
    assert all(1e-5 <= x <= 1e-2 and math.isclose(x / 1e-5, round(x / 1e-5)) for x in draws)


PAIRED = (
    f"'{LR}': {{loguniform: [1.0e-5, 1.0e-2]}}, '{EXPERTS}': [1, 2, 4, 8], "
    f"'{TOP_K}': [1, 2, 4, 8, null]"
)


def _valid(config: dict) -> bool:
    return config[TOP_K] is None or config[TOP_K] <= config[EXPERTS]


@pytest.mark.parametrize(
    "space",
    [PAIRED, f"'{EXPERTS}': {{randint: [1, 9]}}, '{TOP_K}': {{randint: [2, 6]}}"],
)
def test_random_search_never_draws_top_k_above_num_experts(space):
    from ray.tune.search.variant_generator import generate_variants

    param_space = random_space(search_space(space_config(space))[0])
    drawn = [
        spec["config"] for _ in range(200) for _, spec in generate_variants({"config": param_space})
    ]
    assert all(_valid(c) for c in drawn)
    pairs = {(c[EXPERTS], c[TOP_K]) for c in drawn}
    assert len(pairs) >= 10  # conditional, not collapsed onto one safe pair
    # What a Tuner passes: the trial's drawn config itself.
    fitting = TopKFitting((1, 2, 4, 8, None))
    assert all(fitting({EXPERTS: 2}) in (1, 2, None) for _ in range(50))


@pytest.mark.parametrize(
    "space",
    [PAIRED, f"'{EXPERTS}': {{randint: [1, 9]}}, '{TOP_K}': {{randint: [2, 6]}}"],
)
def test_optuna_never_suggests_top_k_above_num_experts(space):
    from ray.tune.search.optuna import OptunaSearch

    drawn_space = search_space(space_config(space, "optuna"))[0]
    searcher = OptunaSearch(OptunaSpace(drawn_space), metric="m", mode="min", seed=0)
    drawn = []
    for i in range(200):  # TPE takes over after its random start-up trials
        config = searcher.suggest(str(i))
        drawn.append(config)
        loss = config[EXPERTS] + (config[TOP_K] or 0) + 10 * config.get(LR, 0)
        searcher.on_trial_complete(str(i), {"m": loss, "training_iteration": 1})
    assert all(_valid(c) for c in drawn)
    assert all(set(c) == set(drawn_space) for c in drawn)  # the real keys, nothing else
    counts = collections.Counter((c[EXPERTS], c[TOP_K]) for c in drawn)
    assert len(counts) >= 5
    if LR in drawn[0]:
        assert all(1e-5 <= c[LR] <= 1e-2 for c in drawn) and len({c[LR] for c in drawn}) > 100


def test_pick_best_respects_mode_and_ignores_trials_without_metric():
    def outcome(name, value):
        metrics = {} if value is None else {"val_wer": value}
        return TrialOutcome(name, {}, "id", metrics, 4, False, None, "/ckpt")

    trials = [outcome("a", 30.0), outcome("b", 20.0), outcome("c", None)]
    assert pick_best(trials, "val_wer", "min").name == "b"
    assert pick_best(trials, "val_wer", "max").name == "a"
    assert pick_best([outcome("c", None)], "val_wer", "min") is None


def _reported(db: Path, run_name: str, step: int) -> bool:
    """Ray Train logs a report to MLflow only after registering its checkpoint."""
    return any(s >= step for s in reported_steps(db, run_name))


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.5)
    return False


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_sweep_survives_a_killed_driver_and_registers_a_champion(tmp_path):
    import mlflow

    data = write_suite(tmp_path / "data", n_train=16, n_val=4)
    db = tmp_path / "mlflow.db"
    runs = tmp_path / "runs"
    args = [
        sys.executable,
        "-m",
        "jobs.sweep",
        str(ROOT / "jobs" / "configs" / "sweep_tiny.yaml"),
        f"data.root={data}",
        f"train.storage_path={runs}",
        f"mlflow.tracking_uri=sqlite:///{db}",
        "sweep.asha.enabled=false",
        # Two trials: one finished before the kill, one interrupted mid-run.
        "sweep.space={'model.steering.num_experts': [2, 4], 'model.steering.top_k': [1]}",
        "train.max_steps=8",  # long enough that the kill lands mid-trial
        "train.num_workers=1",  # the two-worker runs are test_scaleout's
        "train.eval_every=2",
        "eval.datasets=[librivox]",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
        "STEERMOE_CACHE": str(tmp_path / "cache"),
        "TUNE_GLOBAL_CHECKPOINT_S": "1",  # save sweep state every second
    }
    trials = runs / "sweeps" / "sweep-tiny" / "trials"
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        reached = _wait_for(lambda: _reported(db, "sweep-tiny-001", 2), 900, first)
        assert reached, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its whole local Ray cluster
        first.wait()
    assert (trials / "sweep-tiny-000" / "checkpoint_step0000008").exists()

    second = subprocess.run(
        [*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "resuming from" in second.stdout

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("steermoe")
    runs_ = client.search_runs([exp.experiment_id])
    parents = [r for r in runs_ if r.data.tags.get("steermoe.kind") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "model.steering.num_experts" in parent.data.params["sweep.space"]
    children = {
        r.info.run_name: r
        for r in runs_
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert sorted(children) == ["sweep-tiny-000", "sweep-tiny-001"]
    space = {
        name: (r.data.params["model.steering.num_experts"], r.data.params["model.steering.top_k"])
        for name, r in children.items()
    }
    assert sorted(space.values()) == [("2", "1"), ("4", "1")]
    for name, r in children.items():
        assert r.info.status == "FINISHED", name
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_loss")]
        assert steps == [2, 4, 6, 8], (name, steps)  # nothing lost, nothing logged twice
        assert {a.path for a in client.list_artifacts(r.info.run_id, "final")} == {
            "final/checkpoint"
        }
    # Trial 000 had finished: not rerun. Trial 001 resumed from its step-2 checkpoint.
    restarts = {
        name: [m.value for m in client.get_metric_history(r.info.run_id, "restarts")]
        for name, r in children.items()
    }
    assert restarts["sweep-tiny-000"] == [0.0] * 4
    assert restarts["sweep-tiny-001"][0] == 0.0 and restarts["sweep-tiny-001"][-1] == 1.0

    best = parent.data.tags["best_trial"]
    version = client.get_model_version_by_alias("steermoe-tiny", "champion")
    assert version.run_id == children[best].info.run_id
    assert parent.data.tags["registered_version"] == str(version.version)
    assert any(k.startswith("eval.librivox.") for k in children[best].data.metrics)
    assert "report/report.html" in {
        a.path for a in client.list_artifacts(parent.info.run_id, "report")
    }


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray

    with pytest.MonkeyPatch.context() as mp:  # later modules find the real backbones again
        mp.setenv("STEERMOE_CACHE", str(tmp_path_factory.mktemp("cache")))
        # The dashboard (127.0.0.1) serves the state API Ray Train's controller polls.
        ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1")
        yield
        ray.shutdown()


@pytest.mark.ray
def test_random_sweep_runs_tune_domains_under_their_real_keys(ray_cluster, tmp_path, monkeypatch):
    from ray import tune

    def stand_in(config):  # a trial that trains nothing: this test is about the Tuner
        tune.report(
            {"val_loss": float(config[EXPERTS]), "name": tune.get_context().get_trial_name()}
        )

    # build_tuner reads trainable from its own module, steermoe.sweep.tuner.
    monkeypatch.setattr(tuner, "trainable", lambda *_: tune.with_resources(stand_in, {"cpu": 0.01}))
    space = f"'{LR}': {{loguniform: [1.0e-5, 1.0e-2]}}, '{EXPERTS}': [1, 2, 4], '{TOP_K}': [2, 4]"
    cfg = space_config(
        space,
        "random",
        "sweep.name=stand-in",
        "sweep.num_samples=4",
        "sweep.metric=val_loss",
        "sweep.asha.enabled=false",
        f"train.storage_path={tmp_path}",
    )
    df = tuner.build_tuner(cfg, "parent", "uri").fit().get_dataframe()
    assert {c for c in df.columns if c.startswith("config/")} == {
        f"config/{k}" for k in (LR, EXPERTS, TOP_K)
    }
    assert sorted(df["name"]) == [f"stand-in-00{i}" for i in range(4)]
    assert (df[f"config/{EXPERTS}"] >= 2).all()  # 1 expert fits no top_k of [2, 4]
    assert (df[f"config/{TOP_K}"] <= df[f"config/{EXPERTS}"]).all()
    assert df[f"config/{LR}"].between(1e-5, 1e-2).all() and df[f"config/{LR}"].nunique() == 4


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_optuna_sweep_draws_a_log_uniform_lr_under_its_real_key(ray_cluster, tmp_path):
    import mlflow
    from ray import tune

    data = write_suite(tmp_path / "data", n_train=16, n_val=4)
    cfg = load_config(
        ROOT / "jobs" / "configs" / "sweep_optuna_tiny.yaml",
        [
            f"data.root={data}",
            f"train.storage_path={tmp_path / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            # Two short trials keep the suite fast; evaluation and registration are the grid
            # test's part.
            "sweep.num_samples=2",
            "sweep.max_concurrent_trials=2",
            "train.max_steps=2",
            "train.eval_every=1",
            "sweep.evaluate_best=false",
        ],
    )
    result = run_sweep(cfg)
    assert [t.name for t in result.trials] == [f"sweep-optuna-tiny-00{i}" for i in range(2)]
    assert all(t.error is None for t in result.trials), [t.error for t in result.trials]

    restored = tune.Tuner.restore(
        str(storage_path(cfg) / cfg.sweep.name),
        trainable=trainable(cfg, result.parent_run_id, result.tracking_uri),
    )
    df = restored.get_results().get_dataframe()
    assert {c for c in df.columns if c.startswith("config/")} == {
        f"config/{k}" for k in (LR, EXPERTS, TOP_K)
    }
    lrs = df[f"config/{LR}"]
    assert lrs.between(1e-4, 1e-2).all() and lrs.nunique() == 2

    client = mlflow.MlflowClient(tracking_uri=result.tracking_uri, registry_uri=result.tracking_uri)
    for trial in result.trials:
        drawn = trial.overrides
        assert drawn[TOP_K] is None or drawn[TOP_K] <= drawn[EXPERTS]
        run = client.get_run(trial.run_id)
        assert float(run.data.params[LR]) == pytest.approx(drawn[LR])
        assert run.data.params[EXPERTS] == str(drawn[EXPERTS])
        assert json.loads(run.data.tags[f"space.{LR}"]) == pytest.approx(drawn[LR])
        assert "trial" not in run.data.params


@pytest.mark.ray
def test_an_interrupted_sweep_leaves_its_trials_unfinished_not_stopped(
    ray_cluster, tmp_path, monkeypatch
):
    from ray import tune

    started = tmp_path / "started"

    def runs_out(config):
        tune.report({"val_loss": 1.0})

    def runs_on(config):  # reports, then trains until something stops it
        tune.report({"val_loss": 1.0})
        started.touch()
        time.sleep(300)

    def sweep(name: str, fn) -> None:
        monkeypatch.setattr(tuner, "trainable", lambda *_: tune.with_resources(fn, {"cpu": 0.01}))
        cfg = space_config(
            f"'{EXPERTS}': [2]",
            "grid",
            f"sweep.name={name}",
            "sweep.metric=val_loss",
            "sweep.asha.enabled=false",
            f"train.storage_path={tmp_path}",
        )
        tuner.build_tuner(cfg, "parent", "uri").fit()

    sweep("ran-out", runs_out)
    assert tuner.unfinished_trials(tmp_path / "sweeps" / "ran-out") == []

    def interrupt() -> None:  # Ctrl+C once the trial runs (Tune's handler is in place then)
        deadline = time.time() + 240
        while not started.exists() and time.time() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    begun = time.time()
    sweep("interrupted", runs_on)
    assert time.time() - begun < 240  # the interruption ended fit(), not the trial's sleep
    assert tuner.unfinished_trials(tmp_path / "sweeps" / "interrupted") == ["interrupted-000"]
