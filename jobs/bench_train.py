"""Benchmark training: the platform's path against a bare PyTorch loop, and GPU throughput.

(a) CPU: step time of the full platform path (Ray Train, 1 worker, DeepSpeed ZeRO-2 around the
real ``train_fn_per_worker``) over a bare single-process loop (same model config and seed,
same batches from the same manifest, AdamW groups, backward, clip, step), target <= 1.10.
Rounds alternate the two sides; each side warms up for ``--steps`` steps and times the next
``--steps`` (the platform's own ``samples_per_s`` report, train time only, no validation).

(b) GPU: samples/s and peak memory of a plain loop for Whisper-large-v3 + Qwen2.5-7B shapes
with random weights, bf16, 10 s clips, dense 8-expert steering with backprop through the
encoder (anchor 57-59 samples/s on one H100; target >= 80). Skipped on CPU.

Tiny backbones (default, about three minutes on 2 cores), or Whisper base + SmolLM2::

    python -m jobs.bench_train
    python -m jobs.bench_train --backbone real --steps 4 --rounds 2

(c) CPU, ``--recipes``: clips/s of the old and the new reference recipe side by side in one
run, on the real backbones and the reference suites, with the bare loop of (a) (one process;
rounds alternate). Old: 18-token system turn, 1 thread, batches bucketed by audio seconds with
tasks mixed, no CTC head or projector norm, bf16 encoder. New: ``jobs/configs/reference.yaml``
(no system turn, 2 threads, single-task batches bucketed by sequence tokens, compact tool
lists, CTC head, norm,
fp32 encoder). Measured on the mixed ASR+AQA+FC suites (target >= 3x) and, for the new
recipe, on ASR batches alone (target >= 6 clips/s with 2 threads)::

    python -m jobs.build_data jobs/configs/data_reference.yaml
    python -m jobs.bench_train --recipes --steps 12 --rounds 1

GPU node (runs (b) only unless ``--cpu-compare``)::

    python -m jobs.bench_train --gpu-batch 16 --gpu-steps 10

Any ``key=value`` config override is applied to both sides of (a).
"""

from __future__ import annotations

import argparse
import sys

from steermoe import env
from steermoe.bench.train import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides for (a)")
    parser.add_argument("--backbone", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-compare", action="store_true", help="run (a) on a GPU node too")
    parser.add_argument("--gpu-batch", type=int, default=16)
    parser.add_argument("--gpu-steps", type=int, default=10)
    parser.add_argument("--gpu-shapes", choices=["large", "small"], default="large")
    parser.add_argument("--clip-s", type=float, default=10.0)
    parser.add_argument("--target-tokens", type=int, default=32)
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    parser.add_argument("--force-gpu-part", action="store_true", help="run (b) on CPU too")
    parser.add_argument("--recipes", action="store_true", help="run (c) only")
    args = parser.parse_args(argv)
    env.apply_defaults()
    run(**vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
