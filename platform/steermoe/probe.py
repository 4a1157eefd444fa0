"""How well a checkpoint hears: teacher-forced validation loss and audio gain per task, on the
clean validation clips and on the same clips through a channel (band limit, room, noise).

No decoding, so it is cheap enough to rank checkpoints on a larger slice than the training
loop validates on (120 clips take about two minutes per checkpoint on two CPU cores), and
it shows which kind of recording a model has not learned to hear: the training suites are
clean full-band synthetic speech, the real test sets are not (FSDD is recorded at 8 kHz,
LibriVox in rooms).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steermoe.config import Config
from steermoe.data.augment import add_noise, low_pass, reverberate

# name -> (what it simulates, transform(audio, rng) -> audio)
CONDITIONS: dict[str, tuple[str, Callable | None]] = {
    "clean": ("the validation clips as rendered", None),
    "band-4k": (
        "an 8 kHz recording (nothing above 4 kHz), as FSDD",
        lambda a, r: low_pass(a, 4000.0),
    ),
    "band-3.4k": ("a telephone channel (300-3400 Hz top)", lambda a, r: low_pass(a, 3400.0)),
    "room-0.4s": ("a furnished room (RT60 0.4 s)", lambda a, r: reverberate(a, 0.4, r)),
    "room-0.8s": ("a bare room (RT60 0.8 s)", lambda a, r: reverberate(a, 0.8, r)),
    "noise-10db": ("background noise at 10 dB SNR", lambda a, r: add_noise(a, 10.0, r)),
}


@dataclass(frozen=True)
class ProbeRow:
    """Token-weighted scores of one task (or ``all``) under one condition."""

    checkpoint: str
    condition: str
    task: str
    loss: float
    gain: float
    tokens: int


def check_conditions(names: Sequence[str]) -> list[str]:
    """``names`` if every one is a known condition.

    Raises:
        ValueError: naming the unknown ones and the known.
    """
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    return list(names)


def validation_examples(config: Config) -> list:
    """The validation slice the training loop uses, at ``data.max_validation_examples``."""
    from steermoe.data.batches import load_split
    from steermoe.train.loop import validation_slice

    return validation_slice(load_split(config, "validation"), config.data.max_validation_examples)


def probe_checkpoint(
    checkpoint: str | Path,
    config: Config,
    conditions: Sequence[str] = ("clean",),
    *,
    examples: list | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[ProbeRow]:
    """Score ``checkpoint`` on the validation slice of ``config`` under each condition.

    Batches are cut the same way for every condition (task by task, in slice order), so the
    audio gain swaps the same pairs of clips; a condition's noise and rooms come from
    ``(seed, example index)`` and are the same for every checkpoint probed.
    """
    import torch

    from steermoe.data.batches import Loaded, load_batch
    from steermoe.evaluate import load_for_inference
    from steermoe.train.loop import scored_batch

    conditions = list(dict.fromkeys(check_conditions(conditions)))  # each scored once
    examples = validation_examples(config) if examples is None else examples
    model, default_instruction = load_for_inference(checkpoint)
    device = next(p.device for _, p in model.trainable_parameters())
    by_task: dict[str, list[tuple[int, object]]] = {}
    for i, ex in enumerate(examples):
        by_task.setdefault(ex.task, []).append((i, ex))
    bs = config.train.batch_size
    # condition -> task -> [loss x tokens, gain x tokens, tokens, tokens of batches with a gain]
    sums: dict[str, dict[str, np.ndarray]] = {c: {} for c in conditions}
    done, started = 0, time.perf_counter()
    for task, indexed in sorted(by_task.items()):
        for start in range(0, len(indexed), bs):
            part = indexed[start : start + bs]
            loaded = load_batch([ex for _, ex in part], config.data, model.max_audio_s)
            if not loaded.examples:
                continue
            index = {ex.id: i for i, ex in part}
            for condition in conditions:
                transform = CONDITIONS[condition][1]
                batch = loaded
                if transform is not None:
                    audios = [
                        np.asarray(
                            transform(a, np.random.default_rng([seed, index[ex.id]])), np.float32
                        )
                        for a, ex in zip(loaded.audios, loaded.examples)
                    ]
                    batch = Loaded(loaded.examples, audios, loaded.skipped)
                with torch.no_grad():
                    _, s = scored_batch(model, batch, default_instruction, device)
                counted = s.tokens if s.gain is not None else 0
                add = [s.loss * s.tokens, (s.gain or 0.0) * counted, s.tokens, counted]
                per_task = sums[condition]
                per_task[task] = per_task.get(task, np.zeros(4)) + np.array(add)
            done += len(part)
            if progress:
                progress(
                    f"{checkpoint}: {done}/{len(examples)} clips ({task}) scored under "
                    f"{len(conditions)} condition(s), {time.perf_counter() - started:.0f} s"
                )
    rows: list[ProbeRow] = []
    for condition in conditions:
        per_task = sums[condition]
        if per_task:
            per_task["all"] = sum(per_task.values())
        for task, (loss, gain, tokens, counted) in per_task.items():
            rows.append(
                ProbeRow(
                    str(checkpoint),
                    condition,
                    task,
                    loss / tokens,
                    gain / max(counted, 1),
                    int(tokens),
                )
            )
        if progress and per_task:
            r = rows[-1]
            progress(f"{checkpoint} {condition}: loss {r.loss:.3f} gain {r.gain:.3f}")
    return rows


def format_rows(rows: list[ProbeRow]) -> str:
    """A table: checkpoint, condition, then loss / gain per task, and the loss change against
    the same checkpoint's clean clips where those were probed."""
    tasks = [*sorted({r.task for r in rows} - {"all"}), "all"]
    clean = {(r.checkpoint, r.task): r.loss for r in rows if r.condition == "clean"}
    header = ["checkpoint", "condition", *[f"{t} loss/gain" for t in tasks], "all vs clean"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    keys = list(dict.fromkeys((r.checkpoint, r.condition) for r in rows))
    index = {(r.checkpoint, r.condition, r.task): r for r in rows}
    for checkpoint, condition in keys:
        cells = [checkpoint, condition]
        for task in tasks:
            r = index.get((checkpoint, condition, task))
            cells.append(f"{r.loss:.3f} / {r.gain:.3f}" if r else "-")
        base = clean.get((checkpoint, "all"))
        r = index.get((checkpoint, condition, "all"))
        cells.append(f"{r.loss - base:+.3f}" if r and base is not None else "-")
        lines.append(" | ".join(cells))
    return "\n".join(lines)
