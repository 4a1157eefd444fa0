"""Train one SteerMoE model with Ray Train + DeepSpeed, tracked in MLflow.

Tiny CPU twin (about a minute)::

    python -m jobs.build_data jobs/configs/data_tiny.yaml
    python -m jobs.train jobs/configs/train_tiny.yaml

Reference run (Whisper base + SmolLM2-135M, frozen) and on a cluster::

    python -m jobs.train jobs/configs/reference.yaml
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.train jobs/configs/train_large.yaml train.num_workers=8

Any config value can be overridden: ``key.sub=value``.

Running the same command again continues the run from its last checkpoint (optimizer,
scheduler, sampler and curriculum position); raise ``train.max_steps`` to train further.
A run state saved with ``python -m jobs.ship_checkpoint`` continues on another machine with
``train.resume_from=<folder>/resume``.
"""

from __future__ import annotations

import sys

from jobs._cli import parse
from steermoe.train.run import run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config, _ = parse(__doc__, argv)
    result = run(config)
    step = int(result.metrics.get("step", config.train.max_steps))
    more = [a for a in argv if not a.startswith("train.max_steps=")]
    print(f"MLflow run: {result.run_id}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"config:     {result.config_path}")
    print(
        f"continue:   python -m jobs.train {' '.join(more)} train.max_steps={2 * step}"
        f"   (resumes at step {step})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
