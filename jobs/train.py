"""Train one SteerMoE model with Ray Train + DeepSpeed, tracked in MLflow.

Tiny CPU twin (about a minute)::

    python -m jobs.build_data jobs/configs/data_tiny.yaml
    python -m jobs.train jobs/configs/train_tiny.yaml

Reference run (Whisper base + SmolLM2-135M, frozen) and on a cluster::

    python -m jobs.train jobs/configs/reference.yaml
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.train jobs/configs/train_large.yaml train.num_workers=8

Any config value can be overridden: ``key.sub=value``.
"""

from __future__ import annotations

import sys

from jobs._cli import parse
from steermoe.train.run import run


def main(argv: list[str] | None = None) -> int:
    config, _ = parse(__doc__, argv)
    result = run(config)
    print(f"MLflow run: {result.run_id}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"config:     {result.config_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
