"""Training and validation data for one worker: examples, sampler, audio, collated batches."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steermoe import env
from steermoe.config import Config, DataConfig
from steermoe.data.audio import AudioError, load_audio
from steermoe.data.examples import Example
from steermoe.data.sampler import LengthBucketSampler
from steermoe.data.sources import DataError, load_examples

log = logging.getLogger(__name__)


def data_root(data: DataConfig) -> Path:
    """The folder relative sources are resolved against: a build name under
    ``<cache>/data/`` or an explicit path."""
    if "/" in data.root or data.root.startswith((".", "~")):
        return Path(data.root).expanduser()
    return env.cache_dir() / "data" / data.root


def load_split(config: Config, split: str, *, max_s: float | None = None) -> list[Example]:
    """Every example of ``data.train`` or ``data.validation``, bad ones skipped and counted.

    Args:
        max_s: tighter length limit than ``data.max_audio_s`` (e.g. the encoder's window).
    """
    d = config.data
    limit = min(d.max_audio_s, max_s) if max_s else d.max_audio_s
    specs = d.train if split == "train" else d.validation
    root = data_root(d)
    out: list[Example] = []
    for spec in specs:
        try:
            examples, report = load_examples(
                spec,
                root=root,
                tasks=d.tasks,
                strict=d.strict,
                min_s=d.min_audio_s,
                max_s=limit,
            )
        except FileNotFoundError as exc:
            raise DataError(
                f"data.{split}: {spec!r} not found under {root} ({exc}); "
                f"build the data first: python -m jobs.build_data jobs/configs/data_tiny.yaml"
            ) from None
        log.info(report.summary())
        out.extend(examples)
    if split == "train" and d.max_train_examples:
        out = out[: d.max_train_examples]
    if not out:
        raise DataError(f"data.{split}: no usable examples in {list(specs)} (root {root})")
    return out


@dataclass
class Loaded:
    """A batch of examples whose audio decoded; ``skipped`` lists (id, reason) of the rest."""

    examples: list[Example]
    audios: list[np.ndarray]
    skipped: list[tuple[str, str]]


def load_batch(examples: list[Example], data: DataConfig, max_s: float | None = None) -> Loaded:
    """Decode the audio of a batch; a bad clip is skipped (or raises when ``data.strict``)."""
    kept, audios, skipped = [], [], []
    for ex in examples:
        try:
            audios.append(
                load_audio(
                    ex.audio_path,
                    example_id=ex.id,
                    min_s=data.min_audio_s,
                    max_s=min(data.max_audio_s, max_s) if max_s else data.max_audio_s,
                )
            )
            kept.append(ex)
        except AudioError as exc:
            if data.strict:
                raise DataError(str(exc)) from None
            log.warning("skipping %s", exc)
            skipped.append((ex.id, exc.reason))
    return Loaded(kept, audios, skipped)


class TrainStream:
    """Endless, resumable stream of this rank's training batches (epoch after epoch)."""

    def __init__(
        self,
        examples: list[Example],
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        data: DataConfig,
    ) -> None:
        self.examples = examples
        self.data = data
        self.sampler = LengthBucketSampler(
            [ex.duration_s for ex in examples],
            batch_size,
            rank=rank,
            world_size=world_size,
            seed=seed,
        )
        self.skipped = 0

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def __iter__(self) -> Iterator[Loaded]:
        while True:
            for indices in self.sampler:
                loaded = load_batch([self.examples[i] for i in indices], self.data)
                self.skipped += len(loaded.skipped)
                if loaded.examples:
                    yield loaded
            self.sampler.set_epoch(self.sampler.epoch + 1)


def instruction(ex: Example, default: str) -> str:
    """The example's instruction, or the model's default (ASR) one."""
    return ex.instruction or default


def teacher_forced_batch(model, loaded: Loaded, default_instruction: str, device):
    """Collate a loaded batch with instructions and targets (training and validation)."""
    return model.collate(
        loaded.audios,
        [instruction(ex, default_instruction) for ex in loaded.examples],
        [ex.target for ex in loaded.examples],
        ids=[ex.id for ex in loaded.examples],
    ).to(device)
