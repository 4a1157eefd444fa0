"""Evaluate a checkpoint on named datasets: write per-example manifests, score them, log them.

Tiny CPU twin (seconds; a checkpoint from ``python -m jobs.train jobs/configs/train_tiny.yaml``,
synthetic sets only when ``python -m jobs.build_data jobs/configs/data_tiny.yaml`` has run)::

    python -m jobs.evaluate jobs/configs/eval_tiny.yaml --checkpoint PATH [--run-id ID]

Full size on a cluster (the GPU is used when the job's node has one)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . \\
        --entrypoint-num-gpus 1 -- \\
        python -m jobs.evaluate jobs/configs/reference.yaml --checkpoint PATH --run-id ID

Rescore existing manifests without a model (``eval.output_dir`` or ``<cache>/eval``)::

    python -m jobs.evaluate jobs/configs/eval_tiny.yaml --score-only

Any config value can be overridden: ``key.sub=value`` (e.g. ``eval.max_examples=50``), written
before the ``--flags``.
"""

from __future__ import annotations

import sys

from jobs._cli import parse
from steermoe import tracking
from steermoe.evaluate import evaluate_checkpoint, format_table, resolve_output_dir, score_only

FLAGS = [
    (
        "--checkpoint",
        {"help": "checkpoint folder or embedded:<name> (not needed with --score-only)"},
    ),
    ("--run-id", {"help": "MLflow run to log metrics, manifests and samples to"}),
    ("--score-only", {"action": "store_true", "help": "rescore manifests; no model is run"}),
]


def main(argv: list[str] | None = None) -> int:
    config, args = parse(__doc__, argv, flags=FLAGS)
    uri = tracking.tracking_uri(config)
    out = resolve_output_dir(config)
    if args.score_only:
        results = score_only(out, run_id=args.run_id, tracking_uri=uri)
    elif args.checkpoint:
        results = evaluate_checkpoint(
            args.checkpoint, config, output_dir=out, run_id=args.run_id, tracking_uri=uri
        )
    else:
        print("error: --checkpoint PATH is required (or --score-only)", file=sys.stderr)
        return 2
    print(format_table(results))
    print(f"manifests: {out}")
    if args.run_id:
        print(f"MLflow run: {args.run_id} in {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
