"""Sweeps: search-space expansion, and the tiny 2 x 2 sweep end to end with a driver kill.

The end-to-end test runs ``python -m jobs.sweep`` as a user would, SIGKILLs the whole driver
(and its local Ray cluster) once trial 000 has finished and trial 001 has its first
checkpoint, resumes with ``--resume``, and then checks what MLflow holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow_poll import reported_steps
from synth_fixtures import write_suite

from steermoe.config import ConfigError, load_config
from steermoe.sweep import TrialOutcome, expand, pick_best

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
    cfg = load_config(None, ["sweep.space={'model.steering.experts': [1]}"])
    with pytest.raises(ConfigError, match=r"sweep\.space\.model\.steering\.experts"):
        expand(cfg)
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
        "train.max_steps=8",  # long enough that the kill lands mid-trial
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
        reached = _wait_for(lambda: _reported(db, "sweep-tiny-001", 2), 420, first)
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

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
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
    assert sorted(children) == [f"sweep-tiny-00{i}" for i in range(4)]
    space = {
        name: (r.data.params["model.steering.num_experts"], r.data.params["model.steering.top_k"])
        for name, r in children.items()
    }
    assert sorted(space.values()) == [("2", "1"), ("2", "2"), ("4", "1"), ("4", "2")]
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
