"""Paired comparison of two evaluations of the same test sets.

Two checkpoints evaluated on the same clips (``python -m jobs.evaluate ... eval.output_dir=A``
and ``... =B``) differ by less than their scores' noise more often than not. This compares
them example by example: each dataset both folders hold a manifest of is paired by example
id, and for each task in it

* the primary metric of each side (WER for ASR, digit accuracy for FSDD, accuracy for AQA and
  FC), computed by the same scorers as ``jobs.evaluate``;
* the difference ``B - A`` and its 95 % interval from a paired bootstrap: the shared ids are
  resampled with replacement and both sides rescored on the same draw, so clip difficulty
  cancels out;
* how many examples each side scores better on.

An interval that excludes 0 says the difference is larger than the test set's sampling noise.
It says nothing about training noise (another seed): that needs another run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.manifest import read_manifest
from steermoe.evaluate import manifest_paths, primary_metric, score_records


@dataclass(frozen=True)
class Comparison:
    """One task of one dataset, A against B."""

    dataset: str
    task: str
    metric: str
    higher_is_better: bool
    a: float
    b: float
    low: float  # 95 % bootstrap interval of b - a
    high: float
    a_better: int  # examples on which A scores better
    b_better: int
    paired: int  # examples in both manifests
    unpaired: int  # examples in only one of them (left out)

    @property
    def difference(self) -> float:
        return self.b - self.a

    @property
    def verdict(self) -> str:
        """``B better``, ``A better`` or ``within noise`` (the interval holds 0)."""
        if self.low <= 0 <= self.high:
            return "within noise"
        b_up = self.low > 0
        return "B better" if b_up == self.higher_is_better else "A better"


def compare_folders(
    a: str | Path, b: str | Path, *, resamples: int = 1000, seed: int = 0
) -> list[Comparison]:
    """Compare every dataset that both evaluation folders hold a manifest of.

    Raises:
        FileNotFoundError: a folder is missing, or the two share no manifest.
        ValueError: a shared manifest pairs no example id, or ``resamples`` < 1.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    folders = [Path(a), Path(b)]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"evaluation folder not found: {folder}")
    stems = [{p.stem for p in manifest_paths(f)} for f in folders]
    shared = sorted(stems[0] & stems[1])
    if not shared:
        raise FileNotFoundError(
            f"{folders[0]} ({', '.join(sorted(stems[0])) or 'no manifests'}) and "
            f"{folders[1]} ({', '.join(sorted(stems[1])) or 'no manifests'}) "
            "share no dataset manifest"
        )
    out = []
    for label in shared:
        rows_a, rows_b = (read_manifest(f / f"{label}.jsonl") for f in folders)
        out.extend(compare_manifests(label, rows_a, rows_b, resamples=resamples, seed=seed))
    return out


def compare_manifests(
    label: str,
    rows_a: Sequence[dict[str, Any]],
    rows_b: Sequence[dict[str, Any]],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Comparison]:
    """Compare two manifests of one dataset, task by task (see the module docstring).

    Raises:
        ValueError: no example id is in both, or an id's task differs between them.
    """
    by_id_a = {r["id"]: r for r in rows_a}
    by_id_b = {r["id"]: r for r in rows_b}
    ids = sorted(by_id_a.keys() & by_id_b.keys())
    if not ids:
        raise ValueError(f"{label}: the two manifests share no example id")
    unpaired = len(by_id_a.keys() ^ by_id_b.keys())
    tasks: dict[str, list[str]] = {}
    for i in ids:
        task_a, task_b = by_id_a[i].get("task", "asr"), by_id_b[i].get("task", "asr")
        if task_a != task_b:
            raise ValueError(f"{label}: example {i} is {task_a!r} in A but {task_b!r} in B")
        tasks.setdefault(task_a, []).append(i)
    rng = random.Random(seed)
    out = []
    for task, task_ids in sorted(tasks.items()):
        language = by_id_a[task_ids[0]].get("language", "en")
        metric, higher = primary_metric(label, task, language)
        side_a = _Side(label, metric, [by_id_a[i] for i in task_ids])
        side_b = _Side(label, metric, [by_id_b[i] for i in task_ids])
        n = len(task_ids)
        diffs = []
        for _ in range(resamples):
            draw = [rng.randrange(n) for _ in range(n)]
            diffs.append(side_b.value(draw) - side_a.value(draw))
        # A draw of only unscorable rows (every reference empty) has no value on either side.
        diffs = sorted(d for d in diffs if not math.isnan(d)) or [math.nan]
        a_better = b_better = 0
        for i in range(n):
            delta = side_b.row_value(i) - side_a.row_value(i)
            if delta:  # rows not scorable alone (an empty reference) count for neither
                b_wins = (delta > 0) == higher
                b_better += b_wins
                a_better += not b_wins
        out.append(
            Comparison(
                dataset=label,
                task=task,
                metric=metric,
                higher_is_better=higher,
                a=side_a.full,
                b=side_b.full,
                low=diffs[int(0.025 * (len(diffs) - 1))],
                high=diffs[round(0.975 * (len(diffs) - 1))],
                a_better=a_better,
                b_better=b_better,
                paired=n,
                unpaired=unpaired,
            )
        )
    return out


class _Side:
    """One side's rows of one task, scored on any resample of them.

    Each row is scored alone once, into a numerator and denominator that add up over rows
    (word errors and reference words for WER; the row's value and 1 for an accuracy). A draw
    is then scored by sums, which is what the scorer computes for these metrics; where the
    sums do not reproduce the scorer's value on all the rows (a metric that is not such a
    ratio), every draw is rescored by the scorer itself instead.
    """

    def __init__(self, label: str, metric: str, rows: list[dict[str, Any]]) -> None:
        self.label, self.metric, self.rows = label, metric, rows
        self.full = float(score_records(rows, label)[metric])
        self.scale = 100.0 if metric == "wer" else 1.0
        self.num, self.den = [], []
        for row in rows:
            try:
                scored = score_records([row], label)
            except ValueError:  # dropped by the scorer too (e.g. an empty reference)
                self.num.append(0.0)
                self.den.append(0.0)
                continue
            if metric == "wer":
                errors = scored["substitutions"] + scored["deletions"] + scored["insertions"]
                self.num.append(float(errors))
                self.den.append(float(scored["reference_words"]))
            else:
                self.num.append(float(scored[metric]))
                self.den.append(1.0)
        everything = range(len(rows))
        self.additive = math.isclose(self._by_sums(everything), self.full, abs_tol=1e-9)

    def value(self, draw: Sequence[int]) -> float:
        """The metric on the rows ``draw`` (indices, repeats allowed)."""
        if self.additive:
            return self._by_sums(draw)
        return float(score_records([self.rows[i] for i in draw], self.label)[self.metric])

    def _by_sums(self, draw: Sequence[int]) -> float:
        den = sum(self.den[i] for i in draw)
        return self.scale * sum(self.num[i] for i in draw) / den if den else math.nan

    def row_value(self, i: int) -> float:
        return self.scale * self.num[i] / self.den[i] if self.den[i] else 0.0


def format_comparison(results: Sequence[Comparison], a: str = "A", b: str = "B") -> str:
    """A plain-text table, one line per dataset and task."""
    header = (
        f"{'dataset':<16}{'task':<6}{'metric':<16}{a:>9}{b:>9}"
        f"{'B - A':>9}  {'95 % interval':<19}{'A/B better on':<15}verdict"
    )
    lines = [header]
    for c in results:
        interval = f"[{c.low:+.3f}, {c.high:+.3f}]"
        wins = f"{c.a_better}/{c.b_better} of {c.paired}"
        lines.append(
            f"{c.dataset:<16}{c.task:<6}{c.metric:<16}{c.a:>9.3f}{c.b:>9.3f}"
            f"{c.difference:>+9.3f}  {interval:<19}{wins:<15}{c.verdict}"
        )
    left_out = {c.dataset: c.unpaired for c in results if c.unpaired}
    for dataset, unpaired in left_out.items():
        lines.append(f"{dataset}: {unpaired} examples in only one manifest were left out")
    return "\n".join(lines)
