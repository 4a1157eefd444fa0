"""Watch a run's progress in an MLflow SQLite store from a test, without touching the store.

A poller must never open the store through MLflow while the job under test is still creating
it: MLflow would run the schema migrations a second time, concurrently, and the job's own
migration fails ("table datasets already exists"). The file is read directly, read-only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from steermoe.tracking import REPORT_MARKER

_STEPS = (
    "SELECT m.step FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
    "WHERE r.name = ? AND m.key = ?"
)


def reported_steps(db: Path, run_name: str) -> list[int]:
    """Steps of the reports MLflow holds for run ``run_name`` ([] while the store is new)."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            rows = con.execute(_STEPS, (run_name, REPORT_MARKER)).fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # no tables yet, or locked by a writer: try again later
        return []
    return sorted(int(step) for (step,) in rows)
