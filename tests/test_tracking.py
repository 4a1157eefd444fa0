"""MLflow logging of Ray Train reports: exactly once per step, even when re-sent."""

from __future__ import annotations

import json

from steermoe import tracking as trk
from steermoe.config import load_config


def test_reports_are_logged_once_even_when_resent_after_a_restart(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = trk.client(uri)
    exp = trk.experiment_id(c, "t")
    run_id = trk.find_or_create_run(c, exp, "run")
    history = json.dumps([{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.5}])
    first = {"step": 2, "val_loss": 1.0, "train_history": history, "backfill": "[]"}
    trk.log_report(c, run_id, first)
    # The restarted worker re-sends step 2 with its next report (step 4).
    second = {
        "step": 4,
        "val_loss": 0.5,
        "routing/usage/l0/e1": 0.25,
        "train_history": json.dumps(
            [{"step": 3, "train_loss": 1.2}, {"step": 4, "train_loss": 1.0}]
        ),
        "backfill": json.dumps([first]),
    }
    trk.log_report(c, run_id, second)
    trk.log_report(c, run_id, second)  # a duplicate delivery changes nothing
    steps = [m.step for m in c.get_metric_history(run_id, "val_loss")]
    assert steps == [2, 4]
    assert [m.step for m in c.get_metric_history(run_id, "history.train_loss")] == [1, 2, 3, 4]
    assert c.get_run(run_id).data.metrics["routing.usage.l0.e1"] == 0.25


def test_lost_report_is_backfilled(tmp_path):
    c = trk.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = trk.find_or_create_run(c, trk.experiment_id(c, "t"), "run")
    lost = {"step": 2, "val_loss": 1.0}
    trk.log_report(c, run_id, {"step": 4, "val_loss": 0.5, "backfill": json.dumps([lost])})
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "val_loss")] == [
        (2, 1.0),
        (4, 0.5),
    ]


def test_find_or_create_run_continues_an_unfinished_run(tmp_path):
    c = trk.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = trk.experiment_id(c, "t")
    a = trk.find_or_create_run(c, exp, "same-name")
    assert trk.find_or_create_run(c, exp, "same-name") == a
    c.set_terminated(a, status="FINISHED")
    assert trk.find_or_create_run(c, exp, "same-name") != a


def test_config_is_logged_as_flat_params_with_the_space_as_json(tmp_path):
    c = trk.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = trk.find_or_create_run(c, trk.experiment_id(c, "t"), "run")
    trk.log_config(c, run_id, load_config(None, ["model.steering.top_k=2"]))
    params = c.get_run(run_id).data.params
    assert params["model.steering.top_k"] == "2"
    assert json.loads(params["sweep.space"])["model.steering.num_experts"] == [2, 4]


def test_a_continued_run_keeps_its_first_params_and_tags_the_changed_settings(tmp_path):
    c = trk.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = trk.experiment_id(c, "t")
    run_id = trk.find_or_create_run(c, exp, "run")
    assert trk.log_config(c, run_id, load_config(None, ["train.max_steps=300"])) == {}
    c.set_terminated(run_id, status="KILLED")  # the driver died; the command is run again
    again = trk.find_or_create_run(c, exp, "run")
    assert again == run_id
    changed = trk.log_config(c, again, load_config(None, ["train.max_steps=600"]))
    assert changed == {"train.max_steps": ("300", "600")}
    run = c.get_run(run_id)
    assert run.data.params["train.max_steps"] == "300"
    assert run.data.tags["continued.train.max_steps"] == "600"
    assert not [k for k in run.data.tags if k.startswith("continued.") and "max_steps" not in k]


def test_sqlite_artifacts_live_beside_the_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")  # not where the database is
    c = trk.client(f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}")
    (tmp_path / "db").mkdir(exist_ok=True)
    exp = trk.experiment_id(c, "e")
    location = c.get_experiment(exp).artifact_location
    assert location == (tmp_path / "db" / "mlartifacts" / "e").as_uri()
