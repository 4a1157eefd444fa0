"""Compare MLflow runs: a text table on stdout, overlaid metric curves (PNG) and an HTML page.

::

    python -m dashboards.compare --tracking-uri sqlite:///mlflow.db \\
        [--experiment steermoe] [RUN_ID_OR_NAME ...] [--metric val_wer] [--out reports/compare]

Runs are named by id or run name; a sweep's parent run stands for all its trials. With no
runs named, the most recent training runs and trials of the experiment are compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from dashboards import _figures as figs
from dashboards import _html as h
from dashboards._runs import (
    RunView,
    children,
    find_runs,
    fmt_number,
    history,
    train_loss_history,
    value_label,
)
from steermoe.tracking import fmt_seconds

# Params every comparison shows (short name -> dotted key).
KEY_PARAMS = {
    "experts": "model.steering.num_experts",
    "top_k": "model.steering.top_k",
    "lr_steer": "train.optim.lr_steering",
    "max_steps": "train.max_steps",
}
FINAL_METRICS = ("val_loss", "val_audio_gain", "val_wer", "train_loss", "samples_per_s")


def resolve(
    client: MlflowClient, refs: list[str], experiment: str | None, limit: int
) -> list[RunView]:
    """The runs to compare: the named ones (sweeps expanded to trials) or the latest ones."""
    exp_ids = _experiment_ids(client, experiment)
    if not refs:
        runs = client.search_runs(
            exp_ids, order_by=["attributes.start_time DESC"], max_results=1000
        )
        views = [v for v in map(RunView.from_run, runs) if v.kind in ("train", "trial")]
        return views[:limit][::-1]
    out: list[RunView] = []
    for ref in refs:
        for run in find_runs(client, ref, exp_ids):
            out.extend(children(client, run) if run.kind == "sweep" else [run])
    return out


def _experiment_ids(client: MlflowClient, name: str | None) -> list[str]:
    if name is None:
        return [e.experiment_id for e in client.search_experiments()]
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise LookupError(f"no MLflow experiment named {name!r}")
    return [exp.experiment_id]


def comparison_table(runs: list[RunView], metric: str) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows: run, kind, status, key params, final metrics, wall time."""
    metrics = [metric] + [m for m in FINAL_METRICS if m != metric]
    metrics = [m for m in metrics if m == metric or any(m in r.metrics for r in runs)]
    headers = ["run", "kind", "status", *KEY_PARAMS, *metrics, "wall time"]
    rows = [
        [
            r.name,
            r.kind,
            r.outcome,
            *(_param(r, key) for key in KEY_PARAMS.values()),
            *(fmt_number(r.metrics.get(m)) for m in metrics),
            fmt_seconds(r.wall_s),
        ]
        for r in runs
    ]
    return headers, rows


def _param(run: RunView, key: str) -> str:
    return value_label(key, run.param(key)) if key in run.params else "–"


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """A fixed-width plain-text table."""
    widths = [max(len(x) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def curves_figure(client: MlflowClient, runs: list[RunView], metric: str, path: Path) -> Path:
    """The chosen metric and the training loss of every run, overlaid."""
    labels = _unique_labels(runs)
    panels = [
        figs.Panel(metric, metric),
        figs.Panel("training loss", "train loss"),
    ]
    for run, label in zip(runs, labels):
        dashed = bool(run.stopped_by)
        panels[0].series.append(figs.Series(label, history(client, run.run_id, metric), dashed))
        panels[1].series.append(figs.Series(label, train_loss_history(client, run.run_id), dashed))
    return figs.curves(path, panels)


def _unique_labels(runs: list[RunView]) -> list[str]:
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({r.run_id[:6]})" for n, r in zip(names, runs)]


def write_page(
    path: Path, headers: list[str], rows: list[list[str]], png: Path, metric: str
) -> Path:
    """A small self-contained HTML page: the table and the curves."""
    numeric = [i >= 3 for i in range(len(headers))]
    body = h.section(
        "Runs", '<div class="scroll">' + h.table(headers, rows, numeric=numeric) + "</div>"
    ) + h.section("Curves", h.figure(png, f"{metric} and training loss per run"))
    subtitle = f"{len(rows)} runs · metric <b>{metric}</b>"
    path.write_text(
        h.page("Run comparison", subtitle, body, "Built by dashboards.compare from MLflow data."),
        encoding="utf-8",
    )
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN_ID_OR_NAME")
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI")
    parser.add_argument("--experiment", default=None, help="experiment name (default: all)")
    parser.add_argument("--metric", default="val_wer", help="metric to plot (default val_wer)")
    parser.add_argument("--out", default="reports/compare", help="folder for the PNG and HTML")
    parser.add_argument("--limit", type=int, default=10, help="runs when none are named")
    args = parser.parse_args(argv)
    client = MlflowClient(tracking_uri=args.tracking_uri)
    try:
        runs = resolve(client, args.runs, args.experiment, args.limit)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not runs:
        print("error: no runs to compare", file=sys.stderr)
        return 1
    headers, rows = comparison_table(runs, args.metric)
    print(text_table(headers, rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = curves_figure(client, runs, args.metric, out / "compare.png")
    page = write_page(out / "compare.html", headers, rows, png, args.metric)
    print(f"\nplots: {png}\npage:  {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
