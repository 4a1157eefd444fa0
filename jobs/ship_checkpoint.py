"""Copy a training run's newest checkpoint into a folder, ready to ship or to continue.

The folder gets the trainable-only checkpoint (``steermoe.json`` + ``trainable.safetensors``)
and ``resume/``, the full run state, so that ``train.resume_from=<folder>/resume`` (or
``embedded:<name>`` for a shipped one) continues the run on another machine::

    python -m jobs.ship_checkpoint jobs/configs/reference.yaml \\
        --to platform/steermoe/checkpoints/reference

``--step N`` ships the kept checkpoint of step N instead; ``--best`` the kept checkpoint with
the best ``train.keep_metric`` (``val_loss`` when unset). With ``train.keep_metric`` set, a run
keeps its best checkpoints (and its newest), not only the newest ones.
"""

from __future__ import annotations

import sys

from jobs._cli import parse
from steermoe.train.run import ship


def main(argv: list[str] | None = None) -> int:
    config, args = parse(
        __doc__,
        argv,
        flags=[
            ("--to", {"required": True}),
            ("--step", {"type": int, "help": "ship this step's checkpoint (default: newest)"}),
            ("--best", {"action": "store_true", "help": "ship the best kept checkpoint"}),
        ],
    )
    if args.best and args.step is not None:
        print("ship_checkpoint: give --step or --best, not both", file=sys.stderr)
        return 2
    source, metrics = ship(config, args.to, step=args.step, best=args.best)
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")}
    print(f"shipped {source.name} (step {metrics.get('step')}) to {args.to}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
