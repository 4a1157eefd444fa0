"""The one task table: which manifest fields feed which scorer, and how its metric ranks.

``TASKS`` maps a task name (an example's and a manifest row's ``task``: ``"asr"``, ``"aqa"``
or ``"fc"``) to a :class:`Task`. Evaluation (:func:`evaluators.manifest.score_manifest` and
the per-example verdicts it writes), the training loop's quick validation scores and a
sweep's ``mode`` (:func:`mode_for`) all read it.

A row is a manifest record (``evaluators.manifest``): ``prediction``, ``reference``,
``language`` and the task's own fields (``kind``, ``choices`` for aqa; ``expected_calls``,
``tools``, ``category`` for fc).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from evaluators import asr, audio_qa, function_calling

log = logging.getLogger(__name__)

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Task:
    """How one task is scored."""

    # Module with ``score(predictions, references, **opts)``, ``PRIMARY``, ``HIGHER_IS_BETTER``.
    scorer: ModuleType
    # Row field passed to ``score`` as the references.
    references: str
    # Name of ``PRIMARY`` in training's quick validation metrics.
    val_metric: str
    # Per-example verdict fields of one row, written into the manifest next to it.
    verdict: Callable[[Row], dict[str, Any]]
    # ``score`` keyword -> row field, a list of one value per row.
    per_row: Mapping[str, str] = field(default_factory=dict)
    # Row fields a row may leave out, with the value that stands in.
    optional: Mapping[str, Any] = field(default_factory=dict)
    # ``score`` keywords given once when every row has the same value (unless passed).
    shared: tuple[str, ...] = ()
    # Metrics ``HIGHER_IS_BETTER`` speaks for: ``PRIMARY`` and what ranks instead of it.
    ranked: tuple[str, ...] = ()

    def fields(self) -> tuple[str, ...]:
        """The row fields this task reads besides ``prediction``, ``reference``, ``language``."""
        return tuple(f for f in (self.references, *self.per_row.values()) if f != "reference")

    def score(self, rows: Sequence[Row], **options: Any) -> dict[str, Any]:
        """The scorer's metrics of ``rows``; ``options`` go to ``score`` as they are.

        Raises:
            ValueError: a row lacks a field the scorer needs, or the scorer cannot score.
        """
        for key in self.shared:
            values = {row[key] for row in rows if key in row}
            if len(values) == 1 and key not in options:
                options[key] = values.pop()
        per_row = {
            key: [_get(row, f, self.optional) for row in rows] for key, f in self.per_row.items()
        }
        return self.scorer.score(
            [row["prediction"] for row in rows],
            [_get(row, self.references, self.optional) for row in rows],
            **per_row,
            **options,
        )


def _get(row: Row, name: str, optional: Mapping[str, Any]) -> Any:
    if name in optional:
        value = row.get(name)
        return optional[name] if value is None else value
    if name not in row:
        raise ValueError(f"row {row.get('id', '?')!r}: missing field {name!r}")
    return row[name]


def _asr_verdict(row: Row) -> dict[str, Any]:
    try:
        language = row.get("language") or "en"
        wer = asr.score([row["prediction"]], [row["reference"]], language=language)["wer"]
    except ValueError:  # empty reference after normalisation: dropped when scoring
        wer = None
    return {"wer": wer}


def _aqa_verdict(row: Row) -> dict[str, Any]:
    kind, choices = row.get("kind") or "open", row.get("choices")
    try:
        correct = audio_qa.judge(row["prediction"], row["reference"], kind, choices)["match_any"]
    except ValueError as exc:
        log.warning("example %r: cannot judge: %s", row.get("id"), exc)
        correct = None
    return {"kind": kind, "choices": choices, "correct": correct}


def _fc_verdict(row: Row) -> dict[str, Any]:
    expected, tools = row.get("expected_calls") or [], row.get("tools") or []
    category = row.get("category") or function_calling.infer_category(expected, tools)
    fields = {"expected_calls": expected, "tools": tools, "category": category}
    try:
        checked = function_calling.check(row["prediction"], expected, tools)
    except ValueError as exc:  # answer key names a function without a schema
        checked = {"valid": False, "error": [str(exc)], "error_type": "answer_key_error"}
    return {**fields, **checked}


TASKS: dict[str, Task] = {
    "asr": Task(
        scorer=asr,
        references="reference",
        val_metric="val_wer",
        verdict=_asr_verdict,
        shared=("language",),
        ranked=("wer", "cer", "wer_raw"),
    ),
    "aqa": Task(
        scorer=audio_qa,
        references="reference",
        val_metric="val_aqa_accuracy",
        verdict=_aqa_verdict,
        per_row={"kind": "kind", "choices": "choices"},
        optional={"kind": "open", "choices": None},
        ranked=("accuracy",),
    ),
    "fc": Task(
        scorer=function_calling,
        references="expected_calls",
        val_metric="val_fc_accuracy",
        verdict=_fc_verdict,
        per_row={"tools_list": "tools", "categories": "category"},
        optional={"expected_calls": [], "tools": [], "category": None},
        ranked=("accuracy",),
    ),
}


def mode_for(metric: str) -> Literal["min", "max"] | None:
    """Tune's ``mode`` for a metric name, from its scorer's ``HIGHER_IS_BETTER``.

    Knows each task's validation metric (``val_wer`` -> ``"min"``, ``val_fc_accuracy`` ->
    ``"max"``) and evaluation metrics by their last dotted part
    (``librivox.wer`` -> ``"min"``, ``mixed.aqa.accuracy`` -> ``"max"``).

    Returns:
        ``"max"`` or ``"min"``, or ``None`` for a metric no scorer ranks (a loss, a count).
    """
    name = metric.rsplit(".", 1)[-1]
    for task in TASKS.values():
        if metric == task.val_metric or name in task.ranked:
            return "max" if task.scorer.HIGHER_IS_BETTER else "min"
    return None
