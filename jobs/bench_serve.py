"""Benchmark serving: dynamic batching on vs off, closed-loop load on loopback, one run.

Deploys the config's model twice on one Serve instance (``/batched`` with
``serve.max_batch_size``, ``/unbatched`` with 1), then a second process sends real LibriVox
clips (cut to the model's audio limit) at concurrency 1, 8 and 32 and prints requests/s,
p50/p95/p99 latency, RTFx, the mean batch size, throughput ratios and the batch-1 decode
latency in ms/token; a ``sampled`` row repeats the batched one with sampling on
(``--temperature``, ``--top-p``, a seed per request; ``--temperature 0`` drops it). Tiny CPU
twin (about three minutes on 2 cores)::

    python -m jobs.bench_serve jobs/configs/serve_tiny.yaml --init-random

A real checkpoint on a GPU node::

    python -m jobs.bench_serve jobs/configs/sweep.yaml serve.model=models:/steermoe@champion \\
        serve.gpus_per_replica=0.5 serve.max_batch_size=32 --max-tokens 32
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jobs._cli import parse

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
FLAGS = (
    ("--concurrency", {"type": int, "nargs": "+", "default": [1, 8, 32]}),
    ("--requests", {"type": int, "default": 64, "help": "requests per concurrency level"}),
    ("--max-tokens", {"type": int, "default": 16, "help": "decode budget per request"}),
    ("--temperature", {"type": float, "default": 0.7, "help": "sampled row (0 = none)"}),
    ("--top-p", {"type": float, "default": 0.9, "help": "sampled row's nucleus"}),
    ("--clips", {"nargs": "+", "type": Path, "help": "WAV files (default: LibriVox test clips)"}),
    ("--init-random", {"action": "store_true", "help": "write a random checkpoint if missing"}),
)


def main(argv: list[str] | None = None) -> int:
    config, flags = parse(__doc__, argv, flags=FLAGS)
    import ray
    from ray import serve

    from steermoe.serve.bench import BenchSpec, report, run_benchmark
    from steermoe.serve.deploy import connect_ray, deploy
    from steermoe.tracking import tracking_uri

    clips = tuple(flags.clips or sorted(LIBRIVOX.glob("*.wav")))
    if not clips:
        print("no clips: install pocketsphinx-testdata or pass --clips", file=sys.stderr)
        return 2
    if flags.init_random and not Path(config.serve.model).exists():
        from steermoe.model import build_model, save_checkpoint

        save_checkpoint(build_model(config.model), config.model, config.serve.model)
    connect_ray()
    try:
        uri = tracking_uri(config)
        urls = {
            "batched": deploy(
                config, tracking_uri=uri, app_name="bench-batched", route_prefix="/batched"
            ),
            "unbatched": deploy(
                config,
                tracking_uri=uri,
                app_name="bench-unbatched",
                route_prefix="/unbatched",
                max_batch_size=1,
            ),
        }
        spec = BenchSpec(
            clips=clips,
            concurrency=tuple(flags.concurrency),
            requests=flags.requests,
            max_tokens=flags.max_tokens,
            temperature=flags.temperature,
            top_p=flags.top_p,
        )
        bench = run_benchmark(urls, spec, api_key=os.environ.get(config.serve.api_key_env))
        print(
            f"model {config.serve.model}, {bench['clips']} real clips, "
            f"max_batch_size {config.serve.max_batch_size}, max_tokens {flags.max_tokens}"
        )
        print(report(bench))
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
