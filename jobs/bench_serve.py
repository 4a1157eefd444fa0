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

import sys
from pathlib import Path

from jobs._cli import parse
from steermoe.bench.serve import BenchSpec, default_clips, deploy_and_measure, report

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
    clips = tuple(flags.clips or default_clips())
    if not clips:
        print("no clips: install pocketsphinx-testdata or pass --clips", file=sys.stderr)
        return 2
    spec = BenchSpec(
        clips=clips,
        concurrency=tuple(flags.concurrency),
        requests=flags.requests,
        max_tokens=flags.max_tokens,
        temperature=flags.temperature,
        top_p=flags.top_p,
    )
    bench = deploy_and_measure(config, spec, init_random=flags.init_random)
    print(
        f"model {config.serve.model}, {bench['clips']} real clips, "
        f"max_batch_size {config.serve.max_batch_size}, max_tokens {flags.max_tokens}"
    )
    print(report(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
