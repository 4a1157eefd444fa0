"""Shared argument parsing of the jobs: ``<config.yaml> [key=value ...] [--flags]``."""

from __future__ import annotations

import argparse
import sys

from steermoe import env
from steermoe.config import Config, ConfigError, load_config


def parse(
    doc: str | None, argv: list[str] | None = None, *, flags=()
) -> tuple[Config, argparse.Namespace]:
    """Parse a job's command line into a validated config (exits 2 with the bad key named).

    Args:
        doc: the job's docstring (shown by ``--help``).
        argv: arguments (default ``sys.argv[1:]``).
        flags: extra ``(name, kwargs)`` pairs for ``argparse.add_argument``.
    """
    env.apply_defaults()
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="YAML config (see jobs/configs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    for name, kwargs in flags:
        parser.add_argument(name, **kwargs)
    args = parser.parse_intermixed_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return config, args
