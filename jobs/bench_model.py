"""Benchmark the model core, each figure a ratio of two sides measured alternately in one run.

(a) steered encoder / frozen encoder time (target <= 1.10); (b) real-length encoding vs the
stock encoder padded to 30 s, 5 s clips (target >= 3x faster); (c) batched greedy generation
(batch 8) vs a per-example loop, tokens/s with the stop tokens suppressed so that every
example decodes exactly ``--max-new-tokens`` (target >= 3x); (d) trainable parameter counts
for Whisper base + SmolLM2-135M and for Whisper-large-v3 + Qwen2.5-7B shapes, N = 2, 4, 8;
(e) greedy decoding held to the tool-call grammar vs free, a batch of tool prompts, the same
number of decode steps on both sides.

CPU, Whisper base + SmolLM2-135M (about two minutes on 2 cores)::

    python -m jobs.bench_model

Tiny random backbones (seconds), or more repeats::

    python -m jobs.bench_model --backbone tiny
    python -m jobs.bench_model --repeats 10

On a node with a GPU the same command runs on ``cuda:0`` in bf16 (prepare the backbones
there first: ``python -m jobs.prepare_backbones``).
"""

from __future__ import annotations

import argparse
import sys

from steermoe import env
from steermoe.bench.model import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", choices=["auto", "real", "tiny"], default="auto")
    parser.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clip-s", type=float, default=5.0)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    env.apply_defaults()
    run(**vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
