"""Sweep expert count x top-k (and learning rates) with Ray Tune; register the best in MLflow.

Tiny CPU twin (a few minutes)::

    python -m jobs.build_data jobs/configs/data_tiny.yaml
    python -m jobs.sweep jobs/configs/sweep_tiny.yaml
    python -m jobs.sweep jobs/configs/sweep_optuna_tiny.yaml  # Optuna, log-uniform lr

Against a running cluster (token auth on; see README)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.sweep jobs/configs/sweep.yaml

Resume a sweep whose driver died or was interrupted with Ctrl+C (finished trials are kept,
unfinished ones continue from their last checkpoint; an interrupted sweep registers nothing
and exits with status 130)::

    python -m jobs.sweep jobs/configs/sweep.yaml --resume

Start a sweep of an existing name over (its earlier Tune/Train state is discarded)::

    python -m jobs.sweep jobs/configs/sweep.yaml --fresh
"""

from __future__ import annotations

import subprocess
import sys

from jobs._cli import parse
from steermoe.sweep import finalize, run_sweep


def main(argv: list[str] | None = None) -> int:
    config, args = parse(
        __doc__,
        argv,
        flags=[
            ("--resume", {"action": "store_true", "help": "continue an interrupted sweep"}),
            ("--fresh", {"action": "store_true", "help": "discard an earlier sweep of this name"}),
        ],
    )
    if args.resume and args.fresh:
        print("error: --resume and --fresh exclude each other", file=sys.stderr)
        return 2
    try:
        result = run_sweep(config, resume=args.resume, fresh=args.fresh)
    except (FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'trial':<18}{'overrides':<52}{config.sweep.metric:>10}{'steps':>7}  status")
    for t in result.trials:
        value = t.metrics.get(config.sweep.metric, float("nan"))
        status = "error" if t.error else "interrupted" if t.interrupted else "finished"
        status = "stopped (ASHA)" if status == "finished" and t.stopped_early else status
        print(f"{t.name:<18}{t.overrides!s:<52}{value:>10.4g}{t.steps:>7}  {status}")
    if result.interrupted:
        given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--fresh"]
        again = " ".join(["python -m jobs.sweep", *given, *([] if args.resume else ["--resume"])])
        print(
            f"error: the sweep was interrupted before {', '.join(result.interrupted)} "
            f"finished; nothing was registered. Continue it with:\n  {again}",
            file=sys.stderr,
        )
        return 130
    if not any(t.error is None for t in result.trials):
        print("error: every trial failed; see the trial errors above", file=sys.stderr)
        return 1
    outcome = finalize(result, config)
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "dashboards.sweep_report",
            "--run-id",
            result.parent_run_id,
            "--tracking-uri",
            result.tracking_uri,
        ],
        check=False,
    )
    if report.returncode:
        print("warning: the sweep report could not be built (see above)", file=sys.stderr)
    print(f"\nMLflow parent run {result.parent_run_id} ({result.tracking_uri})")
    if outcome["registration"]:
        reg = outcome["registration"]
        print(
            f"registered model: models:/{reg.name}/{reg.version}"
            f" (alias @{config.mlflow.alias}: {'this version' if reg.promoted else 'unchanged'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
