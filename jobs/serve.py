"""Deploy a SteerMoE model behind the OpenAI-compatible Ray Serve API and print its URL.

Tiny CPU twin (random-initialised checkpoint, local Ray on 127.0.0.1; Ctrl-C stops it)::

    python -m jobs.serve jobs/configs/serve_tiny.yaml --init-random

The sweep's winner from the MLflow registry, on a cluster (returns once deployed)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.serve jobs/configs/sweep.yaml serve.model=models:/steermoe@champion \\
        serve.gpus_per_replica=1 serve.max_replicas=4 --no-block

A bearer API key is required when ``$STEERMOE_API_KEY`` (``serve.api_key_env``) is set where
this job runs; only its SHA-256 reaches the cluster.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from jobs._cli import parse

FLAGS = (
    ("--no-block", {"action": "store_true", "help": "return once deployed (ray job submit)"}),
    (
        "--init-random",
        {
            "action": "store_true",
            "help": "write a random-initialised checkpoint of `model` at serve.model if missing",
        },
    ),
)


def main(argv: list[str] | None = None) -> int:
    config, flags = parse(__doc__, argv, flags=FLAGS)
    import ray
    from ray import serve

    from steermoe.serve.deploy import connect_ray, deploy, usage
    from steermoe.tracking import tracking_uri

    if flags.init_random and not Path(config.serve.model).exists():
        from steermoe.model import build_model, save_checkpoint

        save_checkpoint(build_model(config.model), config.model, config.serve.model)
        print(f"wrote a random-initialised checkpoint: {config.serve.model}")
    owns_cluster = connect_ray()
    url = deploy(config, tracking_uri=tracking_uri(config))
    print(usage(url, config), flush=True)
    if flags.no_block:
        if owns_cluster:
            print("--no-block with a local cluster: it stops when this process exits")
        return 0
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, `kill`, `ray job stop`
        signal.signal(sig, _interrupt)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("shutting down")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
