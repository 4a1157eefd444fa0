"""Per-example inference manifests (JSONL) and their scoring.

Inference writes one JSON object per example with at least ``id``, ``duration_s``,
``latency_s``, ``reference`` and ``prediction``; any other field (a verdict, ``kind``,
``choices``, ``expected_calls``, ``tools``, ``category``, ``language``) is kept as is.
Scoring reads the manifest and never runs a model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evaluators import asr
from evaluators.tasks import TASKS

REQUIRED_FIELDS = ("id", "duration_s", "latency_s", "reference", "prediction")


def _missing(record: Any, where: str) -> None:
    """Raises ValueError when ``record`` is not an object holding every required field."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise ValueError(f"{where}: missing required field(s) {', '.join(map(repr, missing))}")


def write_manifest(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Writes records as JSONL atomically (a temporary file in the same folder, then rename).

    Args:
        path: Destination file; its folder is created if needed.
        records: One dict per example, each with the required fields.

    Returns:
        The path written.

    Raises:
        ValueError: When a record lacks a required field (nothing is written).
    """
    path = Path(path)
    lines = []
    for index, record in enumerate(records):
        _missing(record, f"record {index}")
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a JSONL manifest, skipping blank lines.

    Raises:
        ValueError: On invalid JSON or a missing required field, naming the line number.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {err}") from err
            _missing(record, f"{path}:{lineno}")
            records.append(record)
    return records


def score_manifest(
    source: str | os.PathLike | Sequence[dict[str, Any]], task: str, **options: Any
) -> dict[str, Any]:
    """Scores a manifest with the evaluator for ``task`` (see :data:`evaluators.tasks.TASKS`).

    Args:
        source: A manifest path, or the records themselves.
        task: ``"asr"``, ``"aqa"`` or ``"fc"``.
        **options: Passed to the evaluator; for ASR ``language`` defaults to the records'
            ``language`` field when they all share one, else ``"en"``.

    Returns:
        The evaluator's metrics; for ASR also ``rtfx`` from durations and latencies.

    Raises:
        ValueError: On an unknown task or a malformed record.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if isinstance(source, (str, os.PathLike)):
        records = read_manifest(source)
    else:
        records = list(source)
        for index, record in enumerate(records):
            _missing(record, f"record {index}")
    result = TASKS[task].score(records, **options)
    if task == "asr":
        result["rtfx"] = asr.rtfx(
            [r["duration_s"] for r in records], [r["latency_s"] for r in records]
        )
    return result
