"""Sweep report: figures and one self-contained HTML page, built from MLflow data only.

Reads a sweep's parent run and its trial child runs, writes PNG figures (metric heatmap over
num_experts x top_k, learning curves, expert usage of the best trial, cost per trial), a CSV
of results and ``report.html`` (figures inlined as data URIs) to a local folder, and logs them
to the parent run under ``report/``::

    python -m dashboards.sweep_report --run-id <parent run id> \\
        --tracking-uri sqlite:///mlflow.db [--out reports/my-sweep] [--no-log]

``jobs.sweep`` calls it at the end of every sweep; open the page with any browser, or from
the parent run's artifacts in the MLflow UI.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from dashboards import _figures as figs
from dashboards import _html as h
from dashboards._runs import (
    History,
    RunView,
    children,
    fmt_number,
    history,
    load_run,
    short_key,
    steps_done,
    train_loss_history,
    usage_matrix,
    value_label,
    with_last_report,
)
from steermoe.tracking import fmt_seconds

REPORT_DIR = "report"
# Columns of the results table after the sweep metric, when any trial logged them
# (val_audio_gain: does the model listen? see the README).
EXTRA_METRICS = ("val_loss", "val_audio_gain", "val_wer", "train_loss", "samples_per_s")


@dataclass(frozen=True)
class TrialResult:
    """One trial: its run, final sweep-metric value, steps trained and curves."""

    run: RunView
    value: float | None
    steps: int
    metric_curve: History
    loss_curve: History

    @property
    def label(self) -> str:
        """``sweep-003 (num_experts=4, top_k=dense)``."""
        space = ", ".join(f"{short_key(k)}={value_label(k, v)}" for k, v in self.run.space.items())
        return f"{self.run.name} ({space})" if space else self.run.name


@dataclass(frozen=True)
class Sweep:
    """A sweep as MLflow holds it."""

    parent: RunView
    experiment: str
    trials: list[TrialResult]
    metric: str
    mode: str
    space: dict[str, list[Any]]
    max_steps: int | None
    num_trials: int

    @property
    def best(self) -> TrialResult | None:
        """The trial with the best final value of the sweep metric."""
        scored = [t for t in self.trials if t.value is not None]
        if not scored:
            return None
        pick = min if self.mode == "min" else max
        return pick(scored, key=lambda t: t.value)

    @property
    def registered(self) -> TrialResult | None:
        """The trial the sweep evaluated and registered (parent tag ``best_trial``)."""
        name = self.parent.tags.get("best_trial")
        return next((t for t in self.trials if t.run.name == name), None)

    @property
    def steps_used(self) -> int:
        """Optimizer steps trained by all trials together."""
        return sum(t.steps for t in self.trials)

    @property
    def steps_full(self) -> int | None:
        """Steps the full grid would train without early stopping."""
        return self.num_trials * self.max_steps if self.max_steps else None


def load_sweep(client: MlflowClient, run_id: str) -> Sweep:
    """Read the parent run, its trials and their curves from MLflow."""
    parent = load_run(client, run_id)
    metric = str(parent.param("sweep.metric", "val_loss"))
    max_steps = parent.param("train.max_steps")
    max_steps = int(max_steps) if isinstance(max_steps, (int, float)) else None
    trials = []
    for run in children(client, parent):
        run = with_last_report(client, run)
        metric_curve = history(client, run.run_id, metric)
        loss_curve = train_loss_history(client, run.run_id)
        value = run.metrics.get(metric)
        steps = steps_done(run, [metric_curve, loss_curve], max_steps)
        trials.append(TrialResult(run, value, steps, metric_curve, loss_curve))
    runs = [t.run for t in trials]
    num_trials = parent.param("num_trials")
    return Sweep(
        parent=parent,
        experiment=client.get_experiment(parent.experiment_id).name,
        trials=trials,
        metric=metric,
        mode=str(parent.param("sweep.mode", "min")),
        space=sweep_space(parent, runs),
        max_steps=max_steps,
        num_trials=int(num_trials) if isinstance(num_trials, int) else len(trials),
    )


def sweep_space(parent: RunView, trials: list[RunView]) -> dict[str, list[Any]]:
    """Search-space keys and their values: the parent's grid, extended by what trials ran."""
    declared: dict[str, Any] = {}
    whole = parent.param("sweep.space")
    if isinstance(whole, dict):
        declared.update(whole)
    prefix = "sweep.space."
    declared.update(
        {k[len(prefix) :]: parent.param(k) for k in parent.params if k.startswith(prefix)}
    )
    space = {k: list(v) for k, v in declared.items() if isinstance(v, list)}
    for run in trials:
        for key, value in run.space.items():
            values = space.setdefault(key, [])
            if value not in values:
                values.append(value)
    return {k: _ordered(v) for k, v in space.items()}


def _ordered(values: list[Any]) -> list[Any]:
    """Numbers ascending, then strings, then None (dense) last."""

    def key(v: Any) -> tuple:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        return (v is None, not number, v if number else 0, str(v))

    return sorted(values, key=key)


def grid_keys(space: dict[str, list[Any]]) -> tuple[str, str] | None:
    """The (num_experts, top_k) keys when both are in the space, else None."""
    experts = next((k for k in space if k.endswith("num_experts")), None)
    top_k = next((k for k in space if k.endswith("top_k")), None)
    return (experts, top_k) if experts and top_k else None


# --- figures -----------------------------------------------------------------------------


def metric_figure(sweep: Sweep, out: Path) -> tuple[str, Path]:
    """The heatmap over num_experts x top_k, or a bar per trial for any other space."""
    keys = grid_keys(sweep.space)
    if keys is None:
        return f"{sweep.metric} by trial", _metric_bars(sweep, out / "metric_by_trial.png")
    return f"{sweep.metric} over num_experts × top_k", _metric_heatmap(sweep, keys, out)


def _metric_heatmap(sweep: Sweep, keys: tuple[str, str], out: Path) -> Path:
    row_key, col_key = keys
    rows, cols = sweep.space[row_key], sweep.space[col_key]
    values = [[math.nan] * len(cols) for _ in rows]
    notes = [[""] * len(cols) for _ in rows]
    hatched = [[False] * len(cols) for _ in rows]
    best_cell = None
    for r, rv in enumerate(rows):
        for c, cv in enumerate(cols):
            cell = [
                t
                for t in sweep.trials
                if t.run.space.get(row_key) == rv and t.run.space.get(col_key) == cv
            ]
            values[r][c], notes[r][c], hatched[r][c] = _cell_summary(cell, sweep.mode)
            if sweep.best is not None and sweep.best in cell:
                best_cell = (r, c)
    others = len(sweep.space) > 2
    return figs.annotated_heatmap(
        out / "heatmap.png",
        title=f"final {sweep.metric}"
        + (" (best over the other dimensions)" if others else "")
        + (
            "\nhatched: stopped early by ASHA · red frame: best"
            if any(map(any, hatched))
            else "\nred frame: best"
        ),
        row_labels=[value_label(row_key, v) for v in rows],
        col_labels=[value_label(col_key, v) for v in cols],
        values=values,
        notes=notes,
        hatched=hatched,
        best=best_cell,
        xlabel=short_key(col_key),
        ylabel=short_key(row_key),
        cbar_label=f"{sweep.metric} ({'lower' if sweep.mode == 'min' else 'higher'} is better)",
        cmap="RdYlGn_r" if sweep.mode == "min" else "RdYlGn",
    )


def _cell_summary(cell: list[TrialResult], mode: str) -> tuple[float, str, bool]:
    """Value, note and hatch of one heatmap cell (its best trial when several ran)."""
    if not cell:
        return math.nan, "not run", False
    scored = [t for t in cell if t.value is not None]
    pick = min if mode == "min" else max
    trial = pick(scored, key=lambda t: t.value) if scored else cell[0]
    notes = []
    if trial.run.stopped_by:
        notes.append(f"{trial.run.stopped_by.upper()} @ step {trial.steps}")
    elif trial.run.status == "FAILED":
        notes.append("failed")
    if len(cell) > 1:
        notes.append(f"best of {len(cell)}")
    value = trial.value if trial.value is not None else math.nan
    return value, "\n".join(notes), bool(trial.run.stopped_by)


def _metric_bars(sweep: Sweep, path: Path) -> Path:
    best = sweep.best
    return figs.bars(
        path,
        title=f"final {sweep.metric} per trial (hatched: stopped early)",
        labels=[t.label for t in sweep.trials],
        values=[math.nan if t.value is None else t.value for t in sweep.trials],
        colors=["#1f9d55" if t is best else figs.status_color(t.run.outcome) for t in sweep.trials],
        notes=["best" if t is best else "" for t in sweep.trials],
        hatched=[bool(t.run.stopped_by) for t in sweep.trials],
        xlabel=f"{sweep.metric} ({'lower' if sweep.mode == 'min' else 'higher'} is better)",
    )


def curves_figure(sweep: Sweep, out: Path) -> Path:
    """Validation metric and training loss per trial against step."""

    def series(curve: str) -> list[figs.Series]:
        return [
            figs.Series(t.label, getattr(t, curve), dashed=bool(t.run.stopped_by))
            for t in sweep.trials
        ]

    panels = [
        figs.Panel(f"validation: {sweep.metric}", sweep.metric, series("metric_curve")),
        figs.Panel("training loss (every log step)", "train loss", series("loss_curve")),
    ]
    return figs.curves(out / "learning_curves.png", panels)


def usage_figure(trial: TrialResult, out: Path) -> Path | None:
    """Mean gate weight per expert per steered layer (last logged values), or None."""
    layers, experts, grid = usage_matrix(trial.run.metrics)
    if not grid:
        return None
    return figs.annotated_heatmap(
        out / "expert_usage.png",
        title=f"expert usage of {trial.run.name} (uniform = {1 / len(experts):.3g})",
        row_labels=[str(layer) for layer in layers],
        col_labels=[str(e) for e in experts],
        values=grid,
        xlabel="expert",
        ylabel="steered layer",
        cbar_label="mean gate weight",
        cmap="Blues",
        fmt="{:.3f}",
    )


def cost_figure(sweep: Sweep, out: Path) -> Path:
    """Wall time per trial, coloured by outcome, with the steps each trained."""
    seconds = [t.run.wall_s for t in sweep.trials]
    longest = max((s for s in seconds if s is not None), default=0.0)
    scale, unit = (60.0, "minutes") if longest > 300 else (1.0, "seconds")
    outcomes = {t.run.outcome: None for t in sweep.trials}
    return figs.bars(
        out / "cost.png",
        title="cost per trial (wall time)",
        labels=[t.label for t in sweep.trials],
        values=[math.nan if s is None else s / scale for s in seconds],
        colors=[figs.status_color(t.run.outcome) for t in sweep.trials],
        notes=[f"· {t.steps} steps" for t in sweep.trials],
        hatched=[bool(t.run.stopped_by) for t in sweep.trials],
        xlabel=f"wall time ({unit})",
        legend={k: figs.status_color(k) for k in outcomes},
        fmt="{:.3g}",
    )


# --- tables ------------------------------------------------------------------------------


def results_table(sweep: Sweep) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, formatted rows and row CSS classes of the results table."""
    metrics = [sweep.metric] + [
        m
        for m in EXTRA_METRICS
        if m != sweep.metric and any(m in t.run.metrics for t in sweep.trials)
    ]
    keys = list(sweep.space)
    headers = ["trial", *map(short_key, keys), "status", "steps", *metrics, "wall time", "run id"]
    rows, classes = [], []
    for t in sweep.trials:
        rows.append(
            [
                t.run.name,
                *(value_label(k, t.run.space.get(k)) if k in t.run.space else "–" for k in keys),
                t.run.outcome,
                str(t.steps),
                *(fmt_number(t.run.metrics.get(m)) for m in metrics),
                fmt_seconds(t.run.wall_s),
                t.run.run_id[:8],
            ]
        )
        classes.append(_row_class(t, sweep.best))
    return headers, rows, classes


def _row_class(trial: TrialResult, best: TrialResult | None) -> str:
    if trial is best:
        return "best"
    if trial.run.stopped_by:
        return "stopped"
    return "failed" if trial.run.status == "FAILED" else ""


def eval_table(trial: TrialResult) -> tuple[list[str], list[list[str]]] | None:
    """``eval.<dataset>.<metric>`` of a trial pivoted to dataset rows, or None."""
    cells: dict[str, dict[str, float]] = {}
    for key, value in trial.run.metrics.items():
        parts = key.split(".")
        if parts[0] == "eval" and len(parts) >= 3:
            cells.setdefault(parts[1], {})[".".join(parts[2:])] = value
    if not cells:
        return None
    first = ("wer", "cer", "accuracy", "exact_match", "f1", "num_samples")
    names = sorted(
        {m for row in cells.values() for m in row},
        key=lambda m: (first.index(m) if m in first else len(first), m),
    )
    rows = [[ds, *(fmt_number(cells[ds].get(m)) for m in names)] for ds in sorted(cells)]
    return ["dataset", *names], rows


def write_csv(sweep: Sweep, path: Path) -> Path:
    """The results table with unformatted values."""
    keys = list(sweep.space)
    metrics = sorted(
        {m for t in sweep.trials for m in t.run.metrics if not m.startswith("routing.")}
    )
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "run_id", *keys, "status", "steps", "wall_s", *metrics])
        for t in sweep.trials:
            w.writerow(
                [
                    t.run.name,
                    t.run.run_id,
                    *(t.run.space.get(k, "") for k in keys),
                    t.run.outcome,
                    t.steps,
                    t.run.wall_s,
                    *(t.run.metrics.get(m, "") for m in metrics),
                ]
            )
    return path


# --- page --------------------------------------------------------------------------------


def summary_cards(sweep: Sweep) -> str:
    """Best trial, registration, compute used vs the full grid, trial outcomes."""
    return (
        '<section class="cards">'
        + "".join(
            [_best_card(sweep), _registered_card(sweep), _compute_card(sweep), _trials_card(sweep)]
        )
        + "</section>"
    )


def _best_card(sweep: Sweep) -> str:
    best, registered = sweep.best, sweep.registered
    if best is None:
        return h.card("best trial", "none", f"no trial reported {sweep.metric}")
    space = ", ".join(f"{short_key(k)}={value_label(k, v)}" for k, v in best.run.space.items())
    detail = f"{best.run.name} · {space}"
    if registered is not None and registered is not best:
        detail += f" · the sweep registered {registered.run.name}"
    return h.card(f"best {sweep.metric} ({sweep.mode})", fmt_number(best.value), detail, "best")


def _registered_card(sweep: Sweep) -> str:
    version = sweep.parent.tags.get("registered_version")
    name = sweep.parent.param("mlflow.registered_model", "model")
    alias = sweep.parent.param("mlflow.alias", "champion")
    if not version:
        return h.card("registered model", "not registered", "no version was registered")
    promoted = sweep.parent.tags.get("promoted", "").lower() == "true"
    moved = f"alias @{alias} → this version" if promoted else f"alias @{alias} unchanged"
    trial = sweep.parent.tags.get("best_trial", "?")
    return h.card("registered model", f"{name} v{version}", f"from {trial} · {moved}")


def _compute_card(sweep: Sweep) -> str:
    used, full = sweep.steps_used, sweep.steps_full
    if not full:
        return h.card("compute used", f"{used} steps", "train.max_steps unknown: no grid estimate")
    share = 100.0 * used / full
    detail = (
        f"{used} of {full} trial-steps = {share:.1f}% of the full grid "
        f"({sweep.num_trials} trials × {sweep.max_steps} steps)"
    )
    return h.card("compute saved by ASHA", f"{100.0 - share:.1f}%", detail)


def _trials_card(sweep: Sweep) -> str:
    outcomes: dict[str, int] = {}
    for t in sweep.trials:
        outcomes[t.run.outcome] = outcomes.get(t.run.outcome, 0) + 1
    walls = [t.run.wall_s for t in sweep.trials if t.run.wall_s is not None]
    detail = ", ".join(f"{n} {k}" for k, n in outcomes.items())
    if walls:
        detail += f" · {fmt_seconds(sum(walls))} of trial time"
        if sweep.steps_full and sweep.steps_used:
            estimate = sum(walls) / sweep.steps_used * sweep.steps_full
            detail += f" (full grid ≈ {fmt_seconds(estimate)})"
    return h.card("trials", str(len(sweep.trials)), detail)


def render_html(sweep: Sweep, figures: dict[str, Path | None], generated: str) -> str:
    """The whole self-contained page."""
    headers, rows, classes = results_table(sweep)
    numeric = [
        h_ not in ("trial", "status", "run id") and h_ not in map(short_key, sweep.space)
        for h_ in headers
    ]
    parts = [summary_cards(sweep)]
    title, png = next(iter(figures.items()))
    parts.append(h.section(title, h.figure(png, title)))
    parts.append(
        h.section(
            "Results",
            '<div class="scroll">'
            + h.table(headers, rows, numeric=numeric, row_classes=classes)
            + '</div><p class="note">Green row: best trial. Orange: stopped early'
            " by ASHA (steps = where it stopped). Values are the last reported."
            "</p>",
        )
    )
    parts.append(
        h.section(
            "Learning curves",
            h.figure(figures["curves"], "learning curves")
            + '<p class="note">Dashed: trials stopped early.</p>',
        )
    )
    parts.append(_usage_section(sweep, figures.get("usage")))
    parts.append(h.section("Cost per trial", h.figure(figures["cost"], "cost per trial")))
    parts.append(_eval_section(sweep))
    parts.append(_space_section(sweep))
    parent = sweep.parent
    subtitle = (
        f"parent run <code>{escape(parent.run_id)}</code> · experiment "
        f"<b>{escape(sweep.experiment)}</b> · metric <b>{escape(sweep.metric)}</b> "
        f"({escape(sweep.mode)}) · {len(sweep.trials)} trials · generated {escape(generated)}"
    )
    return h.page(
        f"Sweep report: {parent.name}",
        subtitle,
        "".join(p for p in parts if p),
        "Built by dashboards.sweep_report from MLflow data only.",
    )


def _usage_section(sweep: Sweep, png: Path | None) -> str:
    trial = sweep.best or sweep.registered
    title = "Expert usage per layer (best trial)"
    if png is None or trial is None:
        return h.section(title, '<p class="note">The best trial logged no routing statistics.</p>')
    extra = [
        f"{k.split('.')[-1]} = {fmt_number(v)}"
        for k, v in trial.run.metrics.items()
        if k in ("routing.load_balance_loss", "routing.router_z_loss")
    ]
    note = f'<p class="note">{escape(trial.run.name)}: last logged mean gate weights'
    note += (" · " + escape(", ".join(extra)) if extra else "") + "</p>"
    return h.section(title, h.figure(png, title) + note)


def _eval_section(sweep: Sweep) -> str:
    trial = sweep.registered or sweep.best
    table = eval_table(trial) if trial else None
    if table is None:
        return ""
    headers, rows = table
    numeric = [False] + [True] * (len(headers) - 1)
    return h.section(
        f"Full evaluation of {trial.run.name}",
        '<div class="scroll">' + h.table(headers, rows, numeric=numeric) + "</div>",
    )


def _space_section(sweep: Sweep) -> str:
    items = "".join(
        f"<li><code>{escape(k)}</code>: "
        + "".join(f'<span class="pill">{escape(value_label(k, v))}</span>' for v in vals)
        + "</li>"
        for k, vals in sweep.space.items()
    )
    failed = [t for t in sweep.trials if t.run.tags.get("steermoe.error")]
    errors = "".join(
        f"<li><b>{escape(t.run.name)}</b>: {escape(t.run.tags['steermoe.error'][:300])}</li>"
        for t in failed
    )
    body = f"<ul>{items}</ul>"
    if errors:
        body += f'<p class="note">Failed trials:</p><ul>{errors}</ul>'
    return h.section("Search space", body)


# --- entry points ------------------------------------------------------------------------


def build_report(
    run_id: str,
    tracking_uri: str,
    out_dir: str | Path | None = None,
    *,
    log_to_mlflow: bool = True,
) -> Path:
    """Write the report of the sweep whose parent run is ``run_id``; return the HTML path.

    Args:
        run_id: The sweep's parent run.
        tracking_uri: MLflow tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``).
        out_dir: Local folder (default ``./reports/<sweep name>/``).
        log_to_mlflow: Also log the page, figures and CSV to the parent run under ``report/``.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    sweep = load_sweep(client, run_id)
    out = Path(out_dir) if out_dir else Path("reports") / _safe_name(sweep.parent.name)
    out.mkdir(parents=True, exist_ok=True)
    title, metric_png = metric_figure(sweep, out)
    best = sweep.best or sweep.registered
    figures: dict[str, Path | None] = {
        title: metric_png,
        "curves": curves_figure(sweep, out),
        "usage": usage_figure(best, out) if best else None,
        "cost": cost_figure(sweep, out),
    }
    csv_path = write_csv(sweep, out / "results.csv")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = out / "report.html"
    page.write_text(render_html(sweep, figures, generated), encoding="utf-8")
    if log_to_mlflow:
        for path in [page, csv_path, *(p for p in figures.values() if p is not None)]:
            client.log_artifact(run_id, str(path), REPORT_DIR)
    return page


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sweep"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help="the sweep's parent run id")
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI")
    parser.add_argument("--out", default=None, help="folder (default reports/<sweep name>/)")
    parser.add_argument("--no-log", action="store_true", help="do not log to the parent run")
    args = parser.parse_args(argv)
    page = build_report(args.run_id, args.tracking_uri, args.out, log_to_mlflow=not args.no_log)
    print(f"sweep report: {page.resolve()}")
    if not args.no_log:
        print(f"logged to MLflow run {args.run_id} under {REPORT_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
