"""Training and validation data for one worker: examples, sampler, audio, collated batches."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steermoe import env
from steermoe.config import Config, CurriculumStage, DataConfig
from steermoe.data.audio import AudioError, load_audio
from steermoe.data.augment import augment_batch
from steermoe.data.examples import Example
from steermoe.data.sampler import LengthBucketSampler
from steermoe.data.sources import DataError, load_examples
from steermoe.data.tools import compact_instruction

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
            examples, _ = load_examples(
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
        out.extend(examples)  # load_examples has logged its summary line
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


@dataclass(frozen=True)
class Stage:
    """One curriculum stage as the stream runs it: indices into the training examples."""

    index: int
    first_step: int
    # Steps in this stage; None = open-ended (the last stage).
    steps: int | None
    members: list[int]


class TrainStream:
    """Endless, resumable stream of this rank's training batches, curriculum stage by stage.

    Each stage gets its own :class:`LengthBucketSampler` over the examples it admits (its
    tasks and clip length); batches are bucketed by ``lengths`` (estimated sequence tokens
    when given, else seconds) and, with ``task_batches``, never mix tasks. With
    ``data.augment`` each batch's clips are redrawn from the batch number (see
    :mod:`steermoe.data.augment`). The position (stage, batches consumed, sampler epoch and
    index) is in :meth:`state_dict`.
    """

    def __init__(
        self,
        examples: list[Example],
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        data: DataConfig,
        lengths: list[float] | None = None,
        curriculum: tuple[CurriculumStage, ...] = (),
        task_batches: bool = True,
        grad_accum: int = 1,
    ) -> None:
        self.examples = examples
        self.data = data
        self.lengths = lengths if lengths is not None else [ex.duration_s for ex in examples]
        self.task_batches = task_batches
        self.grad_accum = grad_accum
        self._sampler_args = {
            "batch_size": batch_size,
            "rank": rank,
            "world_size": world_size,
            "seed": seed,
        }
        self.stages = plan_stages(examples, curriculum)
        self.batches_done = 0
        self.stage = self.stages[0]
        self.sampler = self._sampler(self.stage)
        self._batches: Iterator[list[int]] | None = None
        self.skipped = 0

    def _sampler(self, stage: Stage) -> LengthBucketSampler:
        return LengthBucketSampler(
            [self.lengths[i] for i in stage.members],
            groups=[self.examples[i].task for i in stage.members] if self.task_batches else None,
            **self._sampler_args,
        )

    def stage_for(self, step: int) -> Stage:
        """The stage that optimizer step ``step`` (0-based) trains in."""
        for stage in self.stages:
            if stage.steps is None or step < stage.first_step + stage.steps:
                return stage
        return self.stages[-1]

    def state_dict(self) -> dict:
        return {
            "stage": self.stage.index,
            "batches_done": self.batches_done,
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue at the saved stage and batch.

        Raises:
            ValueError: the state names a stage this curriculum does not have, or its sampler
                order differs (other data, batch size, seed or world size).
        """
        index = int(state.get("stage", 0))
        if not 0 <= index < len(self.stages):
            raise ValueError(
                f"sampler state is in curriculum stage {index}, this run has "
                f"{len(self.stages)} stage(s)"
            )
        self.stage = self.stages[index]
        self.sampler = self._sampler(self.stage)
        self.sampler.load_state_dict(state["sampler"])
        self._batches = None
        self.batches_done = int(state.get("batches_done", 0))

    def __iter__(self) -> Iterator[Loaded]:
        while True:
            stage = self.stage_for(self.batches_done // self.grad_accum)
            if stage.index != self.stage.index:
                self.stage, self.sampler, self._batches = stage, self._sampler(stage), None
                print(f"[train] curriculum stage {stage.index} from step {stage.first_step}")
            if self._batches is None:
                self._batches = iter(self.sampler)
            indices = next(self._batches, None)
            if indices is None:  # the epoch is over
                self.sampler.set_epoch(self.sampler.epoch + 1)
                self._batches = None
                continue
            members = self.stage.members  # the sampler indexes the stage's members
            loaded = load_batch([self.examples[members[i]] for i in indices], self.data)
            self.skipped += len(loaded.skipped)
            if loaded.examples:
                if self.data.augment.enabled:
                    loaded.audios = augment_batch(
                        loaded.audios,
                        self.data.augment,
                        seed=self._sampler_args["seed"],
                        rank=self._sampler_args["rank"],
                        batch=self.batches_done,
                        max_s=self.data.max_audio_s,
                    )
                self.batches_done += 1
                yield loaded


def plan_stages(examples: list[Example], curriculum: tuple[CurriculumStage, ...]) -> list[Stage]:
    """Indices of the examples each stage admits (its tasks, clips up to its length).

    Raises:
        DataError: a stage admits no example (the message names the stage).
    """
    if not curriculum:
        return [Stage(0, 0, None, list(range(len(examples))))]
    stages, first = [], 0
    for k, spec in enumerate(curriculum):
        limit = spec.max_audio_s or float("inf")
        members = [
            i for i, ex in enumerate(examples) if ex.task in spec.tasks and ex.duration_s <= limit
        ]
        if not members:
            raise DataError(
                f"train.curriculum.{k}: no training example has a task in {list(spec.tasks)}"
                + (f" and a clip of at most {spec.max_audio_s} s" if spec.max_audio_s else "")
            )
        stages.append(Stage(k, first, spec.steps, members))
        first += spec.steps or 0
    return stages


def build_stream(config: Config, examples: list[Example], model, *, rank: int, world_size: int):
    """This rank's :class:`TrainStream` as the config describes it (buckets, curriculum)."""
    t = config.train
    lengths = None
    if t.bucket_by == "tokens":
        lengths = sequence_lengths(
            examples,
            model.tokenizer,
            config.model.default_instruction,
            config.model.projector.stride,
            config.model.tool_prompt,
        )
    return TrainStream(
        examples,
        batch_size=t.batch_size,
        rank=rank,
        world_size=world_size,
        seed=t.seed,
        data=config.data,
        lengths=lengths,
        curriculum=t.curriculum,
        task_batches=t.task_batches,
        grad_accum=t.grad_accum,
    )


def prepare_ctc(model, config: Config, examples: list[Example]) -> None:
    """Give the model's CTC head (if any) its vocabulary: the training targets' tokens or all."""
    ctc = model.trainable.ctc
    if ctc is None:
        return
    vocab_size = model.llm.get_input_embeddings().weight.shape[0]
    ids = None
    if config.model.ctc.vocabulary == "targets":
        ids = target_vocabulary(examples, model.tokenizer)
    ctc.set_vocabulary(ids, vocab_size)


def sequence_lengths(
    examples: list[Example],
    tokenizer,
    default_instruction: str,
    stride: int,
    tool_prompt: str = "full",
):
    """Estimated LLM sequence length of every example: audio tokens (50 encoder frames per
    second pooled by ``stride``) + instruction tokens + target tokens."""
    texts = [instruction(ex, default_instruction, tool_prompt) for ex in examples]
    prompt = tokenizer(texts, add_special_tokens=False)["input_ids"]
    target = tokenizer([ex.target for ex in examples], add_special_tokens=False)["input_ids"]
    return [
        ex.duration_s * 50 / stride + len(p) + len(t) for ex, p, t in zip(examples, prompt, target)
    ]


def target_vocabulary(examples: list[Example], tokenizer, end_ids=()) -> list[int]:
    """Distinct LLM token ids of the training targets and transcripts (the default CTC
    vocabulary)."""
    ids: set[int] = set(end_ids)
    texts = [ex.target for ex in examples] + [
        ex.transcript for ex in examples if ex.task != "asr" and ex.transcript
    ]
    for row in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.update(row)
    return sorted(ids)


def instruction(ex: Example, default: str, tool_prompt: str = "full") -> str:
    """The example's instruction (its tool block in the model's ``tool_prompt`` form), or the
    model's default (ASR) one."""
    if not ex.instruction:
        return default
    if tool_prompt == "compact":
        return compact_instruction(ex.instruction, ex.tools)
    return ex.instruction


def decoding(ex: Example, tool_grammar: bool):
    """How ``ex`` is decoded: :func:`~steermoe.model.core.tool_decoding` of its tools, or
    plain greedy when ``tool_grammar`` (``eval.tool_grammar``) is off."""
    from steermoe.model.core import tool_decoding  # torch: not needed to read manifests

    return tool_decoding(ex.tools if tool_grammar else None)


def teacher_forced_batch(model, loaded: Loaded, default_instruction: str, device):
    """Collate a loaded batch with instructions and targets (training and validation)."""
    return model.collate(
        loaded.audios,
        [instruction(ex, default_instruction, model.tool_prompt) for ex in loaded.examples],
        [ex.target for ex in loaded.examples],
        ids=[ex.id for ex in loaded.examples],
        transcripts=[ex.transcript for ex in loaded.examples],
    ).to(device)
