"""Build the offline synthetic data suites (asr, aqa, fc) with several TTS engines.

Tiny CPU build (a few hundred clips, minutes on 2 cores)::

    PYTHONPATH=platform:. python -m jobs.build_data jobs/configs/data_tiny.yaml

Full build (>= 10k ASR, 3k AQA, 3k FC training clips), e.g. on a Ray cluster node::

    ray job submit --working-dir . -- python -m jobs.build_data \
        jobs/configs/data_default.yaml workers=16

Overrides are ``key.sub=value`` (``asr.counts.train=500 seed=1 out=/data/suites``).
Re-running skips clips that already exist and are valid.
"""

from __future__ import annotations

import sys

from steermoe import env
from steermoe.config import ConfigError
from steermoe.synth.build import build
from steermoe.synth.build_config import load_build_config


def main(argv: list[str]) -> int:
    env.apply_defaults()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        config = load_build_config(argv[0], argv[1:])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    report = build(config)
    print(f"manifests in {report.out}: {report.written}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
