"""How well checkpoints hear: validation loss and audio gain per task, clean and through a
channel. No decoding: cheap enough to rank a run's checkpoints on a large validation slice,
and it shows which recordings a model has not learned to hear.

    python -m jobs.probe jobs/configs/reference_c.yaml data.max_validation_examples=120 \\
        --checkpoint embedded:reference-b --checkpoint embedded:reference-c \\
        --conditions clean,band-4k,room-0.4s

``--checkpoint`` takes a checkpoint folder (a run's ``checkpoint_step*/model``), or
``embedded:<name>``, and may be given several times. Conditions (``--conditions list``
prints them): clean, band-4k, band-3.4k, room-0.4s, room-0.8s, noise-10db. The audio gain is
the loss with each clip's audio swapped for another clip's of its batch, minus the loss with
its own audio (nats per token): it grows as the model listens.
"""

from __future__ import annotations

import sys

from jobs._cli import parse
from steermoe.probe import CONDITIONS, check_conditions, format_rows, probe_checkpoint

FLAGS = [
    ("--checkpoint", {"action": "append", "help": "checkpoint folder or embedded:<name>"}),
    ("--conditions", {"default": "clean", "help": "comma-separated conditions, or 'list'"}),
]


def main(argv: list[str] | None = None) -> int:
    config, args = parse(__doc__, argv, flags=FLAGS)
    if args.conditions == "list":
        for name, (what, _) in CONDITIONS.items():
            print(f"{name:12s} {what}")
        return 0
    try:
        conditions = check_conditions([c.strip() for c in args.conditions.split(",") if c.strip()])
    except ValueError as exc:
        print(f"error: --conditions: {exc}", file=sys.stderr)
        return 2
    if not args.checkpoint:
        print("error: give at least one --checkpoint", file=sys.stderr)
        return 2
    rows = []
    for checkpoint in args.checkpoint:
        rows += probe_checkpoint(
            checkpoint,
            config,
            conditions,
            progress=lambda line: print(f"[probe] {line}", flush=True),
        )
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
