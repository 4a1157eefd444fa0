"""Compare two evaluations of the same test sets, example by example (no model is run).

Evaluate each checkpoint into its own folder, then compare the folders::

    python -m jobs.evaluate jobs/configs/reference.yaml --checkpoint A eval.output_dir=eval-a
    python -m jobs.evaluate jobs/configs/reference.yaml --checkpoint B eval.output_dir=eval-b
    python -m jobs.compare_evals eval-a eval-b

For every dataset both folders hold a manifest of, it prints each side's primary metric,
the difference B - A with its 95 % paired-bootstrap interval, on how many examples each side
does better, and a verdict (``within noise`` when the interval holds 0). Exit status 0, or 2
when a folder is missing or the two share no dataset.
"""

from __future__ import annotations

import argparse
import sys

from steermoe.compare_evals import compare_folders, format_comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="evaluation folder A (manifests written by jobs.evaluate)")
    parser.add_argument("b", help="evaluation folder B")
    parser.add_argument(
        "--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = parser.parse_args(argv)
    try:
        results = compare_folders(args.a, args.b, resamples=args.resamples, seed=args.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"A = {args.a}\nB = {args.b}")
    print(format_comparison(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
