"""The whole workflow on one machine: data -> Ray cluster -> sweep job -> registry -> Serve.

``make demo`` runs this after preparing the offline backbones::

    python -m jobs.demo [jobs/configs/demo.yaml] [key=value ...]

Stages (each prints progress; a failure names the stage and where its logs are):
build the tiny synthetic suites; start a local Ray head on 127.0.0.1 (token auth on);
``ray job submit`` the sweep (num_experts x top_k on Whisper base + SmolLM2), which evaluates
and registers the champion in MLflow (SQLite); ``ray job submit`` the Serve deployment of
``models:/steermoe-demo@champion``; send real requests through the official ``openai``
client; print a summary table; stop the cluster (``DEMO_KEEP_SERVING=1`` leaves it serving).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from jobs._cli import parse
from steermoe.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        argv.insert(0, str(ROOT / "jobs" / "configs" / "demo.yaml"))
    config, args = parse(__doc__, argv)
    return run_demo(config, args.config, args.overrides, root=ROOT)


if __name__ == "__main__":
    if shutil.which("apt-get") is None and not Path("/usr/bin/espeak-ng").exists():
        print("warning: espeak-ng not found; the data build will use fewer voices")
    sys.exit(main())
