"""Dashboards: the sweep report, the run comparison CLI and the Grafana dashboard JSON.

A fixture writes a small MLflow SQLite store from scratch: a sweep parent run and four trials
over num_experts {2, 4} x top_k {1, dense} (one stopped by ASHA), plus a 1-D sweep over a
learning rate. Nothing here imports steermoe: the dashboards read MLflow only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from dashboards import compare, sweep_report

GRAFANA = Path(__file__).resolve().parents[1] / "dashboards" / "grafana" / "steermoe.json"
MAX_STEPS = 8
T0 = 1_700_000_000_000  # ms
# name, num_experts, top_k, status, steps trained, val_wer per eval step, val_loss, wall s
TRIALS = [
    ("sw-000", 2, 1, "FINISHED", 8, [40.0, 30.0, 25.0, 22.0], 2.0, 100),
    ("sw-001", 2, None, "FINISHED", 8, [35.0, 26.0, 20.0, 18.0], 1.9, 120),
    ("sw-002", 4, 1, "KILLED", 4, [45.0, 38.0], 2.5, 50),
    ("sw-003", 4, None, "FINISHED", 8, [42.0, 30.0, 24.0, 20.0], 1.5, 150),
]
BEST = "sw-001"  # min final val_wer (sw-003 has the lowest val_loss: not the sweep metric)
# 8 + 8 + 4 + 8 = 28 trial-steps of 4 x 8 = 32: 87.5% of the full grid, ASHA saved 12.5%.
USED, FULL, SAVED = 28, 32, "12.5%"
SWEEP_END_S = 1000


def _metrics(steps: int, wer: list[float], val_loss: float, experts: int) -> list[Metric]:
    out = [Metric("history.train_loss", 3.0 - 0.1 * s, T0 + s, s) for s in range(1, steps + 1)]
    out += [Metric("val_wer", v, T0 + 2 * i + 2, 2 * i + 2) for i, v in enumerate(wer)]
    out += [Metric("val_loss", val_loss, T0 + steps, steps)]
    out += [Metric("samples_per_s", 12.5, T0 + steps, steps)]
    for layer in (0, 1):
        for e in range(experts):
            share = (e + 1) / sum(range(1, experts + 1))
            out.append(Metric(f"routing.usage.l{layer}.e{e}", share, T0 + steps, steps))
    return out


def _run(client: MlflowClient, exp: str, name: str, tags: dict) -> str:
    run = client.create_run(exp, run_name=name, tags=tags, start_time=T0)
    return run.info.run_id


def _trial(client: MlflowClient, exp: str, parent: str, row: tuple) -> str:
    name, experts, top_k, status, steps, wer, val_loss, wall = row
    tags = {
        "mlflow.parentRunId": parent,
        "steermoe.kind": "trial",
        "space.model.steering.num_experts": json.dumps(experts),
        "space.model.steering.top_k": json.dumps(top_k),
        "steermoe.stopped_early": "asha" if status == "KILLED" else "false",
    }
    run_id = _run(client, exp, name, tags)
    params = {"model.steering.num_experts": experts, "model.steering.top_k": json.dumps(top_k)}
    metrics = _metrics(steps, wer, val_loss, experts)
    if status == "KILLED":
        metrics.append(Metric("stopped_at_step", steps, T0, 0))
    if name == BEST:
        metrics.append(Metric("eval.librivox.wer", 17.5, T0, 0))
    # One report marker per evaluation; the last one lands `wall` seconds after the start.
    reports = [2 * i + 2 for i in range(len(wer))]
    metrics += [
        Metric("report_step", r, T0 + wall * 1000 * (i + 1) // len(reports), r)
        for i, r in enumerate(reports)
    ]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    # Trials are closed together when the sweep ends: the time per trial is to its last report.
    client.set_terminated(run_id, status, end_time=T0 + SWEEP_END_S * 1000)
    return run_id


def _parent(client: MlflowClient, exp: str, name: str, space: dict, metric: str) -> str:
    run_id = _run(client, exp, name, {"steermoe.kind": "sweep"})
    params = {
        "sweep.name": name,
        "sweep.space": json.dumps(space),
        "sweep.metric": metric,
        "sweep.mode": "min",
        "train.max_steps": str(MAX_STEPS),
        "mlflow.registered_model": "steermoe-test",
        "mlflow.alias": "champion",
    }
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """An MLflow SQLite store with a 2 x 2 sweep (``grid``) and a 1-D sweep (``lr``)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("steermoe", artifact_location=(root / "artifacts").as_uri())
    space = {"model.steering.num_experts": [2, 4], "model.steering.top_k": [1, None]}
    grid = _parent(client, exp, "sw", space, "val_wer")
    for row in TRIALS:
        _trial(client, exp, grid, row)
    client.log_batch(
        grid,
        params=[Param("num_trials", "4")],
        tags=[
            RunTag("best_trial", BEST),
            RunTag("registered_version", "3"),
            RunTag("promoted", "true"),
        ],
    )
    lr = _parent(client, exp, "lr-sweep", {"train.optim.lr_steering": [0.01, 0.001]}, "val_wer")
    for i, (rate, wer) in enumerate([(0.01, [30.0, 21.0]), (0.001, [33.0, 29.0])]):
        tags = {
            "mlflow.parentRunId": lr,
            "steermoe.kind": "trial",
            "space.train.optim.lr_steering": json.dumps(rate),
        }
        run_id = _run(client, exp, f"lr-sweep-00{i}", tags)
        client.log_batch(run_id, metrics=_metrics(4, wer, 2.0, 2))
        client.set_terminated(run_id, "FINISHED", end_time=T0 + 30_000)
    return {"uri": uri, "client": client, "grid": grid, "lr": lr, "root": root}


@pytest.fixture(scope="module")
def report(store) -> Path:
    """The 2 x 2 sweep's report, logged to MLflow."""
    out = store["root"] / "report"
    return sweep_report.build_report(store["grid"], store["uri"], out)


def test_report_page_is_self_contained(report):
    html = report.read_text()
    assert report.name == "report.html"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    # heatmap, learning curves, expert usage, cost: all inline
    assert html.count('src="data:image/png;base64,') == 4


def test_report_names_the_best_trial_by_the_sweep_metric(report):
    html = report.read_text()
    card = re.search(r'<div class="card best">(.*?)</div></div>', html, re.S).group(1)
    assert "best val_wer (min)" in card and ">18<" in card and BEST in card
    best_rows = re.findall(r'<tr class="best">(.*?)</tr>', html, re.S)
    assert len(best_rows) == 1 and f"<td>{BEST}</td>" in best_rows[0]
    assert "dense" in best_rows[0]  # top_k null is shown as dense


def test_report_shows_asha_savings(report):
    html = report.read_text()
    assert f"{USED} of {FULL} trial-steps" in html
    assert "87.5% of the full grid" in html
    card = re.search(r"compute saved by ASHA</div><div class=\"value\">([^<]+)<", html).group(1)
    assert card == SAVED
    stopped = re.findall(r'<tr class="stopped">(.*?)</tr>', html, re.S)
    assert len(stopped) == 1 and "sw-002" in stopped[0] and "stopped (ASHA)" in stopped[0]


def test_report_writes_figures_and_csv(report):
    out = report.parent
    for name in ("heatmap.png", "learning_curves.png", "expert_usage.png", "cost.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name
    assert not (out / "metric_by_trial.png").exists()
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + len(TRIALS)
    assert lines[3].startswith("sw-002,") and ",4," in lines[3]  # ASHA stopped at step 4


def test_report_is_logged_to_the_parent_run(store, report):
    client = store["client"]
    logged = {a.path for a in client.list_artifacts(store["grid"], "report")}
    expected = {"report.html", "results.csv", "heatmap.png", "learning_curves.png", "cost.png"}
    assert {f"report/{n}" for n in expected} <= logged
    assert "report/expert_usage.png" in logged
    assert not client.list_artifacts(store["lr"], "report")


def test_sweep_object_reads_mlflow(store):
    sweep = sweep_report.load_sweep(store["client"], store["grid"])
    assert [t.run.name for t in sweep.trials] == [r[0] for r in TRIALS]
    assert sweep.best.run.name == BEST and sweep.registered.run.name == BEST
    assert [t.steps for t in sweep.trials] == [r[4] for r in TRIALS]
    assert sweep.steps_used == USED and sweep.steps_full == FULL
    assert sweep.space["model.steering.top_k"] == [1, None]
    assert [t.run.wall_s for t in sweep.trials] == [r[7] for r in TRIALS]


def test_one_dimensional_space_falls_back_to_bars(store, tmp_path, capsys):
    out = tmp_path / "lr"
    code = sweep_report.main(
        ["--run-id", store["lr"], "--tracking-uri", store["uri"], "--out", str(out), "--no-log"]
    )
    assert code == 0 and str(out / "report.html") in capsys.readouterr().out
    assert (out / "metric_by_trial.png").exists() and not (out / "heatmap.png").exists()
    html = (out / "report.html").read_text()
    assert "val_wer by trial" in html and "lr-sweep-000" in html
    assert re.search(r'<tr class="best"><td>lr-sweep-000</td>', html)
    assert "8 of 16 trial-steps" in html  # 2 trials x 4 steps of a 2 x 8-step grid


def test_compare_cli_prints_every_run_and_plots(store, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["--tracking-uri", store["uri"], "--experiment", "steermoe", "--out", str(out)]
    code = compare.main([*argv, "sw", "lr-sweep-001", "--metric", "val_wer"])
    printed = capsys.readouterr().out
    assert code == 0
    lines = printed.splitlines()
    assert lines[0].split()[:3] == ["run", "kind", "status"] and "val_wer" in lines[0]
    for name in [r[0] for r in TRIALS] + ["lr-sweep-001"]:
        row = next(line for line in lines if line.startswith(name + " "))
        assert "trial" in row
    assert "lr-sweep-000" not in printed
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (out / "compare.html").read_text()


def test_compare_cli_rejects_unknown_runs(store, tmp_path, capsys):
    code = compare.main(["--tracking-uri", store["uri"], "no-such-run", "--out", str(tmp_path)])
    assert code == 2 and "no-such-run" in capsys.readouterr().err


def _grafana() -> dict:
    return json.loads(GRAFANA.read_text())


def test_grafana_dashboard_covers_serve_and_train_metrics():
    dash = _grafana()
    assert dash["schemaVersion"] >= 36 and dash["uid"] and dash["title"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for name in (
        "ray_serve_num_http_requests",
        "ray_serve_deployment_request_counter",
        "ray_serve_http_request_latency_ms_bucket",
        "ray_serve_deployment_processing_latency_ms_bucket",
        "ray_steermoe_batch_size",
        "ray_steermoe_requests_total",
        "ray_steermoe_request_latency_s_bucket",
        "ray_serve_deployment_replica_healthy",
        "ray_node_gpus_utilization",
        "ray_node_cpu_utilization",
        "ray_node_mem_used",
        "ray_train_",
    ):
        assert name in exprs, name
    assert exprs.count("histogram_quantile(") >= 6


def test_grafana_dashboard_uses_the_datasource_variable():
    dash = _grafana()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
